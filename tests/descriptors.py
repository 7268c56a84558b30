"""What this test process has open, read from /proc/self/fd (shared by unit and VM tests)."""

from __future__ import annotations

import os


def descriptor_targets() -> list[str]:
    """The target of every open descriptor: a path, "socket:[123]", "anon_inode:[pidfd]"..."""
    targets = []
    for name in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{name}"))
        except FileNotFoundError:
            continue  # the descriptor listdir itself used
    return targets
