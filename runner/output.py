"""Reading a job's output as a stream: from any offset, live, to any number of readers.

Each reader has its own file descriptor and position in the job's output log
(written by the job's shim, see ``jobworker.isolation.outputlog``), so readers
never wait for each other and the job never waits for any of them. A reader
that is following sleeps until inotify says the log grew or the runner says the
job ended. Memory per reader is bounded by one log record (1 MiB), whatever the
size of the output.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from jobworker.isolation.outputlog import Kind, OutputLogReader, Stream
from jobworker.runner.inotify import FileWatcher


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


OutputEvent = OutputChunk | OutputCapped


async def read_output(
    log: Path, offset: int, *, follow: bool, watcher: FileWatcher, ended: asyncio.Event
) -> AsyncIterator[OutputEvent]:
    """Yield the output from ``offset``; with ``follow``, keep going until the job ends.

    ``ended`` is set by the runner once the job is over. The stream ends at the
    log's END record, or, for a job whose shim died before writing one, once the
    job is over and the log holds nothing more.
    """
    try:
        reader = OutputLogReader(log)
    except FileNotFoundError:
        return  # the job never got as far as producing output
    with reader, watcher.watch(log) as changed:
        while True:
            was_over = ended.is_set()  # before reading: output written before the end is read
            changed.clear()
            reader.skip_to(offset)
            for record in reader.records():
                if record.kind is Kind.END:
                    return
                if record.kind is Kind.CAPPED:
                    yield OutputCapped(offset=record.offset, cap=record.number)
                else:
                    assert record.stream is not None
                    yield OutputChunk(stream=record.stream, offset=record.offset, data=record.data)
            if not follow or was_over:
                return
            await _either(changed, ended)


async def _either(first: asyncio.Event, second: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
