"""What the benchmark measures with: sizes, repeats, and where it keeps its files.

Two presets: ``full`` (the sizes the targets are set for, on a real cgroup v2 host) and
``vm`` (the same counts with fewer bytes over gRPC, so that the whole run finishes in
about 20 minutes in the software-emulated test VM). Every size can be set on its own
with a flag; the table and the JSON file always say which sizes were used. Ratios,
not absolute figures, are what compare across machines.

The VM's fan-out is 8 MiB per follower, 3 repeats. With much less each follower got
only a message or two (the job's shim writes records of up to 1 MiB), so the figure
weighed the cost of a call and of a job's start and end more than that of streaming.
At 8 MiB a live run of 16 followers streams for about 7 s and one of 64 for about
25 s, and the fan-out section takes about 5 minutes (on a 2-core host with nothing
else running; the VM is several times slower when the host is busy). Five repeats of
the single stream: its ratio to the raw stream moved by 0.15 between runs of three.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True)
class Sizes:
    """How much of everything; see ``PRESETS``."""

    starts: int
    """StartJob calls per kind of job, and baseline launches per baseline."""
    throughput_bytes: int
    """Output of the job that nobody reads (item 2a)."""
    throughput_repeats: int
    stream_bytes: int
    """Output of the job one follower reads over gRPC (item 2b)."""
    fanout_bytes: int
    """Output of the job that many followers read at once."""
    fanout_followers: tuple[int, ...]
    fanout_repeats: int
    scale_jobs: int
    """Sleeping jobs running at once in the scale item."""
    scale_starts: int
    """StartJob calls timed at idle and again at load."""
    scale_namespaces: tuple[str, ...]
    """Namespaces switched off for the scale item's sleeping jobs."""
    flat_bytes: int
    """Output of the job in the memory-flatness item."""
    flat_followers: int


PRESETS = {
    "full": Sizes(
        starts=300,
        throughput_bytes=GIB,
        throughput_repeats=5,
        stream_bytes=GIB,
        fanout_bytes=GIB,
        fanout_followers=(16, 64),
        fanout_repeats=3,
        scale_jobs=1000,
        scale_starts=100,
        scale_namespaces=(),
        flat_bytes=5 * GIB,
        flat_followers=2,
    ),
    "vm": Sizes(
        # Measured in a TCG VM on a shared 2-core host: StartJob ~0.1 s, one mTLS stream
        # ~15-20 MB/s. The full counts (300 starts, 1,000 jobs) fit; bytes streamed
        # over gRPC are cut so that the whole run takes about 20 minutes.
        starts=300,
        # Writing output costs the same wherever it goes: the full 1 GiB (about 10 s a run).
        throughput_bytes=GIB,
        throughput_repeats=5,
        stream_bytes=64 * MIB,
        fanout_bytes=8 * MIB,
        fanout_followers=(16, 64),
        fanout_repeats=3,
        scale_jobs=1000,
        scale_starts=20,
        # As in the privileged scale test: the service's load is the same whatever the
        # namespaces, and without pid and net each job is two processes fewer to emulate.
        scale_namespaces=("pid", "net"),
        flat_bytes=GIB,
        flat_followers=2,
    ),
}

SECTIONS = ("latency", "throughput", "fanout", "scale", "flat")


@dataclass(frozen=True)
class Settings:
    """Everything a run needs: sizes, sections to run, and paths."""

    preset: str
    sizes: Sizes
    sections: tuple[str, ...]
    work_dir: Path
    json_path: Path
    io_device: str | None
    profile: str | None
    profile_dir: Path


def _size(text: str) -> int:
    """Bytes from ``123``, ``64K``, ``128M`` or ``5G`` (powers of 1024)."""
    units = {"K": 1 << 10, "M": MIB, "G": GIB}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _counts(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)


def _names(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split(",") if part)


def parse(argv: list[str] | None = None) -> Settings:
    """Settings from the command line; ``--preset`` chooses the defaults for every size."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="jobworker benchmarks against same-run baselines (see bench/__init__.py)",
    )
    in_vm = os.environ.get("JOBWORKER_BENCH_IN_VM") == "1"
    parser.add_argument("--preset", choices=sorted(PRESETS), default="vm" if in_vm else "full")
    parser.add_argument(
        "--sections", type=_names, default=SECTIONS, help=f"from {','.join(SECTIONS)}"
    )
    parser.add_argument("--starts", type=int)
    parser.add_argument("--throughput-bytes", type=_size)
    parser.add_argument("--throughput-repeats", type=int)
    parser.add_argument("--stream-bytes", type=_size)
    parser.add_argument("--fanout-bytes", type=_size)
    parser.add_argument("--fanout-followers", type=_counts, help="e.g. 16,64")
    parser.add_argument("--fanout-repeats", type=int)
    parser.add_argument("--scale-jobs", type=int)
    parser.add_argument("--scale-starts", type=int)
    parser.add_argument(
        "--scale-namespaces", type=_names, help="namespaces switched off, e.g. pid,net"
    )
    parser.add_argument("--flat-bytes", type=_size)
    parser.add_argument("--flat-followers", type=int)
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path(os.environ.get("JOBWORKER_BENCH_WORK_DIR", "/var/tmp/jobworker-bench")),
        help="state directory, certificates and test files (emptied first)",
    )
    parser.add_argument("--json", type=Path, default=REPO / "bench-results" / "latest.json")
    parser.add_argument(
        "--io-device",
        default=os.environ.get("JOBWORKER_BENCH_IO_DEVICE")
        or os.environ.get("JOBWORKER_TEST_BLOCK_DEVICE"),
        help="block device for the io limit of 'all limits' (default: none, io not limited)",
    )
    parser.add_argument(
        "--profile",
        metavar="ITEM",
        help="py-spy the server during ITEM: start_a|b|c, stream_1, stream_raw, fanout_16, "
        "fanout_64, scale_ramp, scale_start, scale_stop",
    )
    parser.add_argument("--profile-dir", type=Path, default=REPO / "bench-results")
    args = parser.parse_args(argv)
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; known: {','.join(SECTIONS)}")
    overrides = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(Sizes)
        if getattr(args, field.name) is not None
    }
    return Settings(
        preset=args.preset,
        sizes=dataclasses.replace(PRESETS[args.preset], **overrides),
        sections=tuple(args.sections),
        work_dir=args.work_dir,
        json_path=args.json,
        io_device=args.io_device,
        profile=args.profile,
        profile_dir=args.profile_dir,
    )


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    meminfo = Path("/proc/meminfo").read_text().split()
    return {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "memory_mib": int(meminfo[meminfo.index("MemTotal:") + 1]) // 1024,
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "in_vm": os.environ.get("JOBWORKER_BENCH_IN_VM") == "1",
        "vm_host": os.environ.get("JOBWORKER_BENCH_HOST"),
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()
