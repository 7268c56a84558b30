"""Reading /proc/PID/mountinfo: where each filesystem is mounted, and of which type.

Both cgroup discovery (where is cgroup2?) and a job's fresh /sys (what is mounted
below it?) need this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo, reduced to what jobworker needs."""

    root: str
    point: Path
    fstype: str
    super_options: frozenset[str]


def read_mounts(mountinfo: Path) -> list[Mount]:
    """Parse mountinfo; see proc(5) for the format and its octal escapes."""
    mounts = []
    for line in mountinfo.read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        fstype, _source, options = [*right.split(), "", "", ""][:3]
        mounts.append(
            Mount(
                root=_unescape(fields[3]),
                point=Path(_unescape(fields[4])),
                fstype=fstype,
                super_options=frozenset(options.split(",")),
            )
        )
    return mounts


def mount_points(mountinfo: str) -> list[str]:
    """Only the mount points (field 5) of mountinfo's text, unescaped.

    For the launch path: it is several times cheaper than ``read_mounts``, which
    builds a Path and a set of options for every line.
    """
    return [_unescape(line.split(" ", 5)[4]) for line in mountinfo.splitlines()]


def _unescape(text: str) -> str:
    if "\\" not in text:  # nearly always: skip the regular expression
        return text
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match[1], 8)), text)
