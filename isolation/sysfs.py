"""A /sys that shows the job's own network namespace.

sysfs lists the network interfaces of the namespace it was mounted from, so a
job in a new network namespace would still find the host's interfaces under
/sys/class/net (and tools that read it, such as ``ip -d`` or udev helpers,
would be confused). Like ``ip netns exec`` and container runtimes, a job with
both a network and a mount namespace gets a fresh sysfs mounted from inside its
network namespace. Unlike ``ip netns exec``, which hides them, whatever the
host mounts below /sys (the cgroup filesystem above all, where a job reads its
own limits) is carried over to the new /sys.
"""

from __future__ import annotations

import os
from pathlib import Path

from jobworker.isolation import syscalls
from jobworker.isolation.mountinfo import Mount, read_mounts

SYS = Path("/sys")


def mounts_to_carry(mounts: list[Mount]) -> list[str]:
    """The outermost mount points below /sys; each carries what is mounted below it."""
    below = sorted({m.point for m in mounts if SYS in m.point.parents})
    outermost = [p for p in below if not any(q in p.parents for q in below)]
    return [str(p) for p in outermost]


def remount_for_network_namespace() -> None:
    """Replace /sys with a sysfs of the caller's network namespace, keeping its submounts.

    Only for a process in a private mount namespace: the old /sys is detached.
    """
    points = mounts_to_carry(read_mounts(Path("/proc/self/mountinfo")))
    trees: list[int] = []
    try:
        for point in points:
            trees.append(syscalls.clone_mount_tree(point))
        syscalls.umount(str(SYS), syscalls.MNT_DETACH)
        flags = syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC
        syscalls.mount("sysfs", str(SYS), "sysfs", flags)
        for point, tree in zip(points, trees, strict=True):
            syscalls.move_mount(tree, point)
    finally:
        for tree in trees:
            os.close(tree)
