"""The few syscalls Python 3.11 does not wrap: clone3, unshare, setns, the mount family, prctl.

Each wrapper raises ``OSError`` with the real errno, like the ``os`` module does,
so callers handle them like any other system error.
"""

from __future__ import annotations

import ctypes
import errno as errno_module
import os
import signal

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

_AT_FDCWD = -100
_AT_RECURSIVE = 0x8000
_OPEN_TREE_CLONE = 1
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
"""Like clone3's, the same numbers on every architecture (Linux 5.2)."""

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02

PR_SET_NAME = 15
PR_SET_NO_NEW_PRIVS = 38

CLONE_PIDFD = 0x00001000
CLONE_INTO_CGROUP = 0x200000000
_SYS_CLONE3 = 435
"""The same number on every architecture Linux added it to (x86_64, arm64, ...)."""

# The running program already has libc loaded; looking it up by name would import
# ctypes.util, which runs ldconfig in a subprocess and doubles this module's cost.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_void_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_libc.syscall.restype = ctypes.c_long
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
# All five arguments: some options (PR_SET_NO_NEW_PRIVS) refuse non-zero unused ones.
_libc.prctl.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]

# clone3 through a handle that keeps the GIL held across the call: the child then
# starts with the interpreter in exactly the state the parent had, its one thread
# holding the lock (ctypes.CDLL would release it around the call).
_clone3 = ctypes.PyDLL(None, use_errno=True).syscall
_clone3.restype = ctypes.c_long
_clone3.argtypes = [ctypes.c_long, ctypes.c_void_p, ctypes.c_size_t]


class _CloneArgs(ctypes.Structure):
    """``struct clone_args`` from linux/sched.h, up to the ``cgroup`` field (Linux 5.7)."""

    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "flags",
            "pidfd",
            "child_tid",
            "parent_tid",
            "exit_signal",
            "stack",
            "stack_size",
            "tls",
            "set_tid",
            "set_tid_size",
            "cgroup",
        )
    ]


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def clone_into_cgroup(cgroup_fd: int, flags: int = 0) -> tuple[int, int]:
    """Fork a child that starts inside the cgroup ``cgroup_fd`` (an open cgroup directory).

    Returns ``(pid, pidfd)`` in the parent and ``(0, -1)`` in the child. The child
    is born in its cgroup, so no step of it ever runs unlimited, and no process
    is migrated: writing to cgroup.procs takes a global lock that waits for an
    RCU grace period, which made joining the job's group the slowest step of a
    launch. ``flags`` may add CLONE_NEW* namespaces.

    Only for single-threaded callers (the shim): unlike ``os.fork`` this runs no
    at-fork hooks, which is safe only when no other thread can hold a lock.
    """
    pidfd = ctypes.c_int(-1)
    args = _CloneArgs(
        flags=flags | CLONE_PIDFD | CLONE_INTO_CGROUP,
        pidfd=ctypes.addressof(pidfd),
        exit_signal=signal.SIGCHLD,
        cgroup=cgroup_fd,
    )
    pid = _clone3(_SYS_CLONE3, ctypes.byref(args), ctypes.sizeof(args))
    if pid < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"clone3: {os.strerror(errno)}")
    return pid, pidfd.value


def clone3_available() -> bool:
    """Whether clone3 can be called here; a seccomp filter (some containers) may refuse it.

    An empty argument block is invalid, so a kernel that has clone3 answers EINVAL
    without creating anything; ENOSYS means clone3 is missing or filtered out.
    """
    result = _clone3(_SYS_CLONE3, None, 0)
    return result < 0 and ctypes.get_errno() != errno_module.ENOSYS


def unshare(flags: int) -> None:
    """Move the calling thread into new namespaces given as CLONE_NEW* flags."""
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    """Join the namespace that ``fd`` (an open /proc/PID/ns/* file) refers to."""
    _check(_libc.setns(fd, nstype), "setns")


def mount(
    source: str | None, target: str, fstype: str | None, flags: int, options: str | None = None
) -> None:
    """Mount a filesystem; ``options`` are the filesystem's own (tmpfs: ``size=...``)."""
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            options.encode() if options else None,
        ),
        f"mount {target}",
    )


def umount(target: str, flags: int = 0) -> None:
    """Unmount ``target``; with MNT_DETACH, also everything mounted below it."""
    _check(_libc.umount2(target.encode(), flags), f"umount {target}")


def clone_mount_tree(path: str) -> int:
    """A detached copy of the mount at ``path`` and every mount below it, as a descriptor.

    The copy stays usable after ``path`` is unmounted or covered, and
    ``move_mount`` attaches it anywhere; closing the descriptor unmounts it.
    """
    fd = _libc.syscall(
        ctypes.c_long(_SYS_OPEN_TREE),
        ctypes.c_long(_AT_FDCWD),
        path.encode(),
        ctypes.c_ulong(_OPEN_TREE_CLONE | _AT_RECURSIVE | os.O_CLOEXEC),
    )
    if fd < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"open_tree {path}: {os.strerror(errno)}")
    return int(fd)


def move_mount(tree_fd: int, target: str) -> None:
    """Attach a tree from ``clone_mount_tree`` at ``target``."""
    result = _libc.syscall(
        ctypes.c_long(_SYS_MOVE_MOUNT),
        ctypes.c_long(tree_fd),
        b"",
        ctypes.c_long(_AT_FDCWD),
        target.encode(),
        ctypes.c_ulong(_MOVE_MOUNT_F_EMPTY_PATH),
    )
    _check(int(result), f"move_mount {target}")


def reserve_space(fd: int, offset: int, length: int) -> None:
    """Allocate disk space for a byte range of a file without changing its size.

    Writes into the range later need no new blocks, so they cannot fail for lack of
    space. EOPNOTSUPP where the filesystem cannot do it.
    """
    _check(_libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, length), "fallocate")


def release_space(fd: int, offset: int, length: int) -> None:
    """Give back the disk space of a byte range (a hole), keeping the file's size."""
    mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
    _check(_libc.fallocate(fd, mode, offset, length), "fallocate")


def set_no_new_privs() -> None:
    """From here on, exec can never raise privileges (prctl(2), Linux 3.5).

    Setuid bits and file capabilities are ignored, for this process and everything
    it starts.
    """
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def set_process_name(name: str) -> None:
    """Name the process as ps and top show it, so our helpers are easy to tell apart."""
    buffer = ctypes.create_string_buffer(name.encode()[:15])
    _check(_libc.prctl(PR_SET_NAME, ctypes.addressof(buffer), 0, 0, 0), "prctl")


MS_RDONLY = 0x1
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_IN_ROOT = 0x10
_AT_EMPTY_PATH = 0x1000
_MOVE_MOUNT_T_EMPTY_PATH = 0x40
_SYS_OPENAT2 = 437
_SYS_MOUNT_SETATTR = 442
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine, -1)
"""pivot_root's number differs by architecture; openat2 and mount_setattr have one everywhere."""


class _OpenHow(ctypes.Structure):
    """``struct open_how`` from linux/openat2.h (Linux 5.6)."""

    _fields_ = [(name, ctypes.c_uint64) for name in ("flags", "mode", "resolve")]


class _MountAttr(ctypes.Structure):
    """``struct mount_attr`` from linux/mount.h (Linux 5.12)."""

    _fields_ = [
        (name, ctypes.c_uint64) for name in ("attr_set", "attr_clr", "propagation", "userns_fd")
    ]


def open_path(path: str, resolve: int, *, dirfd: int = _AT_FDCWD) -> int:
    """An O_PATH descriptor for ``path``, resolved under openat2's ``resolve`` rules.

    RESOLVE_NO_SYMLINKS refuses a symbolic link anywhere on the way (ELOOP), so
    nobody can swap a component for a link between a check and its use;
    RESOLVE_IN_ROOT resolves ``path`` as if ``dirfd`` were ``/``, links included.
    """
    how = _OpenHow(flags=os.O_PATH | os.O_CLOEXEC, resolve=resolve)
    fd = _libc.syscall(
        ctypes.c_long(_SYS_OPENAT2),
        ctypes.c_long(dirfd),
        path.encode(),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{path}: {os.strerror(errno)}")
    return int(fd)


def clone_mount_at(fd: int) -> int:
    """Like ``clone_mount_tree``, for what an open descriptor (``open_path``) refers to."""
    tree = _libc.syscall(
        ctypes.c_long(_SYS_OPEN_TREE),
        ctypes.c_long(fd),
        b"",
        ctypes.c_ulong(_OPEN_TREE_CLONE | _AT_RECURSIVE | _AT_EMPTY_PATH | os.O_CLOEXEC),
    )
    if tree < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"open_tree: {os.strerror(errno)}")
    return int(tree)


def move_mount_onto(tree_fd: int, target_fd: int) -> None:
    """Attach a tree from ``clone_mount_at`` onto what ``target_fd`` (``open_path``) is."""
    result = _libc.syscall(
        ctypes.c_long(_SYS_MOVE_MOUNT),
        ctypes.c_long(tree_fd),
        b"",
        ctypes.c_long(target_fd),
        b"",
        ctypes.c_ulong(_MOVE_MOUNT_F_EMPTY_PATH | _MOVE_MOUNT_T_EMPTY_PATH),
    )
    _check(int(result), "move_mount")


def set_mount_attributes(fd: int, attributes: int, *, path: str = "") -> None:
    """Set MOUNT_ATTR_* flags on a mount and every mount below it, at once (Linux 5.12).

    ``fd`` is a mount tree from ``clone_mount_at``, or a directory that ``path`` is
    relative to; unlike a remount, the flags reach every submount atomically.
    """
    attr = _MountAttr(attr_set=attributes)
    flags = _AT_RECURSIVE | (0 if path else _AT_EMPTY_PATH)
    result = _libc.syscall(
        ctypes.c_long(_SYS_MOUNT_SETATTR),
        ctypes.c_long(fd),
        path.encode(),
        ctypes.c_uint(flags),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    _check(int(result), f"mount_setattr {path}".rstrip())


def set_root_read_only() -> None:
    """Make ``/`` and every mount below it read-only, in the caller's mount namespace."""
    set_mount_attributes(_AT_FDCWD, MOUNT_ATTR_RDONLY, path="/")


def pivot_root_here() -> None:
    """Make the current directory (a mount point) the root, stacking the old root on it.

    ``pivot_root(".", ".")``, as runc does: the old root ends up mounted over the
    new one, so unmounting ``.`` afterwards drops it without a directory to park it in.
    """
    _check(int(_libc.syscall(ctypes.c_long(_SYS_PIVOT_ROOT), b".", b".")), "pivot_root")
