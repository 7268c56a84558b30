"""Item 1: StartJob latency against posix_spawn, ``unshare`` and a shell doing the cgroup writes.

Four kinds of job, all ``/bin/true``: (a) no limits, no namespaces; (b) all limits;
(c) all limits and all namespaces; (d) that and every confinement option (time limits,
a read-only root with a tmpfs, no_new_privs with every capability dropped, the syscall
filter, memory.high, a cpuset, a cpu.weight and standard input). StartJob returns once
the command runs. The
baselines are launched from this (client) process: posix_spawn until it returns (the
command has been exec'ed), and util-linux ``unshare`` with the same namespaces, alone
and behind a shell script that makes a cgroup, writes the same limits and joins it,
each until it exits. Kinds and baselines take turns, so drift in a shared or
emulated machine hits all of them alike.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.client import ALL_NAMESPACES_OFF, channel
from bench.client import stub as stub_for
from bench.harness import Harness
from bench.processes import CGROUP_ROOT
from jobworker.v1 import jobworker_pb2 as pb

TRUE = "/bin/true"
CPU_CORES = 0.5
MEMORY = 256 << 20
PIDS = 64
IO_BPS = 100 << 20
UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc", "--mount", "--net", "--uts", "--ipc"]
_WARMUP = 2

# The same writes the product does for "all limits", done the plainest way.
_CGROUP_SCRIPT = """
g=$1; shift
mkdir "$g" || exit 1
echo "{cpu}" > "$g/cpu.max"
echo {memory} > "$g/memory.max"
echo 0 > "$g/memory.swap.max"
echo 1 > "$g/memory.oom.group"
echo {pids} > "$g/pids.max"
{io}
echo $$ > "$g/cgroup.procs"
exec "$@"
"""


def _confined(limits: pb.Limits) -> pb.StartJobRequest:
    """Kind (d): kind (c) with every confinement option a writer may use."""
    request = pb.StartJobRequest(
        command=TRUE,
        limits=limits,
        filesystem=pb.Filesystem(read_only=True, tmpfs=[pb.Tmpfs(path="/var/tmp")]),
        privileges=pb.Privileges(cap_drop=["ALL"], no_new_privs=True),
        stdin=b"x" * 4096,
    )
    request.limits.MergeFrom(pb.Limits(memory_high_bytes=MEMORY // 2, cpuset="0", cpu_weight=50))
    request.timeout.FromSeconds(3600)
    request.cpu_time.FromSeconds(3600)
    return request


def _limits(io_device: str | None) -> pb.Limits:
    limits = pb.Limits(cpu_cores=CPU_CORES, memory_bytes=MEMORY, pids=PIDS)
    if io_device:
        limits.io.append(pb.IoLimit(device=io_device, read_bps=IO_BPS, write_bps=IO_BPS))
    return limits


def _script(io_device: str | None) -> str:
    io = ""
    if io_device:
        rdev = os.stat(io_device).st_rdev
        io = f'echo "{os.major(rdev)}:{os.minor(rdev)} rbps={IO_BPS} wbps={IO_BPS}" > "$g/io.max"'
    cpu = f"{int(CPU_CORES * 100_000)} 100000"
    return _CGROUP_SCRIPT.format(cpu=cpu, memory=MEMORY, pids=PIDS, io=io)


def _spawn(argv: list[str]) -> tuple[float, int]:
    """posix_spawn: seconds until it returns (the child has exec'ed), and the pid."""
    began = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, {"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    return time.perf_counter() - began, pid


def _run(argv: list[str]) -> float:
    """posix_spawn and wait: seconds until the command has exited (successfully)."""
    began = time.perf_counter()
    _, pid = _spawn(argv)
    _, status = os.waitpid(pid, 0)
    elapsed = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"baseline failed ({status}): {' '.join(argv)}")
    return elapsed


class _CgroupBaseline:
    """A cgroup parent with the controllers on, where the shell script makes its groups."""

    def __init__(self, io_device: str | None) -> None:
        self.parent = CGROUP_ROOT / f"jobworker-bench-baseline-{os.getpid()}"
        self.script = _script(io_device)
        self._count = 0

    def __enter__(self) -> _CgroupBaseline:
        (CGROUP_ROOT / "cgroup.subtree_control").write_text("+cpu +memory +io +pids")
        self.parent.mkdir()
        (self.parent / "cgroup.subtree_control").write_text("+cpu +memory +io +pids")
        return self

    def __exit__(self, *exc: object) -> None:
        for group in self.parent.iterdir():
            if group.is_dir():
                group.rmdir()
        self.parent.rmdir()

    def run(self, command: list[str]) -> float:
        """Seconds for the script to make and join a group and run ``command`` to its end."""
        self._count += 1
        group = self.parent / f"b{self._count}"
        elapsed = _run(["sh", "-c", self.script, "sh", str(group), *command])
        _remove_when_empty(group)
        return elapsed


def _remove_when_empty(group: Path) -> None:
    for _ in range(1000):
        try:
            group.rmdir()
        except OSError:
            time.sleep(0.001)
        else:
            return
    raise RuntimeError(f"cgroup {group} stayed busy")


async def run(h: Harness) -> None:
    """Measure and record item 1."""
    io_device = h.settings.io_device
    limits = _limits(io_device)
    kinds = {
        "a": pb.StartJobRequest(command=TRUE, namespaces=ALL_NAMESPACES_OFF),
        "b": pb.StartJobRequest(command=TRUE, namespaces=ALL_NAMESPACES_OFF, limits=limits),
        "c": pb.StartJobRequest(command=TRUE, limits=limits),
        "d": _confined(limits),
    }
    samples: dict[str, list[float]] = {key: [] for key in [*kinds, "get"]}
    baselines: dict[str, list[float]] = {"spawn": [], "unshare": [], "sh": [], "sh_unshare": []}
    product = await h.product()
    server = product.server
    async with channel(server.address, h.tls_dir) as chan:
        stub = stub_for(chan)
        with _CgroupBaseline(io_device) as cgroups:
            for index in range(_WARMUP + h.settings.sizes.starts):
                elapsed: dict[str, float] = {}
                for key, request in kinds.items():
                    began = time.perf_counter()
                    job = await stub.StartJob(request)
                    elapsed[key] = time.perf_counter() - began
                began = time.perf_counter()
                await stub.GetJob(pb.GetJobRequest(id=job.id))
                elapsed["get"] = time.perf_counter() - began
                spawn, pid = _spawn([TRUE])
                os.waitpid(pid, 0)
                measured = {
                    "spawn": spawn,
                    "unshare": _run([*UNSHARE, TRUE]),
                    "sh": cgroups.run([TRUE]),
                    "sh_unshare": cgroups.run([*UNSHARE, TRUE]),
                }
                if index < _WARMUP:
                    continue
                for key, value in elapsed.items():
                    samples[key].append(value * 1000)
                for key, value in measured.items():
                    baselines[key].append(value * 1000)
        for key, request in kinds.items():
            async with h.profiled(f"start_{key}", server):
                if h.settings.profile == f"start_{key}":
                    for _ in range(h.settings.sizes.starts):
                        await stub.StartJob(request)
    r = h.report
    io_note = f", io on {io_device}" if io_device else " (no io limit: no --io-device)"
    r.add("start_a", "StartJob (a) no limits, no namespaces", "ms", samples["a"])
    r.add("start_b", f"StartJob (b) all limits{io_note}", "ms", samples["b"])
    r.add("start_c", "StartJob (c) all limits + all namespaces", "ms", samples["c"])
    r.add("start_d", "StartJob (d) (c) + every confinement option", "ms", samples["d"])
    r.add("get_job", "GetJob (mTLS unary round trip, for scale)", "ms", samples["get"])
    r.add("spawn", "baseline: posix_spawn /bin/true (until exec'ed)", "ms", baselines["spawn"])
    r.add(
        "unshare",
        "baseline: unshare all namespaces /bin/true (to exit)",
        "ms",
        baselines["unshare"],
    )
    r.add("sh_cgroup", "baseline: sh cgroup writes + /bin/true (to exit)", "ms", baselines["sh"])
    r.add(
        "sh_cgroup_unshare",
        "baseline: sh cgroup writes + unshare (to exit)",
        "ms",
        baselines["sh_unshare"],
    )
    r.compare("start_a_p50", "start (a) p50 / posix_spawn p50", "start_a", "spawn", target=3.0)
    r.compare("start_a_p99", "start (a) p99 / posix_spawn p99", "start_a", "spawn", use_p99=True)
    r.compare("start_b_p50", "start (b) p50 / sh cgroup writes p50", "start_b", "sh_cgroup")
    r.compare(
        "start_c_p50",
        "start (c) p50 / sh cgroup writes + unshare p50",
        "start_c",
        "sh_cgroup_unshare",
        target=1.0,
    )
    r.compare(
        "start_c_p99",
        "start (c) p99 / sh cgroup writes + unshare p99",
        "start_c",
        "sh_cgroup_unshare",
        use_p99=True,
    )
    r.compare("start_c_unshare", "start (c) p50 / unshare alone p50", "start_c", "unshare")
    r.compare(
        "start_d_c", "start (d) p50 / start (c) p50: the cost of confinement", "start_d", "start_c"
    )
    r.compare(
        "start_d_p50",
        "start (d) p50 / sh cgroup writes + unshare p50",
        "start_d",
        "sh_cgroup_unshare",
    )
