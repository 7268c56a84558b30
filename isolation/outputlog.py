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
import os
import struct
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
        self.written = 0
        self.dropped = 0
        os.write(self._fd, MAGIC)

    def write(self, stream: Stream, data: bytes | memoryview) -> None:
        """Append output; past the cap, count it as dropped and mark the cut once."""
        view = memoryview(data)
        if self._cap is not None and self.written + len(view) > self._cap:
            room = max(self._cap - self.written, 0)
            self._append_data(stream, view[:room])
            if not self.dropped:
                self._append(Kind.CAPPED, 0, str(self._cap).encode())
            self.dropped += len(view) - room
            return
        self._append_data(stream, view)

    def fileno(self) -> int:
        """The log's descriptor, so a forked child can close its copy."""
        return self._fd

    def capped(self) -> bool:
        """Whether output is being dropped; the shim then stops copying bytes around."""
        return self.dropped > 0

    def drop(self, count: int) -> None:
        """Account for bytes discarded without being read into this process."""
        self.dropped += count

    def close(self) -> None:
        """Write the END record and make the whole log durable."""
        self._append(Kind.END, 0, str(self.dropped).encode())
        os.fsync(self._fd)
        os.close(self._fd)

    def _append_data(self, stream: Stream, data: memoryview) -> None:
        for start in range(0, len(data), MAX_RECORD):
            chunk = data[start : start + MAX_RECORD]
            self._append(Kind.DATA, stream, chunk)
            self.written += len(chunk)

    def _append(self, kind: Kind, stream: int, payload: bytes | memoryview) -> None:
        header = _HEADER.pack(kind, stream, len(payload))
        os.writev(self._fd, [header, payload])


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


class OutputLogReader:
    """Reads a log that may still be growing; one per reader, each with its own position."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._position = len(MAGIC)
        self._trim = 0
        self.offset = 0
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

    def records(self) -> Iterator[Record]:
        """Yield every complete record from the current position; stop at the written end."""
        while (header := self._header()) is not None:
            kind, stream, length = header
            data = os.pread(self._fd, length, self._position + _HEADER.size) if length else b""
            if len(data) < length:
                return
            self._position += _HEADER.size + length
            offset = self.offset
            if kind is Kind.DATA:
                data = data[self._trim :]
                self.offset += length - self._trim
                self._trim = 0
            yield Record(kind, Stream(stream) if stream else None, offset, data)

    def skip_to(self, offset: int) -> None:
        """Move forward to output byte ``offset``, or to the written end if that is sooner.

        Reads only headers, so skipping over gigabytes costs one small read per record.
        """
        while self.offset < offset and (header := self._header()) is not None:
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

    def _header(self) -> tuple[Kind, int, int] | None:
        raw = os.pread(self._fd, _HEADER.size, self._position)
        if len(raw) < _HEADER.size:
            return None
        kind, stream, length = _HEADER.unpack(raw)
        if length > MAX_RECORD or kind not in _KINDS or stream > Stream.STDERR:
            raise OutputLogError(f"damaged output log at byte {self._position}")
        return Kind(kind), stream, length


_KINDS = frozenset(int(kind) for kind in Kind)
