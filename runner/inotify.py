"""Waking readers when a file grows, through one inotify descriptor for the whole service.

Readers of a job's output wait on an ``asyncio.Event`` that this module sets
when the kernel reports the file modified, so a follower sleeps until there is
something to read and no reader ever polls on a timer.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

IN_MODIFY = 0x00000002
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")

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
        self._waiters: dict[int, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextmanager
    def watch(self, path: Path) -> Iterator[asyncio.Event]:
        """An event set whenever ``path`` is modified, for as long as the context lasts.

        The caller clears the event before it reads, then waits on it; a change
        that lands between the read and the wait leaves the event set, so no
        wake-up is lost.
        """
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._fd, self._dispatch)
        wd = _libc.inotify_add_watch(self._fd, os.fsencode(path), IN_MODIFY)
        if wd < 0:
            number = ctypes.get_errno()
            raise OSError(number, f"cannot watch {path}: {os.strerror(number)}")
        event = asyncio.Event()
        self._waiters.setdefault(wd, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(wd)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[wd]
                    _libc.inotify_rm_watch(self._fd, wd)  # fails harmlessly if already gone

    def watched(self) -> int:
        """How many files are being watched right now (readers that went away hold none)."""
        return len(self._waiters)

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
                self._wake_all()
            elif mask & IN_IGNORED:
                for event in self._waiters.pop(wd, set()):
                    event.set()
            else:
                for event in self._waiters.get(wd, ()):
                    event.set()

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()

    def close(self) -> None:
        """Stop watching everything."""
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
        os.close(self._fd)
