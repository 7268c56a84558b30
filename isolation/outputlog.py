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
  number of bytes dropped after the cap, as ASCII digits.

A reader may see a record whose payload is not fully written yet; it treats
the record as absent until it is complete, so a torn tail is never misread.
Offsets given to readers count output bytes (both streams, in log order),
not file positions.
"""

from __future__ import annotations

import enum
import fcntl
import os
import struct
import termios
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"JWLOG1\n\x00"
_HEADER = struct.Struct("<BBxxI")
MAX_RECORD = 1 << 20
"""Largest payload per record: one pipe read, and a bound on a reader's buffer."""


class Kind(enum.IntEnum):
    """Record kinds."""

    DATA = 1
    CAPPED = 2
    END = 3


class Stream(enum.IntEnum):
    """Which of the job's output streams a DATA record came from."""

    STDOUT = 1
    STDERR = 2


class OutputLogError(Exception):
    """The file is not an output log, or is damaged before its readable tail."""


class OutputLogWriter:
    """Appends to a new log; used by exactly one process, the job's shim."""

    def __init__(self, path: Path, cap: int | None) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        self._cap = cap
        self._devnull = -1
        self.written = 0
        self.dropped = 0
        os.write(self._fd, MAGIC)

    def move_from(self, stream: Stream, pipe: int) -> bool:
        """Move what waits in ``pipe`` into the log; False once the pipe is at end of file.

        splice(2) moves the bytes from the pipe to the file inside the kernel: one
        copy fewer than read and write, and no buffer in this process to allocate
        and fault in for every chunk. Past the cap they go to /dev/null the same way.
        Only for a pipe that poll() reported readable and that nobody else reads.

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
        room = count if self._cap is None else max(min(count, self._cap - self.written), 0)
        if room:
            # Header first: a reader treats the record as absent until its payload is whole.
            os.write(self._fd, _HEADER.pack(Kind.DATA, stream, room))
            _splice_exactly(pipe, self._fd, room - 1)
            os.write(self._fd, os.read(pipe, 1))
            self.written += room
        if room < count:
            self._mark_cap()
            if self._devnull < 0:
                self._devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            _splice_exactly(pipe, self._devnull, count - room)
            self.dropped += count - room
        return True

    def write(self, stream: Stream, data: bytes | memoryview) -> None:
        """Append output; past the cap, count it as dropped and mark the cut once."""
        view = memoryview(data)
        if self._cap is not None and self.written + len(view) > self._cap:
            room = max(self._cap - self.written, 0)
            self._append_data(stream, view[:room])
            self._mark_cap()
            self.dropped += len(view) - room
            return
        self._append_data(stream, view)

    def _mark_cap(self) -> None:
        """The CAPPED record, once, where output starts to be dropped."""
        if not self.dropped:
            self._append(Kind.CAPPED, 0, str(self._cap).encode())

    def fileno(self) -> int:
        """The log's descriptor, so a forked child can close its copy."""
        return self._fd

    def close(self) -> None:
        """Write the END record and make the whole log durable."""
        self._append(Kind.END, 0, str(self.dropped).encode())
        os.fsync(self._fd)
        os.close(self._fd)
        if self._devnull >= 0:
            os.close(self._devnull)

    def _append_data(self, stream: Stream, data: memoryview) -> None:
        for start in range(0, len(data), MAX_RECORD):
            chunk = data[start : start + MAX_RECORD]
            self._append(Kind.DATA, stream, chunk)
            self.written += len(chunk)

    def _append(self, kind: Kind, stream: int, payload: bytes | memoryview) -> None:
        header = _HEADER.pack(kind, stream, len(payload))
        os.writev(self._fd, [header, payload])


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
