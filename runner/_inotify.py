"""Waking readers when a file grows, through one inotify descriptor for the whole service.

Each reader of a job's output waits on one ``asyncio.Event`` of its own. This
module sets it when the kernel reports the file modified, and whenever the
owner of the watcher says there is something else to look at (the job ended, the
service is closing), so a follower sleeps until there is a reason to look again
and no reader ever polls on a timer. One event per reader, set directly, is the
cheapest wake-up asyncio has: no task per wait, nothing to cancel afterwards,
which matters when dozens of followers wake for every record a busy job writes.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

IN_MODIFY = 0x00000002
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")
_K = TypeVar("_K")

# The running program already has libc loaded; looking it up by name would import
# ctypes.util, which runs ldconfig in a subprocess and doubles this module's cost.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]


class FileWatcher:
    """Watches files for modification on behalf of any number of waiters."""

    def __init__(self) -> None:
        self._fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self._fd < 0:
            number = ctypes.get_errno()
            raise OSError(number, f"inotify_init1: {os.strerror(number)}")
        # Every waiter's event, by watch (for the kernel's events) and by path (for wake).
        self._by_wd: dict[int, set[asyncio.Event]] = {}
        self._by_path: dict[Path, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextmanager
    def watch(self, path: Path) -> Iterator[asyncio.Event]:
        """An event set whenever ``path`` is modified or ``wake(path)`` is called.

        The caller clears the event before it looks (at the file, and at whatever
        ``wake`` stands for), then waits on it; a change that lands between the
        look and the wait leaves the event set, so no wake-up is lost. The event
        may also be set for nothing new (several changes seen in one look), so
        the caller looks again rather than assume.
        """
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._fd, self._dispatch)
        wd = _libc.inotify_add_watch(self._fd, os.fsencode(path), IN_MODIFY)
        if wd < 0:
            number = ctypes.get_errno()
            raise OSError(number, f"cannot watch {path}: {os.strerror(number)}")
        event = asyncio.Event()
        self._by_wd.setdefault(wd, set()).add(event)
        self._by_path.setdefault(path, set()).add(event)
        try:
            yield event
        finally:
            _leave(self._by_path, path, event)
            if _leave(self._by_wd, wd, event):
                _libc.inotify_rm_watch(self._fd, wd)  # fails harmlessly if already gone

    def wake(self, path: Path) -> None:
        """Set the event of everyone watching ``path``, as if it had been modified."""
        _set_all(self._by_path.get(path, ()))

    def wake_all(self) -> None:
        """Set the event of everyone watching anything."""
        for waiters in self._by_wd.values():
            _set_all(waiters)

    def watched(self) -> int:
        """How many files are being watched right now (readers that went away hold none)."""
        return len(self._by_wd)

    def _dispatch(self) -> None:
        try:
            data = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return
        except OSError as error:
            if error.errno == errno.EINTR:
                return
            raise
        position = 0
        while position < len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, position)
            position += _EVENT.size + length
            if mask & IN_Q_OVERFLOW:
                self.wake_all()
            else:
                # IN_IGNORED (the file was deleted, or its filesystem unmounted) ends the
                # kernel's watch but not the waiters: they keep their events, which
                # ``wake`` still reaches, until they leave.
                _set_all(self._by_wd.get(wd, ()))

    def close(self) -> None:
        """Stop watching everything."""
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
        os.close(self._fd)


def _set_all(events: Iterable[asyncio.Event]) -> None:
    for event in events:
        event.set()


def _leave(waiters: dict[_K, set[asyncio.Event]], key: _K, event: asyncio.Event) -> bool:
    """Remove ``event`` from ``waiters[key]``; True if it was the last one there."""
    events = waiters[key]
    events.discard(event)
    if events:
        return False
    del waiters[key]
    return True
