"""Settings the real kernel refuses become our errors, and the half-made group is removed.

The unit tests (tests/unit/test_job_cgroup.py) can only make a write fail in a plain
directory, where every interface file is missing; here the kernel itself says no,
with the errno it really answers, in a group that has all its interface files.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from jobworker.isolation.cgroups import CgroupHost, JobCgroup
from jobworker.isolation.errors import HostUnsupported, InvalidDevice

pytestmark = pytest.mark.privileged


@pytest.fixture
def job(cgroup_host: CgroupHost) -> JobCgroup:
    """A job group that does not exist yet, under a ``jobs/`` group with every controller."""
    cgroup_host.prepare()
    return cgroup_host.job_group(f"refusal-{uuid.uuid4().hex[:8]}")


def majmin(device: str) -> str:
    rdev = Path(device).stat().st_rdev
    return f"{os.major(rdev)}:{os.minor(rdev)}"


def absent_disk() -> str:
    """A MAJ:MIN with no block driver behind it (60-63 are reserved for local use)."""
    text = Path("/proc/devices").read_text()
    registered = {
        int(line.split()[0])
        for line in text.partition("Block devices:")[2].splitlines()
        if line.strip()
    }
    return next(f"{major}:0" for major in range(60, 512) if major not in registered)


def test_io_limit_on_a_disk_that_does_not_exist(job: JobCgroup) -> None:
    disk = absent_disk()
    with pytest.raises(InvalidDevice, match=f"refused an IO limit on {disk}: No such device") as e:
        job.create([("memory.oom.group", "1"), ("io.max", f"{disk} wbps=1048576")])
    assert e.value.field == "io"
    assert not job.path.exists()


def test_io_limit_the_kernel_cannot_parse(job: JobCgroup, scratch_block_device: str) -> None:
    disk = majmin(scratch_block_device)
    with pytest.raises(InvalidDevice, match=f"refused an IO limit on {disk}: Invalid argument"):
        job.create([("io.max", f"{disk} wbps=fast")])
    assert not job.path.exists()


def test_cpu_quota_below_the_kernel_minimum(job: JobCgroup) -> None:
    # The kernel's smallest quota is 1 ms per period; the product's own minimum
    # (cgroup_settings) is higher, so only a caller bypassing it reaches this.
    with pytest.raises(HostUnsupported, match=r"cannot set cpu\.max in .*: Invalid argument"):
        job.create([("memory.oom.group", "1"), ("cpu.max", "100 100000")])
    assert not job.path.exists()


def test_a_refusal_after_applied_settings_removes_the_group(job: JobCgroup) -> None:
    # memory.swap.max is written (it exists here), then pids.max is refused: the
    # group, limits and all, must be gone.
    with pytest.raises(HostUnsupported, match=r"cannot set pids\.max in .*: Invalid argument"):
        job.create([("memory.swap.max", "0"), ("pids.max", "-3")])
    assert not job.path.exists()
