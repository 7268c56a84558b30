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

from jobworker.isolation import _syscalls as syscalls
from jobworker.isolation._mountinfo import mount_points

SYS = "/sys"


def mounts_to_carry(points: list[str]) -> list[str]:
    """The outermost mount points below /sys; each carries what is mounted below it."""
    below = sorted({p for p in points if p.startswith(SYS + "/")})
    return [p for p in below if not any(p.startswith(q + "/") for q in below)]


def remount_for_network_namespace() -> None:
    """Replace /sys with a sysfs of the caller's network namespace, keeping its submounts.

    Only for a process in a private mount namespace: the old /sys is detached.
    """
    with open("/proc/self/mountinfo") as mountinfo:
        points = mounts_to_carry(mount_points(mountinfo.read()))
    trees: list[int] = []
    try:
        for point in points:
            trees.append(syscalls.clone_mount_tree(point))
        syscalls.umount(SYS, syscalls.MNT_DETACH)
        flags = syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC
        syscalls.mount("sysfs", SYS, "sysfs", flags)
        for point, tree in zip(points, trees, strict=True):
            syscalls.move_mount(tree, point)
    finally:
        for tree in trees:
            os.close(tree)
