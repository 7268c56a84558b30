"""Identifying processes across a service restart without being fooled by PID reuse."""

from __future__ import annotations

import os


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    return int(raw[raw.rindex(b")") + 2 :].split()[19])


def open_pidfd(pid: int, ticks: int) -> int | None:
    """A pidfd for ``pid`` if it is still the process that started at ``ticks``.

    Checking after opening is race-free: the pidfd pins the process, so if the
    start time still matches, the descriptor refers to the one we recorded.
    """
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # gone, or not a valid PID at all
        return None
    if start_ticks(pid) != ticks:
        os.close(fd)
        return None
    return fd
