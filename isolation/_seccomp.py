"""The default syscall filter: the calls a job may not make, and loading it before exec.

Modelled on Docker's default profile (moby/profiles, seccomp/default.json), written
as a deny-list: every call not in ``DENIED`` is allowed. A denied call fails with
EPERM, as if the job lacked the privilege, so programs fail gracefully instead of
being killed. As in Docker's profile, some calls are denied only to a job that lacks
the capability they are about: a root job an admin gave CAP_SYS_ADMIN may mount and
unshare, one given CAP_SYS_PTRACE may trace.

A syscall of another architecture (i386's ``int 0x80``, x32's numbers on x86_64)
kills the process: that is how it would escape the table, which names native calls
only, and answering EPERM to every one of a foreign program's calls, its exit
included, would leave it spinning rather than failing.

The filter is compiled with libseccomp (through ``pyseccomp``, a ctypes binding)
into classic BPF, once per kind of job and cached: the fork server compiles the
usual kinds at start (``warm``), so the shims it forks have them ready, and the
job's first process only hands the bytes to the kernel.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
from dataclasses import dataclass

from jobworker.isolation.privileges import CAPABILITIES, DEFAULT_CAPABILITIES


@dataclass(frozen=True)
class Denied:
    """Calls the filter refuses, unless the job holds ``unless_capability``."""

    syscalls: tuple[str, ...]
    unless_capability: str | None
    why: str


DENIED = (
    Denied(("kexec_load", "kexec_file_load", "reboot"), "SYS_BOOT", "replace or stop the kernel"),
    Denied(("init_module", "finit_module", "delete_module"), "SYS_MODULE", "load kernel modules"),
    Denied(("bpf",), "SYS_ADMIN", "load BPF programs into the kernel"),
    Denied(("perf_event_open",), "SYS_ADMIN", "observe the host's kernel and processes"),
    Denied(("add_key", "request_key", "keyctl"), None, "the kernel keyring is not namespaced"),
    Denied(
        (
            "mount",
            "umount2",
            "pivot_root",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "open_tree",
            "move_mount",
            "mount_setattr",
        ),
        "SYS_ADMIN",
        "change the filesystem tree",
    ),
    Denied(
        ("unshare", "setns"),
        "SYS_ADMIN",
        "make or join namespaces (a user namespace would give back every capability)",
    ),
    Denied(("swapon", "swapoff"), "SYS_ADMIN", "change the host's swap"),
    Denied(("quotactl", "quotactl_fd"), "SYS_ADMIN", "change disk quotas"),
    Denied(("lookup_dcookie", "fanotify_init"), "SYS_ADMIN", "watch the host's files"),
    Denied(("syslog",), "SYSLOG", "read or clear the kernel log"),
    Denied(("acct",), "SYS_PACCT", "switch process accounting"),
    Denied(
        ("settimeofday", "clock_settime", "clock_adjtime", "adjtimex"), "SYS_TIME", "set the clock"
    ),
    Denied(("iopl", "ioperm"), "SYS_RAWIO", "reach hardware ports"),
    Denied(("open_by_handle_at",), "DAC_READ_SEARCH", "open any file, bypassing mount points"),
    Denied(("userfaultfd",), None, "a tool for exploiting kernel races"),
    Denied(("vhangup",), "SYS_TTY_CONFIG", "hang up the terminal"),
    Denied(
        ("mbind", "set_mempolicy", "migrate_pages", "move_pages"),
        "SYS_NICE",
        "move memory between NUMA nodes",
    ),
    Denied(
        ("nfsservctl", "uselib", "_sysctl", "sysfs", "ustat"),
        None,
        "obsolete calls",
    ),
)

REACHING_OTHER_PROCESSES = ("ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd")
"""Denied to a job without a PID namespace of its own (and without CAP_SYS_PTRACE):
it could otherwise reach processes of the same uid outside the job, another job's
among them. In its own PID namespace it sees only its own, so strace and gdb work."""

NAMESPACE_CLONE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)
"""clone(2) with any of these is ``unshare`` by another name, so it is denied alike.
clone3(2) takes its flags in memory a filter cannot read: it gets ENOSYS instead,
on which glibc falls back to clone (Docker does the same)."""

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_void_p,
    ctypes.c_ulong,
    ctypes.c_ulong,
]


@functools.cache
def program(capabilities: frozenset[int], pid_namespace: bool) -> bytes:
    """The default filter as classic BPF, for a job with these capabilities."""
    import pyseccomp  # noqa: PLC0415 - loads libseccomp: done in the fork server only

    held = {name for name, number in CAPABILITIES.items() if number in capabilities}
    deny = pyseccomp.ERRNO(errno.EPERM)
    rules = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    rules.set_attr(pyseccomp.Attr.ACT_BADARCH, pyseccomp.KILL_PROCESS)
    for denied in DENIED:
        if denied.unless_capability not in held:
            for name in denied.syscalls:
                rules.add_rule(deny, name)
    if "SYS_ADMIN" not in held:
        for flag in NAMESPACE_CLONE_FLAGS:
            rules.add_rule(deny, "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, flag, flag))
        rules.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
    if not pid_namespace and "SYS_PTRACE" not in held:
        for name in REACHING_OTHER_PROCESSES:
            rules.add_rule(deny, name)
    compiled = os.memfd_create("jobworker-seccomp")
    try:
        with os.fdopen(compiled, "w+b", closefd=False) as file:
            rules.export_bpf(file)
            file.seek(0)
            return file.read()
    finally:
        os.close(compiled)


def warm() -> None:
    """Compile the filters most jobs need, so no job waits for libseccomp."""
    root = frozenset(CAPABILITIES[name] for name in DEFAULT_CAPABILITIES)
    for capabilities in (frozenset(), root):
        for pid_namespace in (True, False):
            program(capabilities, pid_namespace)


def load(bpf: bytes) -> None:
    """Apply the filter to this process and everything it execs or forks, for good.

    Needs no_new_privs or CAP_SYS_ADMIN, which a root job still has at this point.
    """
    code = ctypes.create_string_buffer(bpf, len(bpf))
    fprog = _SockFprog(len(bpf) // 8, ctypes.addressof(code))
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) < 0:
        number = ctypes.get_errno()
        raise OSError(number, f"prctl(PR_SET_SECCOMP): {os.strerror(number)}")
