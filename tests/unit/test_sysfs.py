"""Which mounts below /sys a job's fresh sysfs carries over."""

from __future__ import annotations

from jobworker.isolation._sysfs import mounts_to_carry


def test_the_outermost_mounts_below_sys_are_carried_each_once() -> None:
    mounts = [
        "/",
        "/sys",
        "/sys/kernel/security",
        "/sys/fs/cgroup",  # a hybrid host: v1 hierarchies below a tmpfs
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/memory",
        "/sys/kernel/debug",
        "/sys/kernel/debug/tracing",
        "/sys/fs/cgroup",  # mounted twice on the same point
        "/sys/fs/cgroupfs",  # not below /sys/fs/cgroup, though its name starts the same
        "/system",  # a sibling whose name merely starts like /sys
        "/proc",
    ]
    carried = ["/sys/fs/cgroup", "/sys/fs/cgroupfs", "/sys/kernel/debug", "/sys/kernel/security"]
    assert mounts_to_carry(mounts) == carried


def test_nothing_is_carried_when_nothing_is_mounted_below_sys() -> None:
    assert mounts_to_carry(["/", "/sys", "/sysroot"]) == []
