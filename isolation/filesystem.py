"""What a job sees of the filesystem: a read-only host, tmpfs mounts, bind mounts, another root.

Every part of it is made in the job's own mount namespace (``_mounts`` does it, in
the job's first process), so none of it reaches the host; a request for any of it
without the mount namespace is refused.

Paths are resolved as the service, root, resolves them, so they are checked with
symbolic links in mind: a bind's source and a new root must be named by their real
paths (no link anywhere on the way, checked again race-free when mounting), and
destinations are resolved inside the job's root, where a link cannot lead out of it.
Binding a host path or choosing a new root shows the job files it could not reach
otherwise (a file under a directory its user may not search), so both are for
admins only (``admin_option``); a read-only root and tmpfs mounts only take away.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, replace

from jobworker.isolation import _syscalls as syscalls
from jobworker.isolation.errors import InvalidSpec
from jobworker.isolation.namespaces import Namespaces

TMP = "/tmp"
ROOT_MOUNT_POINTS = ("proc", "dev")
"""Directories a new root must have: its fresh /proc and /dev are mounted there (and /sys,
which it needs too when the job has its own network)."""
_RESERVED = "/proc"
"""Mounted afresh after every other mount, so nothing may be mounted below it."""


@dataclass(frozen=True)
class Tmpfs:
    """A private, empty, writable (mode 1777) tmpfs; its pages count in the job's memory."""

    path: str
    size_bytes: int | None = None
    """None: the job's memory limit, or the kernel's default (half the RAM) without one."""


@dataclass(frozen=True)
class Bind:
    """A host path (and everything mounted below it) shown at ``destination`` in the job."""

    source: str
    destination: str = ""
    """Where the job sees it; empty means at the same path as on the host."""
    read_only: bool = False

    @property
    def target(self) -> str:
        """The path the job sees the source at."""
        return self.destination or self.source


@dataclass(frozen=True)
class Filesystem:
    """The job's view of the filesystem; the default is the host's, unchanged."""

    read_only: bool = False
    """The root and every mount below it read-only, with a private /tmp (unless one of
    ``tmpfs`` or ``binds`` is at /tmp already)."""
    tmpfs: tuple[Tmpfs, ...] = ()
    binds: tuple[Bind, ...] = ()
    rootfs: str | None = None
    """A directory to run in instead of the host's root (pivot_root), with a fresh /proc,
    a minimal /dev, and a fresh read-only /sys when the job has its own network."""

    def requested(self) -> tuple[str, ...]:
        """The options this view sets, by name; none for the host's view."""
        chosen = {
            "read_only": self.read_only,
            "tmpfs": bool(self.tmpfs),
            "binds": bool(self.binds),
            "rootfs": self.rootfs is not None,
        }
        return tuple(name for name, given in chosen.items() if given)

    def admin_option(self) -> str | None:
        """The first option set here that only an admin may use (see the module's docstring)."""
        return next((name for name in self.requested() if name in ("binds", "rootfs")), None)

    def for_job(self, memory_bytes: int | None) -> Filesystem:
        """What the job's first process mounts: the implied /tmp added, every size set.

        Tmpfs mounts come parents first, so one may hold the mount point of another.
        """
        tmpfs = self.tmpfs
        if self.read_only and not self._covers(TMP):
            tmpfs = (Tmpfs(TMP), *tmpfs)
        sized = (replace(t, size_bytes=t.size_bytes or memory_bytes) for t in tmpfs)
        return replace(self, tmpfs=tuple(sorted(sized, key=lambda t: t.path)))

    def validate(self, namespaces: Namespaces) -> None:
        """Refuse what cannot be mounted as asked, naming the option; reads the disk as root."""
        requested = self.requested()
        if requested and not namespaces.mount:
            raise InvalidSpec(
                f"filesystem.{requested[0]}",
                "needs the mount namespace (the job's mounts would otherwise be the host's)",
            )
        if self.rootfs is not None:
            _check_rootfs(self.rootfs, namespaces)
        tmpfs_paths: list[str] = []
        for index, tmpfs in enumerate(self.tmpfs):
            where = f"filesystem.tmpfs[{index}]"
            _check_mount_point(where, tmpfs.path)
            if tmpfs.path in tmpfs_paths:
                raise InvalidSpec(where, f"{tmpfs.path} is given twice")
            size = tmpfs.size_bytes
            if size is not None and (isinstance(size, bool) or size <= 0):
                raise InvalidSpec(where, f"size {size!r} must be a positive number of bytes")
            tmpfs_paths.append(tmpfs.path)
        if self.read_only and not self._covers(TMP):
            tmpfs_paths.append(TMP)
        for index, path in enumerate(tmpfs_paths):
            implied = index == len(self.tmpfs)
            where = "filesystem.read_only" if implied else f"filesystem.tmpfs[{index}]"
            if not _below_any(path, tmpfs_paths):
                _check_in_view(where, path, self.rootfs, None)
        bind_targets: list[str] = []
        for index, bind in enumerate(self.binds):
            where = f"filesystem.binds[{index}]"
            _check_mount_point(where, bind.target)
            kind = _check_source(where, bind.source)
            if not _below_any(bind.target, [*tmpfs_paths, *bind_targets]):
                _check_in_view(where, bind.target, self.rootfs, kind)
            bind_targets.append(bind.target)

    def _covers(self, path: str) -> bool:
        return any(t.path == path for t in self.tmpfs) or any(b.target == path for b in self.binds)


def _check_rootfs(rootfs: str, namespaces: Namespaces) -> None:
    where = "filesystem.rootfs"
    _check_path(where, rootfs)
    if rootfs == "/":
        raise InvalidSpec(where, "/ is the host's root; use read_only to protect it")
    if not namespaces.pid:
        raise InvalidSpec(where, "needs the pid namespace: its /proc would show the host's")
    if _kind(where, rootfs) != stat.S_IFDIR:
        raise InvalidSpec(where, f"{rootfs} is not a directory")
    needed = (*ROOT_MOUNT_POINTS, "sys") if namespaces.net else ROOT_MOUNT_POINTS
    for name in needed:
        if _kind_in_root(rootfs, name) != stat.S_IFDIR:
            raise InvalidSpec(where, f"{rootfs} has no directory {name} to mount /{name} on")


def _check_path(where: str, path: str) -> None:
    """An absolute path without '.', '..' or empty components, so it means one thing."""
    if not path.startswith("/") or "\0" in path:
        raise InvalidSpec(where, f"{path!r} must be an absolute path")
    parts = path.split("/")[1:]
    if path != "/" and any(part in ("", ".", "..") for part in parts):
        raise InvalidSpec(where, f"{path!r} must be a plain path, without '.', '..' or '//'")


def _check_mount_point(where: str, path: str) -> None:
    _check_path(where, path)
    if path == "/":
        raise InvalidSpec(where, "cannot mount over / (use rootfs to run in another root)")
    if path == _RESERVED or path.startswith(_RESERVED + "/"):
        raise InvalidSpec(where, f"{path} is in the job's own /proc, mounted after it")


def _check_source(where: str, source: str) -> int:
    """The source's file type, once it is known to exist and be named by its real path."""
    _check_path(where, source)
    return _kind(where, source)


def _kind(where: str, path: str) -> int:
    """The file type of a host path, opened without following any symbolic link."""
    try:
        fd = syscalls.open_path(path, syscalls.RESOLVE_NO_SYMLINKS)
    except OSError as error:
        if error.errno == errno.ELOOP:
            real = os.path.realpath(path)
            raise InvalidSpec(
                where, f"{path} passes through a symbolic link; name its real path {real}"
            ) from None
        raise InvalidSpec(where, f"{path}: {os.strerror(error.errno or 0)}") from None
    try:
        return stat.S_IFMT(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def _kind_in_root(root: str, path: str) -> int | None:
    """The file type of ``path`` as a process whose root is ``root`` sees it; None if absent."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = syscalls.open_path(path.lstrip("/") or ".", syscalls.RESOLVE_IN_ROOT, dirfd=root_fd)
    except OSError:
        return None
    finally:
        os.close(root_fd)
    try:
        return stat.S_IFMT(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def _check_in_view(where: str, path: str, rootfs: str | None, kind: int | None) -> None:
    """``path`` must exist in the job's root, as a directory or, for a file, as a non-directory.

    Only inside the job's own tmpfs is a missing mount point made; anywhere else
    making it would change the host's files, or the prepared root's.
    """
    found = _kind_in_root(rootfs or "/", path)
    view = f"in {rootfs}" if rootfs else "on the host"
    if found is None:
        raise InvalidSpec(where, f"{path} does not exist {view} (only in a tmpfs is it made)")
    wanted_directory = kind is None or kind == stat.S_IFDIR
    if wanted_directory != (found == stat.S_IFDIR):
        what = "a directory" if wanted_directory else "a file, like its source"
        raise InvalidSpec(where, f"{path} {view} is not {what}")


def _below_any(path: str, parents: list[str]) -> bool:
    return any(path.startswith(parent + "/") for parent in parents)
