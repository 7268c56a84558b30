"""Reading a job's output as a stream: from any offset, live, to any number of readers.

Each reader has its own file descriptor and position in the job's output log
(written by the job's shim, see ``jobworker.isolation.outputlog``), so readers
never wait for each other and the job never waits for any of them. A reader
that is following sleeps on one event of its own, which inotify sets when the
log grew and the runner sets when the job ended or the service is closing.

A chunk is what the log holds at the moment of reading: consecutive small
records of one stream (a shim writes one per pipe read, which may be one line)
come as one chunk of up to 1 MiB, the largest record, because each chunk costs a
message and a wake-up of whoever receives it, whatever its size; a record of
64 KiB or more comes alone, as read. A follower never waits to fill a chunk.
Memory per reader is bounded by one chunk and 64 KiB read ahead, whatever the
size of the output.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path

from jobworker.isolation.outputlog import MAX_RECORD, Kind, OutputLogReader, Stream
from jobworker.runner._inotify import FileWatcher

# ``Stream`` is the isolation layer's; it is exported here with the events that carry it,
# so that the runner's callers need not reach past it.
__all__ = [
    "OutputCapped",
    "OutputChunk",
    "OutputEvent",
    "OutputTruncated",
    "Stream",
    "read_output",
]


@dataclass(frozen=True)
class OutputChunk:
    """Bytes the job wrote to ``stream``, starting at output byte ``offset``.

    Offsets count the bytes of both streams together, in the order the job's
    shim received them, so a reader can resume where it stopped.
    """

    stream: Stream
    offset: int
    data: bytes


@dataclass(frozen=True)
class OutputCapped:
    """The job reached its output cap at ``offset``; what it wrote after that was dropped."""

    offset: int
    cap: int


@dataclass(frozen=True)
class OutputTruncated:
    """From ``offset`` on, the job's output was dropped because it could not be stored.

    ``reason`` says why and where, e.g. "output truncated: No space left on device
    on /var/lib/jobworker". The job itself runs on.
    """

    offset: int
    reason: str


OutputEvent = OutputChunk | OutputCapped | OutputTruncated


async def read_output(
    log: Path,
    offset: int,
    *,
    follow: bool,
    watcher: FileWatcher,
    ended: asyncio.Event,
    closing: asyncio.Event,
) -> AsyncGenerator[OutputEvent, None]:
    """Yield the output from ``offset``; with ``follow``, keep going until the job ends.

    ``ended`` is set by the runner once the job is over and its final record is
    stored. A follower's stream ends then (after the log's END record, or, for a
    job whose shim died before writing one, once the log holds nothing more), so
    whoever asks for the job's status next sees how it ended. ``closing`` ends a
    follower early, when the service shuts down and leaves the job running.
    Whoever sets either then wakes the log's waiters through ``watcher``
    (``wake(log)`` or ``wake_all()``): a waiting follower looks at them only then.
    """
    try:
        reader = OutputLogReader(log)
    except FileNotFoundError:
        return  # the job never got as far as producing output
    with reader, watcher.watch(log) as wake:
        while True:
            wake.clear()  # before looking: whatever happens from here on sets it again
            was_over = ended.is_set()  # output written before the end is read below
            reader.skip_to(offset)
            for record in reader.records(merge=MAX_RECORD):
                if record.kind is Kind.END:
                    if follow:  # so that a follower sees the final record next
                        while not (ended.is_set() or closing.is_set()):
                            await wake.wait()
                            wake.clear()
                    return
                if record.kind is Kind.CAPPED:
                    yield OutputCapped(offset=record.offset, cap=record.number)
                elif record.kind is Kind.TRUNCATED:
                    yield OutputTruncated(record.offset, record.data.decode(errors="replace"))
                else:
                    assert record.stream is not None
                    yield OutputChunk(stream=record.stream, offset=record.offset, data=record.data)
            if not follow or was_over or closing.is_set():
                return
            await wake.wait()
