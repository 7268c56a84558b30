"""The on-disk log of a job's stdout and stderr.

The job's shim appends records as output arrives; any number of readers read
the same file concurrently. One file (rather than one per stream) keeps the
order in which the shim saw stdout and stderr interleave, which is what a
person reading ``logs`` expects, while each record still says which stream its
bytes came from.

Format: an 8-byte magic, then records of an 8-byte header (kind, stream,
2 bytes of padding, payload length as little-endian u32) and the payload.

- ``DATA``: output bytes of one stream.
- ``CAPPED``: the per-job output cap was reached; later output is dropped.
  Payload: the cap as ASCII digits.
- ``END``: the job has ended and nothing more will be written. Payload: the
  number of bytes dropped (after the cap, or for lack of space), as ASCII digits.
- ``TRUNCATED``: no space was left to store output; later output is dropped.
  Payload: why, as UTF-8 text naming the filesystem.

A reader may see a record whose payload is not fully written yet; it treats
the record as absent until it is complete, so a torn tail is never misread.
Offsets given to readers count output bytes (both streams, in log order),
not file positions.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import os
import struct
import termios
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from jobworker.isolation import _syscalls as syscalls
from jobworker.isolation.errors import OutputLogError

MAGIC = b"JWLOG1\n\x00"
_HEADER = struct.Struct("<BBxxI")
MAX_RECORD = 1 << 20
"""Largest payload per record: one pipe read, and a bound on a reader's buffer."""


class Kind(enum.IntEnum):
    """Record kinds."""

    DATA = 1
    CAPPED = 2
    END = 3
    TRUNCATED = 4


class Stream(enum.IntEnum):
    """Which of the job's output streams a DATA record came from."""

    STDOUT = 1
    STDERR = 2


class OutputLogWriter:
    """Appends to a new log; used by exactly one process, the job's shim.

    A job must never die, nor its output be misread, because the disk filled up.
    So the writer keeps space allocated ahead of what it has written (fallocate
    with KEEP_SIZE: the file does not grow until written), always at least enough
    for its last two records. When no more space can be had, it writes a
    TRUNCATED record into that reserve, saying why, and drops (and counts) all
    further output; the END record fits in the reserve too. On a filesystem that
    cannot allocate ahead, a record that fails half-way is cut off again, and the
    TRUNCATED record is written if there is room for it.
    """

    def __init__(self, path: Path, cap: int | None) -> None:
        self._path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        self._cap = cap
        self._devnull = -1
        self._end = 0
        """Bytes of the file written so far: where the next record goes."""
        self._reserved = 0
        """Up to where the file's space is allocated (see the class documentation)."""
        self._can_reserve = True
        self._capped = False
        self.written = 0
        self.dropped = 0
        self.truncated: str | None = None
        """Why output stopped being stored (no space left), or None while it is stored."""
        if self._make_room(len(MAGIC)):
            self._write(MAGIC)

    def move_from(self, stream: Stream, pipe: int) -> bool:
        """Move what waits in ``pipe`` into the log; False once the pipe is at end of file.

        splice(2) moves the bytes from the pipe to the file inside the kernel: one
        copy fewer than read and write, and no buffer in this process to allocate
        and fault in for every chunk. Past the cap, or once the disk is full, they
        go to /dev/null the same way. Only for a pipe that poll() reported readable
        and that nobody else reads.

        The record's last byte goes by write(2): before Linux 6.7 splice raises no
        inotify event, and followers sleep until one comes, so an event must follow
        the moment the record is whole. Otherwise a follower that looked while the
        payload was still being spliced would wait for the job's next output.
        """
        waiting = _bytes_waiting(pipe)
        if not waiting:  # readable yet empty: the writers are gone (read tells for sure)
            data = os.read(pipe, MAX_RECORD)
            self.write(stream, data)
            return bool(data)
        count = min(waiting, MAX_RECORD)
        room = self._room(count)
        taken = self._store_from_pipe(stream, pipe, room) if room else 0
        if taken < count:
            if self.truncated is None:
                self._mark_cap()
            if self._devnull < 0:
                self._devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            _splice_exactly(pipe, self._devnull, count - taken)
            self.dropped += count - taken
        return True

    def write(self, stream: Stream, data: bytes | memoryview) -> None:
        """Append output; past the cap or the disk's space, count it as dropped."""
        view = memoryview(data)
        room = self._room(len(view))
        for start in range(0, room, MAX_RECORD):
            chunk = view[start : min(start + MAX_RECORD, room)]
            if not self._append(Kind.DATA, stream, chunk):
                self.dropped += room - start
                break
            self.written += len(chunk)
        if room < len(view):
            if self.truncated is None:
                self._mark_cap()
            self.dropped += len(view) - room

    def fileno(self) -> int:
        """The log's descriptor, so a forked child can close its copy."""
        return self._fd

    def close(self) -> None:
        """Write the END record, give back unused space, and make the whole log durable.

        Raises ``OSError`` only where the filesystem cannot allocate ahead and the
        disk is full, so that the END record cannot be written.
        """
        try:
            header = _HEADER.pack(Kind.END, 0, len(str(self.dropped)))
            prefix = MAGIC if self._end == 0 else b""  # the disk was full from the start
            self._write(prefix + header + str(self.dropped).encode())  # into the reserve
            if self._reserved > self._end:
                with contextlib.suppress(OSError):
                    syscalls.release_space(self._fd, self._end, self._reserved - self._end)
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
            if self._devnull >= 0:
                os.close(self._devnull)

    def _room(self, count: int) -> int:
        """How many of ``count`` new bytes may be stored, by the cap and the disk."""
        if self.truncated is not None:
            return 0
        return count if self._cap is None else max(min(count, self._cap - self.written), 0)

    def _store_from_pipe(self, stream: Stream, pipe: int, count: int) -> int:
        """Store ``count`` bytes of ``pipe`` as one record; how many it took from the pipe."""
        if not self._make_room(_HEADER.size + count):
            return 0
        start, moved = self._end, 0
        try:
            # Header first: a reader treats the record as absent until its payload is whole.
            self._write(_HEADER.pack(Kind.DATA, stream, count))
            while moved < count - 1:
                step = os.splice(pipe, self._fd, count - 1 - moved)
                if not step:
                    raise OutputLogError(f"a pipe held {count - moved} bytes fewer than it said")
                moved += step
                self._end += step
            last = os.read(pipe, 1)
            moved += 1
            self._write(last)
        except OSError as error:
            self._lost_space(error, start)
            self.dropped += moved
            return moved
        self.written += count
        return count

    def _mark_cap(self) -> None:
        """The CAPPED record, once, where output starts to be dropped."""
        if not self._capped:
            self._capped = True
            self._append(Kind.CAPPED, 0, str(self._cap).encode())

    def _append(self, kind: Kind, stream: int, payload: bytes | memoryview) -> bool:
        """One record; False if the disk had no room for it (output is truncated then)."""
        header = _HEADER.pack(kind, stream, len(payload))
        if not self._make_room(len(header) + len(payload)):
            return False
        start = self._end
        try:
            self._write(header, payload)
        except OSError as error:
            self._lost_space(error, start)
            return False
        return True

    def _make_room(self, size: int) -> bool:
        """Space for ``size`` more bytes and the reserve after them; False once there is none.

        Space is taken ahead in steps that grow with the log (64 KiB to 4 MiB), so a
        small job holds little and a large one calls fallocate rarely.
        """
        if self.truncated is not None:
            return False
        wanted = self._end + size + _RESERVE
        if not self._can_reserve or wanted <= self._reserved:
            return True
        step = max(wanted - self._reserved, min(max(self._end, _MIN_STEP), _MAX_STEP))
        try:
            syscalls.reserve_space(self._fd, self._reserved, step)
        except OSError as error:
            if error.errno not in _NO_SPACE:
                self._can_reserve = False  # this filesystem cannot: write and see
                return True
            self._stop_storing(error)
            return False
        self._reserved += step
        return True

    def _lost_space(self, error: OSError, start: int) -> None:
        """A write failed half-way: cut the partial record off and stop storing output."""
        if error.errno not in _NO_SPACE:
            raise error
        os.ftruncate(self._fd, start)
        os.lseek(self._fd, start, os.SEEK_SET)
        self._end = start
        self._stop_storing(error)

    def _stop_storing(self, error: OSError) -> None:
        """Say in the log why output stops here (it fits in the reserve); drop the rest."""
        reason = os.strerror(error.errno or errno.ENOSPC)
        self.truncated = f"output truncated: {reason} on {_volume(self._path)}"
        payload = self.truncated.encode()
        with contextlib.suppress(OSError):  # without a reserve there may be no room for it
            self._write(_HEADER.pack(Kind.TRUNCATED, 0, len(payload)), payload)

    def _write(self, *parts: bytes | memoryview) -> None:
        """Write all of ``parts`` at the end of the log."""
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            self._end += written
            view = view[written:]


_RESERVE = 4096
"""Kept allocated past the end at all times: room for a TRUNCATED and an END record."""
_MIN_STEP = 64 * 1024
_MAX_STEP = 4 << 20
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def _volume(path: Path) -> str:
    """The mount point of the filesystem holding ``path``, to name it in messages."""
    path = path.absolute()
    device = path.stat().st_dev if path.exists() else path.parent.stat().st_dev
    while path.parent != path and path.parent.stat().st_dev == device:
        path = path.parent
    return str(path)


def _bytes_waiting(pipe: int) -> int:
    """How many bytes a pipe holds (FIONREAD)."""
    return int(struct.unpack("i", fcntl.ioctl(pipe, termios.FIONREAD, b"\0\0\0\0"))[0])


def _splice_exactly(source: int, target: int, count: int) -> None:
    """Move ``count`` bytes that are known to be in the pipe ``source``."""
    while count:
        moved = os.splice(source, target, count)
        if not moved:
            raise OutputLogError(f"a pipe held {count} bytes fewer than it reported")
        count -= moved


@dataclass(frozen=True)
class Record:
    """One record as a reader sees it; ``offset`` is where ``data`` starts in the output."""

    kind: Kind
    stream: Stream | None
    offset: int
    data: bytes

    @property
    def number(self) -> int:
        """The integer payload of CAPPED and END records."""
        return int(self.data or b"0")


READ_AHEAD = 64 * 1024
"""Bytes a reader reads at once for headers and small payloads: a log of many small records
then costs one read per many records, not two per record. Larger payloads are read on their
own, straight into the buffer they are handed out in."""


class OutputLogReader:
    """Reads a log that may still be growing; one per reader, each with its own position."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._position = len(MAGIC)
        self._trim = 0
        self.offset = 0
        # Bytes of the file from _ahead_at on, read before they were needed. The log is
        # only ever appended to, so what was read stays true; only its end may be stale.
        self._ahead = b""
        self._ahead_at = 0
        magic = os.pread(self._fd, len(MAGIC), 0)
        if magic and magic != MAGIC[: len(magic)]:
            os.close(self._fd)
            raise OutputLogError(f"{path} is not a jobworker output log")

    def close(self) -> None:
        """Release the file."""
        os.close(self._fd)

    def __enter__(self) -> OutputLogReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def records(self, merge: int = 0) -> Iterator[Record]:
        """Yield every complete record from the current position; stop at the written end.

        With ``merge``, consecutive small DATA records of one stream that are already
        written come as one record of up to ``merge`` bytes, with the offsets of
        reading them one by one. A reader that sends each record on pays per record,
        and a job's shim writes one per pipe read, which can be a few bytes each;
        merging never waits for more to be written. A record of ``READ_AHEAD`` bytes
        or more comes on its own, as read: it is worth a message by itself, and
        joining it to others would cost a copy of it.
        """
        while (record := self._next(merge)) is not None:
            yield record
        self._ahead = b""  # at the written end: a follower waiting for more holds no buffer

    def skip_to(self, offset: int) -> None:
        """Move forward to output byte ``offset``, or to the written end if that is sooner.

        Reads only headers, so skipping over gigabytes costs one small read per record.
        """
        while self.offset < offset and (header := self._header(ahead=False)) is not None:
            kind, _stream, length = header
            if kind is not Kind.DATA:
                return  # markers are never skipped: a reader must learn of the cap and the end
            start = self.offset - self._trim
            if start + length > offset:
                self._trim = offset - start
                self.offset = offset
                return
            self._position += _HEADER.size + length
            self.offset = start + length
            self._trim = 0

    def _next(self, merge: int) -> Record | None:
        """The next record; a small DATA record joined by the small ones after it."""
        header = self._header(ahead=True)
        if header is None:
            return None
        kind, stream, length = header
        payload = self._payload(length)
        if payload is None:
            return None
        self._position += _HEADER.size + length
        offset = self.offset
        if kind is not Kind.DATA:
            return Record(kind, None, offset, bytes(payload))
        parts = [payload[self._trim :]]
        size = length - self._trim
        self._trim = 0
        if length < READ_AHEAD:
            while size < merge and (more := self._joinable(stream, merge - size)) is not None:
                parts.append(more)
                size += len(more)
        self.offset += size
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        return Record(Kind.DATA, Stream(stream), offset, bytes(data))

    def _joinable(self, stream: int, room: int) -> bytes | memoryview | None:
        """The payload of the next record, consumed, if it may join the ones before it.

        That is a complete small DATA record of ``stream`` of at most ``room`` bytes.
        """
        try:
            header = self._header(ahead=True)
        except OutputLogError:
            return None  # raised again by the next call, once what comes before is handed out
        if header is None:
            return None
        kind, next_stream, length = header
        if kind is not Kind.DATA or next_stream != stream or length > room:
            return None
        if length >= READ_AHEAD:
            return None
        payload = self._payload(length)
        if payload is not None:
            self._position += _HEADER.size + length
        return payload

    def _header(self, *, ahead: bool) -> tuple[Kind, int, int] | None:
        raw = self._read(self._position, _HEADER.size, ahead=ahead)
        if len(raw) < _HEADER.size:
            return None
        kind, stream, length = _HEADER.unpack(raw)
        if length > MAX_RECORD or kind not in _KINDS or stream > Stream.STDERR:
            raise OutputLogError(f"damaged output log at byte {self._position}")
        return Kind(kind), stream, length

    def _payload(self, length: int) -> bytes | memoryview | None:
        """The payload of the record at the current position, or None while it is incomplete."""
        if not length:
            return b""
        data = self._read(self._position + _HEADER.size, length, ahead=True)
        return data if len(data) == length else None

    def _read(self, position: int, size: int, *, ahead: bool) -> bytes | memoryview:
        """``size`` bytes of the file at ``position``, or fewer at the written end."""
        start = position - self._ahead_at
        if start >= 0 and start + size <= len(self._ahead):
            return memoryview(self._ahead)[start : start + size]
        if not ahead or size >= READ_AHEAD:
            return os.pread(self._fd, size, position)
        self._ahead = os.pread(self._fd, READ_AHEAD, position)
        self._ahead_at = position
        return memoryview(self._ahead)[:size]


_KINDS = frozenset(int(kind) for kind in Kind)
