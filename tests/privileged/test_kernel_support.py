"""The kernel offers and enforces the cgroup v2 interface the isolation layer relies on."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.privileged

CGROUP_ROOT = Path("/sys/fs/cgroup")

INTERFACE_FILES = (
    "cpu.max",
    "memory.max",
    "memory.swap.max",
    "memory.peak",
    "memory.events",
    "memory.oom.group",
    "io.max",
    "pids.max",
    "pids.peak",
    "cgroup.kill",
)


def _keyed(path: Path) -> dict[str, int]:
    """Parse a flat-keyed cgroup file such as memory.events."""
    return {k: int(v) for k, v in (line.split() for line in path.read_text().splitlines())}


def _run_in(cgroup: Path, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run argv with the process moved into ``cgroup`` before it execs."""
    script = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
    return subprocess.run(
        ["sh", "-c", script, str(cgroup), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _remove(cgroup: Path) -> None:
    if not cgroup.exists():
        return
    (cgroup / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + 30
    while _keyed(cgroup / "cgroup.events")["populated"] and time.monotonic() < deadline:
        time.sleep(0.05)
    cgroup.rmdir()


@pytest.fixture
def cgroup() -> Iterator[Path]:
    """A fresh child of the cgroup2 root with cpu, memory, io and pids enabled."""
    (CGROUP_ROOT / "cgroup.subtree_control").write_text("+cpu +memory +io +pids")
    path = CGROUP_ROOT / f"jobworker-test-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    try:
        yield path
    finally:
        _remove(path)


def test_child_cgroup_has_the_interface_files(cgroup: Path) -> None:
    missing = [name for name in INTERFACE_FILES if not (cgroup / name).exists()]
    assert missing == []


def test_limits_are_accepted(cgroup: Path, scratch_block_device: str) -> None:
    (cgroup / "cpu.max").write_text("50000 100000")
    assert (cgroup / "cpu.max").read_text().split() == ["50000", "100000"]

    rdev = Path(scratch_block_device).stat().st_rdev
    majmin = f"{os.major(rdev)}:{os.minor(rdev)}"
    (cgroup / "io.max").write_text(f"{majmin} wbps=1048576")
    lines = [line.split() for line in (cgroup / "io.max").read_text().splitlines()]
    assert [majmin, "rbps=max", "wbps=1048576"] in [line[:3] for line in lines]


def test_pids_max_stops_fork(cgroup: Path) -> None:
    (cgroup / "pids.max").write_text("1")
    # The shell itself is the one allowed task, so starting `true` must fail.
    result = _run_in(cgroup, "sh", "-c", "if true | true; then echo forked; fi")
    assert "forked" not in result.stdout
    assert _keyed(cgroup / "pids.events")["max"] >= 1


def test_memory_max_oom_kills(cgroup: Path) -> None:
    (cgroup / "memory.max").write_text(str(32 * 1024 * 1024))
    (cgroup / "memory.swap.max").write_text("0")
    # tail must hold the whole newline-free 128M "line" in memory.
    result = _run_in(cgroup, "sh", "-c", "head -c 128M /dev/zero | tail -n 1 > /dev/null")
    assert result.returncode != 0
    events = _keyed(cgroup / "memory.events")
    assert events["oom_kill"] >= 1
    assert int((cgroup / "memory.peak").read_text()) <= 32 * 1024 * 1024


def test_cgroup_kill_ends_every_process(cgroup: Path) -> None:
    # The shell joins the cgroup, then starts two children: three tasks in all.
    script = 'echo $$ > "$0/cgroup.procs" || exit 1; sleep 600 & sleep 600'
    proc = subprocess.Popen(["sh", "-c", script, str(cgroup)])
    try:
        deadline = time.monotonic() + 60
        while len((cgroup / "cgroup.procs").read_text().split()) < 3:
            assert time.monotonic() < deadline, "processes never joined the cgroup"
            time.sleep(0.05)
        (cgroup / "cgroup.kill").write_text("1")
        assert proc.wait(timeout=60) == -signal.SIGKILL
        while _keyed(cgroup / "cgroup.events")["populated"]:
            assert time.monotonic() < deadline, "cgroup.kill left processes behind"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()


def test_scratch_block_device_is_a_disk(scratch_block_device: str) -> None:
    path = Path(scratch_block_device)
    assert path.is_block_device()
    rdev = path.stat().st_rdev
    sysfs = Path(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}")
    assert sysfs.exists()
    assert not (sysfs / "partition").exists()
    assert int((sysfs / "size").read_text()) > 0
