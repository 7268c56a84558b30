"""Test-wide set-up: gating of privileged tests and a scratch block device.

Tests marked ``privileged`` need root and a pure cgroup v2 hierarchy at
/sys/fs/cgroup offering the cpu, memory, io and pids controllers; tests marked
``systemd`` need that too, under a running systemd (PID 1), which they drive
with systemctl. Where that is missing they are skipped, except when
JOBWORKER_PRIVILEGED=require (as scripts/test sets it): then they fail, so CI can
never pass by skipping them.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

CGROUP_ROOT = Path("/sys/fs/cgroup")
REQUIRED_CONTROLLERS = ("cpu", "memory", "io", "pids")


def _require_mode() -> bool:
    return os.environ.get("JOBWORKER_PRIVILEGED") == "require"


def _unavailable(reason: str) -> NoReturn:
    """Fail under JOBWORKER_PRIVILEGED=require, otherwise skip."""
    if _require_mode():
        pytest.fail(f"JOBWORKER_PRIVILEGED=require but {reason}", pytrace=False)
    pytest.skip(reason)


def _mount_fstype(mountpoint: Path) -> str | None:
    """Filesystem type mounted at exactly ``mountpoint`` (the topmost mount)."""
    fstype = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        if fields[4] == str(mountpoint):
            fstype = fields[sep + 1]
    return fstype


@functools.cache
def privileged_unavailable_reason() -> str | None:
    """Why privileged tests cannot run here, or None if they can."""
    problems = []
    if os.geteuid() != 0:
        problems.append(f"not running as root (euid {os.geteuid()})")
    fstype = _mount_fstype(CGROUP_ROOT)
    if fstype != "cgroup2":
        problems.append(
            f"{CGROUP_ROOT} is {fstype or 'not a mount point'}, not cgroup2 "
            "(a cgroup v1 or hybrid host: use scripts/test, which runs these tests in a VM)"
        )
    else:
        available = (CGROUP_ROOT / "cgroup.controllers").read_text().split()
        missing = [c for c in REQUIRED_CONTROLLERS if c not in available]
        if missing:
            problems.append(f"cgroup2 controllers missing at {CGROUP_ROOT}: {' '.join(missing)}")
    return "; ".join(problems) or None


def systemd_unavailable_reason() -> str | None:
    """Why tests under systemd cannot run here, or None if they can."""
    # sd_booted(3): systemd made this directory, as PID 1 and nothing else.
    if not Path("/run/systemd/system").is_dir():
        return "systemd is not the init here (scripts/test runs these tests in a VM that boots it)"
    return privileged_unavailable_reason()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Runs before the test's fixtures, so the reason given is the real one.
    if item.get_closest_marker("systemd") is not None:
        reason = systemd_unavailable_reason()
        if reason is not None:
            _unavailable(f"test under systemd cannot run: {reason}")
    if item.get_closest_marker("privileged") is None:
        return
    reason = privileged_unavailable_reason()
    if reason is not None:
        _unavailable(f"privileged test cannot run: {reason}")


def _check_whole_disk(path: str) -> None:
    st = Path(path).stat()
    sysfs = Path(f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
    if (sysfs / "partition").exists():
        _unavailable(f"{path} is a partition, not a whole disk")


def _attach_loop(image: Path) -> tuple[str | None, str]:
    """Attach ``image`` to a free loop device: (device, "") or (None, why not)."""
    errors = []
    # Direct I/O keeps the loop device's writes out of the backing file's page
    # cache, so I/O limits act as on a real disk. Some filesystems (overlayfs,
    # older tmpfs) refuse it: then a plain loop device still does.
    for options in (["--direct-io=on"], []):
        try:
            result = subprocess.run(
                ["losetup", "--find", "--show", *options, str(image)],
                capture_output=True,
                text=True,
                check=False,
            )
        except OSError as e:
            return None, f"losetup cannot run: {e}"
        if result.returncode == 0:
            return result.stdout.strip(), ""
        errors.append(result.stderr.strip())
    return None, "losetup failed: " + "; ".join(errors)


@pytest.fixture(scope="session")
def scratch_block_device() -> Iterator[str]:
    """Path of a whole-disk block device whose contents tests may destroy.

    JOBWORKER_TEST_BLOCK_DEVICE if set (the VM's /dev/vda), else a loop device
    over a 256M sparse file, detached and removed at the end of the session.
    """
    given = os.environ.get("JOBWORKER_TEST_BLOCK_DEVICE")
    if given:
        if not Path(given).is_block_device():
            _unavailable(f"JOBWORKER_TEST_BLOCK_DEVICE={given} is not a block device")
        _check_whole_disk(given)
        yield given
        return

    # /var/tmp rather than /tmp: it is usually on a real disk, not tmpfs.
    folder = Path(tempfile.mkdtemp(prefix="jobworker-scratch-disk.", dir="/var/tmp"))
    try:
        image = folder / "disk.img"
        with image.open("wb") as f:
            f.truncate(256 * 1024 * 1024)
        device, why_not = _attach_loop(image)
        if device is None:
            _unavailable(f"no JOBWORKER_TEST_BLOCK_DEVICE, and {why_not}")
        try:
            yield device
        finally:
            subprocess.run(["losetup", "--detach", device], check=False)
    finally:
        shutil.rmtree(folder)
