"""Narrow the capabilities a job's command can ever hold (capabilities(7)).

Called by the job's first process while it is still root with every capability,
before it changes its uid: dropping from the bounding set needs CAP_SETPCAP. What
is left after exec then follows from the kernel's rules:

- the bounding set caps what exec can grant, even to root or to a setuid-root or
  file-capability program, so it holds only what the job keeps (nothing for a job
  that does not run as root);
- the inheritable and ambient sets are emptied, so nothing passes through exec
  outside the bounding set (a root exec adds the inheritable set as it is);
- root's exec makes its permitted and effective sets the bounding set; any other
  uid's setresuid has already emptied them.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

LAST_CAPABILITY = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
"""The highest capability this kernel knows; read once, in the fork server."""

_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]
# Looked up here, in the fork server: a lookup in the job's first process is on the launch path.
_libc.capget.argtypes = _libc.capset.argtypes = [ctypes.c_void_p, ctypes.c_void_p]


class _Header(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _Data(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def confine(kept: frozenset[int]) -> None:
    """Leave only ``kept`` in the bounding set, and nothing in the inheritable and ambient sets."""
    for capability in range(LAST_CAPABILITY + 1):
        if capability not in kept:
            _prctl(PR_CAPBSET_DROP, capability, "prctl(PR_CAPBSET_DROP)")
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    for half in data:
        half.inheritable = 0
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def _prctl(option: int, argument: int, what: str) -> None:
    _check(_libc.prctl(option, argument, 0, 0, 0), what)


def _check(result: int, what: str) -> None:
    if result < 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")
