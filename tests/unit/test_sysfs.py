"""Which mounts below /sys a job's fresh sysfs carries over."""

from __future__ import annotations

from pathlib import Path

from jobworker.isolation.mountinfo import Mount
from jobworker.isolation.sysfs import mounts_to_carry


def at(point: str, fstype: str = "tmpfs") -> Mount:
    return Mount("/", Path(point), fstype, frozenset())


def test_the_outermost_mounts_below_sys_are_carried_each_once() -> None:
    mounts = [
        at("/", "ext4"),
        at("/sys", "sysfs"),
        at("/sys/kernel/security", "securityfs"),
        at("/sys/fs/cgroup"),  # a hybrid host: v1 hierarchies below a tmpfs
        at("/sys/fs/cgroup/unified", "cgroup2"),
        at("/sys/fs/cgroup/memory", "cgroup"),
        at("/sys/kernel/debug", "debugfs"),
        at("/sys/kernel/debug/tracing", "tracefs"),
        at("/sys/fs/cgroup"),  # mounted twice on the same point
        at("/system", "ext4"),  # a sibling whose name merely starts like /sys
        at("/proc", "proc"),
    ]
    carried = ["/sys/fs/cgroup", "/sys/kernel/debug", "/sys/kernel/security"]
    assert mounts_to_carry(mounts) == carried


def test_nothing_is_carried_when_nothing_is_mounted_below_sys() -> None:
    assert mounts_to_carry([at("/", "ext4"), at("/sys", "sysfs"), at("/sysroot", "ext4")]) == []
