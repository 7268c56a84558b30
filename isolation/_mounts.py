"""Making a job's view of the filesystem (see ``filesystem``), in the job's first process.

Runs as root in the job's private mount namespace, before the command's
credentials are taken. The order matters:

1. every bind source (and, for a new root, every device node) is cloned as a
   detached mount tree while the host's root is still there, each opened
   without following a symbolic link;
2. a new root is entered: its tree is attached over itself, made the root with
   ``pivot_root``, and the host's root is detached, so nothing of it stays in
   reach; a tmpfs /dev gets the cloned device nodes, and /sys a fresh read-only
   sysfs when the job has its own network;
3. read-only makes the root and everything below it read-only at once
   (``mount_setattr``), before the mounts that must stay writable;
4. tmpfs mounts, then binds, at paths resolved inside the job's root: a
   symbolic link there cannot lead to the host's files.

The caller mounts /proc afterwards (for the job's PID namespace).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator

from jobworker.isolation import _syscalls as syscalls
from jobworker.isolation.filesystem import Bind, Filesystem, Tmpfs

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEVICE_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
}
_MOUNT_FLAGS = syscalls.MS_NOSUID | syscalls.MS_NODEV
_BIND_ATTRIBUTES = syscalls.MOUNT_ATTR_NOSUID | syscalls.MOUNT_ATTR_NODEV


def make_view(view: Filesystem, *, own_network: bool) -> None:
    """Mount ``view`` (as ``Filesystem.for_job`` gave it) over the caller's root.

    An ``OSError`` says which mount failed and why.
    """
    with contextlib.ExitStack() as trees:
        sources = [trees.enter_context(_cloned(bind.source)) for bind in view.binds]
        if view.rootfs is not None:
            devices = [trees.enter_context(_cloned(f"/dev/{name}")) for name in DEVICES]
            with _explained(f"entering the root {view.rootfs}"):
                _enter_root(view.rootfs)
            with _explained("making /dev"):
                _make_dev(devices)
            if own_network:
                with _explained("mounting /sys"):
                    flags = _MOUNT_FLAGS | syscalls.MS_NOEXEC | syscalls.MS_RDONLY
                    syscalls.mount("sysfs", "/sys", "sysfs", flags)
        if view.read_only:
            with _explained("making / read-only"):
                syscalls.set_root_read_only()
        made = [tmpfs.path for tmpfs in view.tmpfs]
        for tmpfs in view.tmpfs:
            with _explained(f"mounting a tmpfs on {tmpfs.path}"):
                _mount_tmpfs(tmpfs, made)
        for bind, tree in zip(view.binds, sources, strict=True):
            with _explained(f"binding {bind.source} on {bind.target}"):
                _attach(bind, tree, made)


@contextlib.contextmanager
def _cloned(path: str) -> Iterator[int]:
    """A detached copy of the mounts at ``path``, reached without any symbolic link."""
    with _explained(f"opening {path}"):
        fd = syscalls.open_path(path, syscalls.RESOLVE_NO_SYMLINKS)
        try:
            tree = syscalls.clone_mount_at(fd)
        finally:
            os.close(fd)
    try:
        yield tree
    finally:
        os.close(tree)


def _enter_root(rootfs: str) -> None:
    fd = syscalls.open_path(rootfs, syscalls.RESOLVE_NO_SYMLINKS)
    try:
        tree = syscalls.clone_mount_at(fd)
        try:
            # pivot_root needs a mount point: the root's own tree, attached over itself.
            syscalls.move_mount_onto(tree, fd)
            os.fchdir(tree)
        finally:
            os.close(tree)
    finally:
        os.close(fd)
    syscalls.pivot_root_here()
    syscalls.umount(".", syscalls.MNT_DETACH)
    os.chdir("/")


def _make_dev(devices: list[int]) -> None:
    """A tmpfs /dev with the host's device nodes bound in, as bubblewrap's ``--dev`` makes."""
    flags = syscalls.MS_NOSUID | syscalls.MS_NOEXEC
    syscalls.mount("tmpfs", "/dev", "tmpfs", flags, "mode=0755,size=64k")
    for name, tree in zip(DEVICES, devices, strict=True):
        node = f"/dev/{name}"
        os.close(os.open(node, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666))
        syscalls.set_mount_attributes(tree, syscalls.MOUNT_ATTR_NOSUID)
        syscalls.move_mount(tree, node)
    for name, target in DEVICE_LINKS.items():
        os.symlink(target, f"/dev/{name}")


def _mount_tmpfs(tmpfs: Tmpfs, made: list[str]) -> None:
    _make_mount_point(tmpfs.path, directory=True, made=made)
    options = "mode=1777" if tmpfs.size_bytes is None else f"mode=1777,size={tmpfs.size_bytes}"
    syscalls.mount("tmpfs", tmpfs.path, "tmpfs", _MOUNT_FLAGS, options)


def _attach(bind: Bind, tree: int, made: list[str]) -> None:
    attributes = _BIND_ATTRIBUTES | (syscalls.MOUNT_ATTR_RDONLY if bind.read_only else 0)
    syscalls.set_mount_attributes(tree, attributes)
    directory = stat.S_ISDIR(os.fstat(tree).st_mode)
    _make_mount_point(bind.target, directory=directory, made=made)
    syscalls.move_mount(tree, bind.target)


def _make_mount_point(path: str, *, directory: bool, made: list[str]) -> None:
    """Make a missing mount point, but only inside a tmpfs of the job's own.

    Anywhere else it must exist (``Filesystem.validate`` checked): making it would
    change the host's files or the prepared root's.
    """
    if not any(path.startswith(parent + "/") for parent in made):
        return
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if directory:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o755)
    else:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


@contextlib.contextmanager
def _explained(what: str) -> Iterator[None]:
    """Name the step in an ``OSError``, keeping the kernel's errno."""
    try:
        yield
    except OSError as error:
        number = error.errno or 0
        raise OSError(number, f"{what}: {os.strerror(number)}") from None
