"""Each namespace isolates what it should, and only when asked for."""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from jobworker.isolation._mountinfo import read_mounts
from jobworker.isolation.limits import Limits
from jobworker.isolation.namespaces import Namespaces
from jobworker.isolation.privileges import Privileges
from tests.privileged.helpers import Jobs, output_contains, read_partial, run

pytestmark = pytest.mark.privileged

KINDS = {"pid": "pid", "mount": "mnt", "net": "net", "uts": "uts", "ipc": "ipc"}


def host_namespaces() -> dict[str, str]:
    return {name: os.readlink(f"/proc/self/ns/{link}") for name, link in KINDS.items()}


def job_namespaces(jobs: Jobs, namespaces: Namespaces) -> dict[str, str]:
    script = " ".join(f"readlink /proc/self/ns/{link};" for link in KINDS.values())
    finished = run(jobs.complete("sh", "-c", script, namespaces=namespaces))
    assert finished.outcome.exit_code == 0, finished.stderr
    return dict(zip(KINDS, finished.stdout.decode().split(), strict=True))


def test_every_namespace_is_new_by_default(jobs: Jobs) -> None:
    host, job = host_namespaces(), job_namespaces(jobs, Namespaces())
    assert all(job[name] != host[name] for name in KINDS), (job, host)


def test_each_namespace_can_be_switched_off(jobs: Jobs) -> None:
    host = host_namespaces()
    assert job_namespaces(jobs, Namespaces.none()) == host
    job = job_namespaces(jobs, Namespaces(net=False, uts=False))
    assert job["net"] == host["net"]
    assert job["uts"] == host["uts"]
    assert job["pid"] != host["pid"]
    assert job["ipc"] != host["ipc"]


def test_pid_namespace_shows_only_the_jobs_processes(jobs: Jobs) -> None:
    listing = "import os; print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))"
    finished = run(jobs.complete(sys.executable, "-c", listing))
    # PID 1 is the job's init, PID 2 the command itself; nothing of the host is visible.
    assert finished.stdout == b"[1, 2]\n"


def test_orphans_are_reaped_in_a_pid_namespace(jobs: Jobs) -> None:
    orphans = "for i in 1 2 3 4 5 6 7 8; do (sleep 0.2 &); done; sleep 3; cat /proc/[0-9]*/stat"
    finished = run(jobs.complete("sh", "-c", orphans))
    assert finished.outcome.exit_code == 0, finished.stderr
    states = [line.rsplit(")", 1)[1].split()[0] for line in finished.stdout.decode().splitlines()]
    assert states, finished.stdout
    assert "Z" not in states, finished.stdout


def test_mounts_made_inside_do_not_reach_the_host(jobs: Jobs, tmp_path: Path) -> None:
    target = tmp_path / "mountpoint"
    target.mkdir()
    tag = f"jobworker-{uuid.uuid4().hex}"  # a source name no other mount can have
    script = f"mount -t tmpfs {tag} {target} && touch {target}/inside && echo ready; sleep 600"

    async def scenario() -> bytes:
        job = await jobs.start("sh", "-c", script, privileges=Privileges(cap_add=("SYS_ADMIN",)))
        await output_contains(job, b"ready")
        assert not (target / "inside").exists()
        assert tag not in Path("/proc/self/mountinfo").read_text()
        await job.stop(1.0)
        return read_partial(job.output_log)

    assert b"ready" in run(scenario())


def test_network_namespace_has_only_loopback_and_it_is_up(jobs: Jobs) -> None:
    probe = (
        "import socket\n"
        "names = [l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]]\n"
        "print(','.join(names))\n"
        "server = socket.create_server(('127.0.0.1', 0))\n"
        "client = socket.create_connection(server.getsockname(), timeout=5)\n"
        "print('connected')\n"
    )
    finished = run(jobs.complete(sys.executable, "-c", probe))
    assert finished.outcome.exit_code == 0, finished.stderr
    assert finished.stdout == b"lo\nconnected\n"


@pytest.fixture
def host_interface() -> Iterator[str]:
    """A dummy interface on the host, so the host has more than the loopback a job has."""
    name = f"jw{uuid.uuid4().hex[:8]}"
    with IPRoute() as ipr:
        ipr.link("add", ifname=name, kind="dummy")
        try:
            yield name
        finally:
            ipr.link("del", ifname=name)


def test_sys_shows_the_network_namespace_of_the_job(jobs: Jobs, host_interface: str) -> None:
    assert host_interface in os.listdir("/sys/class/net")
    finished = run(jobs.complete("ls", "/sys/class/net", "/sys/devices/virtual/net"))
    assert finished.outcome.exit_code == 0, finished.stderr
    assert finished.stdout == b"/sys/class/net:\nlo\n\n/sys/devices/virtual/net:\nlo\n"


def test_sys_shows_the_hosts_network_when_the_job_shares_it(
    jobs: Jobs, host_interface: str
) -> None:
    finished = run(jobs.complete("ls", "/sys/class/net", namespaces=Namespaces(net=False)))
    assert finished.outcome.exit_code == 0, finished.stderr
    assert host_interface in finished.stdout.decode().split()
    assert finished.stdout.decode().split() == sorted(os.listdir("/sys/class/net"))


def test_sys_keeps_what_is_mounted_under_it_so_a_job_can_read_its_own_limits(
    jobs: Jobs,
) -> None:
    host_mounts = read_mounts(Path("/proc/self/mountinfo"))
    under_sys = sorted(str(m.point) for m in host_mounts if str(m.point).startswith("/sys/"))
    assert "/sys/fs/cgroup" in under_sys  # what the VM (and any systemd host) has
    cgroup2 = next(m.point for m in host_mounts if m.fstype == "cgroup2")
    script = (
        f"cat {cgroup2}$(cut -d: -f3 /proc/self/cgroup)/memory.max && "
        "awk '$5 ~ \"^/sys/\" {print $5}' /proc/self/mountinfo | sort"
    )
    finished = run(jobs.complete("sh", "-c", script, limits=Limits(memory_bytes=64 << 20)))
    assert finished.outcome.exit_code == 0, finished.stderr
    memory_max, *job_under_sys = finished.stdout.decode().split()
    assert memory_max == str(64 << 20)
    assert job_under_sys == under_sys


def test_uts_namespace_names_the_host_after_the_job(jobs: Jobs) -> None:
    spec = jobs.spec("hostname")

    async def scenario() -> bytes:
        return (await jobs.finish(await jobs.launcher.launch(spec.validate()))).stdout

    assert run(scenario()).decode().strip() == spec.job_id
    assert socket.gethostname() != spec.job_id
