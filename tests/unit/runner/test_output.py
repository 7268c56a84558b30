"""output and inotify: streaming a job's output log to readers, live, woken by inotify.

The log is written by a real ``OutputLogWriter`` from the test, as the job's
shim would; the readers are real ``read_output`` generators on a real
``FileWatcher`` (inotify needs no privileges).

Not tested here: the inotify queue overflowing (``IN_Q_OVERFLOW`` wakes every
reader). It takes more than ``max_queued_events`` unread events, which the
watcher drains as soon as the loop runs, so it cannot be provoked reliably.
"""

from __future__ import annotations

import asyncio
import os
import struct
import tracemalloc
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any, TypeVar

import pytest

from jobworker.isolation.outputlog import MAX_RECORD, Kind, OutputLogWriter, Stream
from jobworker.runner._inotify import FileWatcher
from jobworker.runner.output import OutputCapped, OutputChunk, OutputEvent, read_output

OUT, ERR = Stream.STDOUT, Stream.STDERR
WAIT = 5.0
"""Generous bound for something that should happen at once."""
T = TypeVar("T")


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "output.log"


def run(main: Callable[[FileWatcher], Coroutine[Any, Any, T]]) -> T:
    """Run ``main(watcher)`` in a new event loop, with a watcher closed at the end."""

    async def with_watcher() -> T:
        watcher = FileWatcher()
        try:
            return await main(watcher)
        finally:
            watcher.close()

    return asyncio.run(with_watcher())


def per_write(writes: Sequence[tuple[Stream, bytes]], offset: int = 0) -> list[OutputEvent]:
    """One chunk per write from ``offset``: what a follower gets that reads each write
    before the next one is made."""
    expected: list[OutputEvent] = []
    position = 0
    for stream, data in writes:
        end = position + len(data)
        if end > offset:
            start = max(offset, position)
            expected.append(OutputChunk(stream, start, data[start - position :]))
        position = end
    return expected


def joined(events: Sequence[OutputEvent]) -> list[OutputEvent]:
    """``events`` with adjacent chunks of one stream joined into one, without bound.

    The stream a reader gets means exactly this, whichever way its chunks happened
    to be cut (that depends on what was written each time it looked).
    """
    result: list[OutputEvent] = []
    for event in events:
        last = result[-1] if result else None
        if (
            isinstance(event, OutputChunk)
            and isinstance(last, OutputChunk)
            and last.stream is event.stream
            and last.offset + len(last.data) == event.offset
        ):
            result[-1] = OutputChunk(last.stream, last.offset, last.data + event.data)
        else:
            result.append(event)
    return result


def chunks(writes: Sequence[tuple[Stream, bytes]], offset: int = 0) -> list[OutputEvent]:
    """What a reader from ``offset`` gets of writes that are all in the log when it reads:
    consecutive writes of one stream come as one chunk (for writes totalling below
    MAX_RECORD, the bound of a chunk)."""
    return joined(per_write(writes, offset))


async def collect(
    log: Path,
    watcher: FileWatcher,
    offset: int = 0,
    *,
    follow: bool,
    ended: asyncio.Event | None = None,
) -> list[OutputEvent]:
    stream = read_output(
        log,
        offset,
        follow=follow,
        watcher=watcher,
        ended=ended or asyncio.Event(),
        closing=asyncio.Event(),
    )
    return [event async for event in stream]


class Follower:
    """A reader running as its own task; what it yields lands in ``received``, then None."""

    def __init__(
        self, log: Path, watcher: FileWatcher, ended: asyncio.Event, offset: int = 0
    ) -> None:
        self.received: asyncio.Queue[OutputEvent | None] = asyncio.Queue()
        self.task = asyncio.create_task(self._follow(log, watcher, ended, offset))

    async def _follow(
        self, log: Path, watcher: FileWatcher, ended: asyncio.Event, offset: int
    ) -> None:
        async for event in read_output(
            log, offset, follow=True, watcher=watcher, ended=ended, closing=asyncio.Event()
        ):
            await self.received.put(event)
        await self.received.put(None)

    async def next(self) -> OutputEvent | None:
        return await asyncio.wait_for(self.received.get(), WAIT)

    async def rest(self) -> list[OutputEvent]:
        """Everything up to the end of the stream."""
        events = []
        while (event := await self.next()) is not None:
            events.append(event)
        await asyncio.wait_for(self.task, WAIT)
        return events


async def settle() -> None:
    """Let every ready task run until it blocks (no timers involved)."""
    for _ in range(20):
        await asyncio.sleep(0)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def declare_over(watcher: FileWatcher, log: Path, ended: asyncio.Event) -> None:
    """What the runner does once the job's final record is stored: set ``ended``, wake its
    followers (a waiting follower looks at ``ended`` only when woken)."""
    ended.set()
    watcher.wake(log)


def finish(writer: OutputLogWriter, watcher: FileWatcher, log: Path, ended: asyncio.Event) -> None:
    """End the job the way the runner sees it: the shim writes END, then the job is over."""
    writer.close()
    declare_over(watcher, log, ended)


def write_log(log: Path, writes: Sequence[tuple[Stream, bytes]]) -> None:
    """A finished job's whole log: every write, then END."""
    writer = OutputLogWriter(log, cap=None)
    for stream, data in writes:
        writer.write(stream, data)
    writer.close()


def leave_without_end(writer: OutputLogWriter) -> None:
    """Close the log the way a killed shim leaves it: no END record."""
    os.close(writer.fileno())


WRITES = [
    (OUT, b"hello "),
    (ERR, b"warning: something\n"),
    (OUT, b"world\n"),
    (OUT, b"\x00\xff binary \n"),
    (ERR, b"x"),
]


# --- following live ------------------------------------------------------------------


def test_a_follower_gets_each_chunk_as_it_is_appended_and_ends_at_end(log: Path) -> None:
    async def main(watcher: FileWatcher) -> None:
        writer = OutputLogWriter(log, cap=None)
        ended = asyncio.Event()
        follower = Follower(log, watcher, ended)
        await settle()
        assert follower.received.empty()
        for expected, (stream, data) in zip(per_write(WRITES), WRITES, strict=True):
            writer.write(stream, data)
            assert await follower.next() == expected
        writer.close()
        # At END the follower waits for the runner to say the job is over (its
        # final record stored), so whoever asks for the job's state next sees it.
        await settle()
        assert follower.received.empty()
        assert not follower.task.done()
        declare_over(watcher, log, ended)
        assert await follower.next() is None
        await asyncio.wait_for(follower.task, WAIT)
        assert watcher.watched() == 0

    run(main)


def test_a_follower_of_a_finished_job_gets_everything_and_ends(log: Path) -> None:
    write_log(log, WRITES)

    async def main(watcher: FileWatcher) -> list[OutputEvent]:
        ended = asyncio.Event()
        ended.set()
        return await asyncio.wait_for(collect(log, watcher, follow=True, ended=ended), WAIT)

    assert run(main) == chunks(WRITES)


def test_a_reader_whose_log_is_removed_meanwhile_still_reads_to_the_end(log: Path) -> None:
    line = bytes(range(100)) * 10
    writes = [(OUT, line)] * 3000  # several chunks: the removal comes between two of them
    write_log(log, writes)

    async def main(watcher: FileWatcher) -> list[OutputEvent]:
        ended = asyncio.Event()
        ended.set()
        stream = read_output(
            log, 0, follow=True, watcher=watcher, ended=ended, closing=asyncio.Event()
        )
        first = await anext(stream)
        log.unlink()  # as retention removes an ended job's run directory
        return [first, *[event async for event in stream]]

    assert joined(run(main)) == chunks(writes)


def test_without_follow_end_ends_the_stream_before_the_job_is_declared_over(log: Path) -> None:
    write_log(log, WRITES)

    async def main(watcher: FileWatcher) -> list[OutputEvent]:
        not_yet = asyncio.Event()
        return await asyncio.wait_for(collect(log, watcher, follow=False, ended=not_yet), WAIT)

    assert run(main) == chunks(WRITES)


def test_records_larger_than_max_record_arrive_whole_and_in_order(log: Path) -> None:
    big = bytes(range(256)) * (MAX_RECORD * 2 // 256 + 3)

    async def main(watcher: FileWatcher) -> list[OutputEvent]:
        writer = OutputLogWriter(log, cap=None)
        ended = asyncio.Event()
        follower = Follower(log, watcher, ended)
        writer.write(OUT, big)
        writer.write(ERR, b"tail")
        finish(writer, watcher, log, ended)
        return await follower.rest()

    events = run(main)
    out = [e for e in events if isinstance(e, OutputChunk) and e.stream is OUT]
    assert b"".join(e.data for e in out) == big
    assert all(len(e.data) <= MAX_RECORD for e in out)
    assert [e.offset for e in out] == [i * MAX_RECORD for i in range(len(out))]
    assert events[-1] == OutputChunk(ERR, len(big), b"tail")


def test_without_follow_a_reader_returns_what_is_there_now(log: Path) -> None:
    async def main(watcher: FileWatcher) -> None:
        writer = OutputLogWriter(log, cap=None)
        try:
            for stream, data in WRITES[:3]:
                writer.write(stream, data)
            # No END and the job has not ended: still returns at once.
            now = await asyncio.wait_for(collect(log, watcher, follow=False), WAIT)
            assert now == chunks(WRITES[:3])
            assert watcher.watched() == 0
            for stream, data in WRITES[3:]:
                writer.write(stream, data)
            later = await asyncio.wait_for(collect(log, watcher, follow=False), WAIT)
            assert later == chunks(WRITES)
        finally:
            writer.close()

    run(main)


def test_without_follow_a_log_with_nothing_yet_yields_nothing(log: Path) -> None:
    async def main(watcher: FileWatcher) -> list[OutputEvent]:
        writer = OutputLogWriter(log, cap=None)
        try:
            return await asyncio.wait_for(collect(log, watcher, follow=False), WAIT)
        finally:
            writer.close()

    assert run(main) == []


# --- offsets ---------------------------------------------------------------------------

OFFSET_WRITES = [(OUT, b"0123456789"), (ERR, b"abcdef"), (OUT, b"XYZ")]
TOTAL = sum(len(data) for _, data in OFFSET_WRITES)


@pytest.mark.parametrize("follow", [False, True])
@pytest.mark.parametrize("offset", [0, 1, 4, 9, 10, 11, 15, 16, 18, TOTAL, TOTAL + 5])
def test_reading_from_an_offset_starts_exactly_there(
    log: Path, offset: int, *, follow: bool
) -> None:
    write_log(log, OFFSET_WRITES)

    async def main(watcher: FileWatcher) -> list[OutputEvent]:
        ended = asyncio.Event()
        ended.set()
        return await asyncio.wait_for(
            collect(log, watcher, offset, follow=follow, ended=ended), WAIT
        )

    events = run(main)
    assert events == chunks(OFFSET_WRITES, offset)
    whole = b"".join(data for _, data in OFFSET_WRITES)
    assert b"".join(e.data for e in events if isinstance(e, OutputChunk)) == whole[offset:]


def test_following_from_an_offset_not_written_yet_waits_then_starts_exactly_there(
    log: Path,
) -> None:
    async def main(watcher: FileWatcher) -> None:
        writer = OutputLogWriter(log, cap=None)
        writer.write(OUT, b"abc")  # 0..3
        ended = asyncio.Event()
        follower = Follower(log, watcher, ended, offset=10)
        await settle()
        assert follower.received.empty()
        assert not follower.task.done()
        writer.write(OUT, b"defgh")  # 3..8: still before the offset
        await settle()
        writer.write(ERR, b"ij")  # 8..10: ends exactly at the offset
        await settle()
        writer.write(OUT, b"klmno")  # 10..15: starts exactly at the offset
        assert await follower.next() == OutputChunk(OUT, 10, b"klmno")
        finish(writer, watcher, log, ended)
        assert await follower.next() is None

    run(main)


def test_following_from_an_offset_in_a_record_not_written_yet(log: Path) -> None:
    async def main(watcher: FileWatcher) -> None:
        writer = OutputLogWriter(log, cap=None)
        ended = asyncio.Event()
        follower = Follower(log, watcher, ended, offset=7)
        await settle()
        writer.write(OUT, b"0123")
        await settle()
        writer.write(ERR, b"456789")  # straddles the offset
        assert await follower.next() == OutputChunk(ERR, 7, b"789")
        writer.write(OUT, b"!")
        assert await follower.next() == OutputChunk(OUT, 10, b"!")
        finish(writer, watcher, log, ended)
        assert await follower.next() is None

    run(main)


# --- chunks: what is already written, up to MAX_RECORD -----------------------------------


def test_output_already_written_comes_in_chunks_of_up_to_max_record(log: Path) -> None:
    line = bytes(range(100)) * 10  # 1000 bytes, as a shim writes one small pipe read
    writes = [*[(OUT, line)] * 3000, *[(ERR, b"e" * 10)] * 5, (OUT, b"last")]
    write_log(log, writes)

    async def main(watcher: FileWatcher) -> list[OutputEvent]:
        return await asyncio.wait_for(collect(log, watcher, follow=False), WAIT)

    events = run(main)
    full = MAX_RECORD // len(line) * len(line)  # as many whole records as fit in one chunk
    assert [(e.stream, len(e.data)) for e in events if isinstance(e, OutputChunk)] == [
        (OUT, full),
        (OUT, full),
        (OUT, 3000 * len(line) - 2 * full),
        (ERR, 50),
        (OUT, 4),
    ]
    assert joined(events) == chunks(writes)


def test_a_chunk_never_crosses_the_cap(log: Path) -> None:
    writer = OutputLogWriter(log, cap=10)
    for data in (b"1234", b"5678", b"abcd"):
        writer.write(OUT, data)
    writer.close()

    async def main(watcher: FileWatcher) -> list[OutputEvent]:
        return await asyncio.wait_for(collect(log, watcher, follow=False), WAIT)

    assert run(main) == [OutputChunk(OUT, 0, b"12345678ab"), OutputCapped(offset=10, cap=10)]


def test_from_an_offset_inside_a_record_the_rest_joins_what_follows(log: Path) -> None:
    writer = OutputLogWriter(log, cap=None)
    writer.write(OUT, b"0123456789")
    writer.write(OUT, b"abc")
    writer.close()

    async def main(watcher: FileWatcher) -> list[OutputEvent]:
        return await asyncio.wait_for(collect(log, watcher, 4, follow=False), WAIT)

    assert run(main) == [OutputChunk(OUT, 4, b"456789abc")]


# --- the output cap --------------------------------------------------------------------


def test_the_cap_is_reported_and_the_stream_ends_at_end(log: Path) -> None:
    async def main(watcher: FileWatcher) -> list[OutputEvent]:
        writer = OutputLogWriter(log, cap=10)
        ended = asyncio.Event()
        follower = Follower(log, watcher, ended)
        writer.write(OUT, b"12345678")
        assert await follower.next() == OutputChunk(OUT, 0, b"12345678")
        writer.write(ERR, b"abcdef")  # only "ab" fits
        writer.write(OUT, b"dropped")
        assert await follower.next() == OutputChunk(ERR, 8, b"ab")
        assert await follower.next() == OutputCapped(offset=10, cap=10)
        await settle()
        assert follower.received.empty()  # nothing after the cap...
        assert not follower.task.done()  # ...and the stream goes on until END
        finish(writer, watcher, log, ended)
        return await follower.rest()

    assert run(main) == []


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (0, [OutputChunk(OUT, 0, b"12345678"), OutputChunk(ERR, 8, b"ab")]),
        (9, [OutputChunk(ERR, 9, b"b")]),
        (10, []),
        (50, []),
    ],
)
def test_a_reader_from_any_offset_learns_of_the_cap(
    log: Path, offset: int, expected: list[OutputEvent]
) -> None:
    writer = OutputLogWriter(log, cap=10)
    writer.write(OUT, b"12345678")
    writer.write(ERR, b"abcdef")
    writer.close()

    async def main(watcher: FileWatcher) -> list[OutputEvent]:
        ended = asyncio.Event()
        ended.set()
        return await asyncio.wait_for(collect(log, watcher, offset, follow=True, ended=ended), WAIT)

    assert run(main) == [*expected, OutputCapped(offset=10, cap=10)]


# --- a log that never gets its END record ------------------------------------------------


def test_without_end_a_follower_returns_once_the_job_has_ended(log: Path) -> None:
    async def main(watcher: FileWatcher) -> list[OutputEvent]:
        writer = OutputLogWriter(log, cap=None)
        ended = asyncio.Event()
        follower = Follower(log, watcher, ended)
        writer.write(OUT, b"before the shim died\n")
        assert await follower.next() == OutputChunk(OUT, 0, b"before the shim died\n")
        leave_without_end(writer)
        await settle()
        assert not follower.task.done()  # the job might still be running
        declare_over(watcher, log, ended)
        return await follower.rest()

    assert run(main) == []


def test_output_appended_just_before_the_end_is_not_lost(log: Path) -> None:
    async def main(watcher: FileWatcher) -> list[OutputEvent]:
        writer = OutputLogWriter(log, cap=None)
        ended = asyncio.Event()
        follower = Follower(log, watcher, ended)
        writer.write(OUT, b"first")
        assert await follower.next() == OutputChunk(OUT, 0, b"first")
        await settle()  # the follower is now waiting
        # Appended, and then the job is declared over, with no chance for the
        # follower to run in between: the last output must still be delivered.
        writer.write(ERR, b"last words")
        leave_without_end(writer)
        declare_over(watcher, log, ended)
        return await follower.rest()

    assert run(main) == [OutputChunk(ERR, 5, b"last words")]


def test_without_end_a_reader_of_an_ended_job_reads_everything_and_returns(log: Path) -> None:
    writer = OutputLogWriter(log, cap=None)
    for stream, data in WRITES:
        writer.write(stream, data)
    # A torn last record: its header and part of its payload, as a killed shim may leave it.
    os.write(writer.fileno(), struct.pack("<BBxxI", Kind.DATA, OUT, 100) + b"partial")
    leave_without_end(writer)

    async def main(watcher: FileWatcher) -> list[OutputEvent]:
        ended = asyncio.Event()
        ended.set()
        return await asyncio.wait_for(collect(log, watcher, follow=True, ended=ended), WAIT)

    assert run(main) == chunks(WRITES)


# --- woken by inotify, not by polling ------------------------------------------------------


def live_timers(loop: asyncio.AbstractEventLoop) -> list[asyncio.TimerHandle]:
    """Timers pending in the loop (CPython keeps them in ``_scheduled``)."""
    scheduled: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
    return [timer for timer in scheduled if not timer.cancelled()]


def test_a_waiting_follower_is_woken_by_inotify_without_any_timer(log: Path) -> None:
    async def main(watcher: FileWatcher) -> None:
        loop = asyncio.get_running_loop()
        writer = OutputLogWriter(log, cap=None)
        ended = asyncio.Event()
        follower = Follower(log, watcher, ended)
        await settle()
        # Blocked: one inotify watch, nothing received, and no timer anywhere
        # in the loop that a polling reader would need to wake itself.
        assert watcher.watched() == 1
        assert follower.received.empty()
        assert not follower.task.done()
        assert live_timers(loop) == []
        for round_ in range(3):
            data = f"round {round_}\n".encode()
            writer.write(OUT, data)
            event = await follower.next()
            assert event == OutputChunk(OUT, round_ * len(data), data)
            await settle()
            assert live_timers(loop) == []
            assert watcher.watched() == 1
        finish(writer, watcher, log, ended)
        assert await follower.next() is None
        assert watcher.watched() == 0

    run(main)


def test_a_follower_is_woken_by_a_write_from_another_thread(log: Path) -> None:
    async def main(watcher: FileWatcher) -> list[OutputEvent]:
        writer = OutputLogWriter(log, cap=None)
        ended = asyncio.Event()
        follower = Follower(log, watcher, ended)
        await settle()
        for stream, data in WRITES:
            await asyncio.to_thread(writer.write, stream, data)
        await asyncio.to_thread(writer.close)
        declare_over(watcher, log, ended)
        return await follower.rest()

    assert joined(run(main)) == chunks(WRITES)


def test_waiting_followers_cost_no_task_of_their_own(log: Path) -> None:
    async def main(watcher: FileWatcher) -> None:
        writer = OutputLogWriter(log, cap=None)
        ended = asyncio.Event()
        followers = [Follower(log, watcher, ended) for _ in range(20)]
        for round_ in range(3):
            writer.write(OUT, b"more")
            for follower in followers:
                assert await follower.next() == OutputChunk(OUT, 4 * round_, b"more")
            await settle()
            # Each follower is its own task, waiting on one event: nothing else runs.
            assert len(asyncio.all_tasks()) == 1 + len(followers)
        finish(writer, watcher, log, ended)
        for follower in followers:
            assert await follower.rest() == []

    run(main)


def test_a_follower_woken_with_nothing_new_waits_again(log: Path) -> None:
    async def main(watcher: FileWatcher) -> None:
        writer = OutputLogWriter(log, cap=None)
        ended = asyncio.Event()
        follower = Follower(log, watcher, ended)
        await settle()
        for _ in range(3):
            watcher.wake(log)
            watcher.wake_all()
            await settle()
            assert follower.received.empty()
            assert not follower.task.done()
        writer.write(ERR, b"now")
        assert await follower.next() == OutputChunk(ERR, 0, b"now")
        finish(writer, watcher, log, ended)
        assert await follower.next() is None

    run(main)


def test_the_end_of_one_job_wakes_only_its_own_followers(tmp_path: Path) -> None:
    async def main(watcher: FileWatcher) -> None:
        logs = [tmp_path / "one.log", tmp_path / "two.log"]
        writers = [OutputLogWriter(path, cap=None) for path in logs]
        ended = [asyncio.Event(), asyncio.Event()]
        followers = [Follower(path, watcher, over) for path, over in zip(logs, ended, strict=True)]
        await settle()
        leave_without_end(writers[0])  # no END record to wake anyone: only the runner can
        declare_over(watcher, logs[0], ended[0])
        assert await followers[0].rest() == []
        await settle()
        assert not followers[1].task.done()
        finish(writers[1], watcher, logs[1], ended[1])
        assert await followers[1].rest() == []

    run(main)


# --- many readers, and readers that go away ----------------------------------------------


def test_many_concurrent_followers_all_get_the_whole_output(log: Path) -> None:
    writes = [(OUT if i % 3 else ERR, f"line {i} ".encode() * (i + 1)) for i in range(40)]

    async def main(watcher: FileWatcher) -> list[list[OutputEvent]]:
        writer = OutputLogWriter(log, cap=None)
        ended = asyncio.Event()
        followers = [Follower(log, watcher, ended) for _ in range(50)]
        await settle()
        assert watcher.watched() == 1  # one watch shared by all of them
        for i, (stream, data) in enumerate(writes):
            writer.write(stream, data)
            if i % 4 == 0:
                await settle()
        finish(writer, watcher, log, ended)
        results = [await follower.rest() for follower in followers]
        assert watcher.watched() == 0
        return results

    results = run(main)
    assert len(results) == 50
    for events in results:
        assert joined(events) == chunks(writes)


def test_an_abandoned_follower_releases_its_watch_and_descriptor(log: Path) -> None:
    async def main(watcher: FileWatcher) -> None:
        writer = OutputLogWriter(log, cap=None)
        try:
            writer.write(OUT, b"one")
            before = open_fds()
            stream = read_output(
                log, 0, follow=True, watcher=watcher, ended=asyncio.Event(), closing=asyncio.Event()
            )
            assert await anext(stream) == OutputChunk(OUT, 0, b"one")
            assert watcher.watched() == 1
            assert open_fds() == before + 1
            await stream.aclose()
            assert watcher.watched() == 0
            assert open_fds() == before
        finally:
            writer.close()

    run(main)


def test_a_follower_left_by_break_releases_its_watch_and_descriptor(log: Path) -> None:
    async def main(watcher: FileWatcher) -> None:
        writer = OutputLogWriter(log, cap=None)
        try:
            writer.write(OUT, b"one")
            writer.write(ERR, b"two")
            before = open_fds()
            stream = read_output(
                log, 0, follow=True, watcher=watcher, ended=asyncio.Event(), closing=asyncio.Event()
            )
            async with aclosing(stream):
                async for event in stream:
                    assert event == OutputChunk(OUT, 0, b"one")
                    assert watcher.watched() == 1
                    break
            assert watcher.watched() == 0
            assert open_fds() == before
            # Without aclosing, asyncio's async-generator finaliser closes it soon after.
            async for _event in read_output(
                log, 0, follow=True, watcher=watcher, ended=asyncio.Event(), closing=asyncio.Event()
            ):
                break
            await settle()
            assert watcher.watched() == 0
            assert open_fds() == before
        finally:
            writer.close()

    run(main)


def test_a_waiting_follower_that_is_cancelled_releases_its_watch_and_descriptor(
    log: Path,
) -> None:
    async def main(watcher: FileWatcher) -> None:
        writer = OutputLogWriter(log, cap=None)
        try:
            before = open_fds()
            follower = Follower(log, watcher, asyncio.Event())
            await settle()
            assert watcher.watched() == 1
            assert open_fds() == before + 1
            follower.task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await follower.task
            assert watcher.watched() == 0
            assert open_fds() == before
            # The watcher still serves new followers afterwards.
            writer.write(ERR, b"still here")
            ended = asyncio.Event()
            again = Follower(log, watcher, ended)
            assert await again.next() == OutputChunk(ERR, 0, b"still here")
        finally:
            finish(writer, watcher, log, ended)
        assert await again.next() is None

    run(main)


def test_followers_of_different_logs_have_separate_watches(tmp_path: Path) -> None:
    async def main(watcher: FileWatcher) -> None:
        logs = [tmp_path / f"job{i}.log" for i in range(3)]
        writers = [OutputLogWriter(path, cap=None) for path in logs]
        ended = asyncio.Event()
        followers = [Follower(path, watcher, ended) for path in logs]
        await settle()
        assert watcher.watched() == 3
        writers[1].write(OUT, b"only job 1")
        assert await followers[1].next() == OutputChunk(OUT, 0, b"only job 1")
        await settle()
        assert followers[0].received.empty()
        assert followers[2].received.empty()
        for writer in writers:
            writer.close()
        for path in logs:
            declare_over(watcher, path, ended)
        for follower in followers:
            await follower.rest()
        assert watcher.watched() == 0

    run(main)


def test_a_log_that_does_not_exist_yields_nothing(tmp_path: Path) -> None:
    async def main(watcher: FileWatcher) -> tuple[list[OutputEvent], list[OutputEvent]]:
        missing = tmp_path / "never-written.log"
        before = open_fds()
        followed = await asyncio.wait_for(collect(missing, watcher, follow=True), WAIT)
        read = await asyncio.wait_for(collect(missing, watcher, 5, follow=False), WAIT)
        assert watcher.watched() == 0
        assert open_fds() == before
        return followed, read

    assert run(main) == ([], [])


# --- memory ------------------------------------------------------------------------------


def test_a_follower_of_a_huge_log_keeps_its_memory_bounded(log: Path) -> None:
    block = bytes(range(256)) * (MAX_RECORD // 256)  # 1 MiB
    blocks = 200
    writer = OutputLogWriter(log, cap=None)
    for i in range(blocks):
        writer.write(ERR if i % 7 == 0 else OUT, block)
    writer.close()

    async def consume(stream: AsyncIterator[OutputEvent]) -> int:
        total = 0
        async for event in stream:
            assert isinstance(event, OutputChunk)
            assert event.offset == total
            total += len(event.data)
        return total

    async def main(watcher: FileWatcher) -> tuple[int, int]:
        tracemalloc.start()
        try:
            ended = asyncio.Event()
            ended.set()
            stream = read_output(
                log, 0, follow=True, watcher=watcher, ended=ended, closing=asyncio.Event()
            )
            total = await consume(stream)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return total, peak

    try:
        total, peak = run(main)
    finally:
        log.unlink()
    assert total == blocks * len(block)
    assert peak < 4 * MAX_RECORD, f"peak {peak / (1 << 20):.1f} MiB reading a 200 MiB log"


def test_closing_ends_a_follower_of_a_job_that_keeps_running(log: Path) -> None:
    async def main(watcher: FileWatcher) -> list[OutputEvent]:
        writer = OutputLogWriter(log, cap=None)
        closing = asyncio.Event()
        try:
            writer.write(OUT, b"still running")
            stream = read_output(
                log, 0, follow=True, watcher=watcher, ended=asyncio.Event(), closing=closing
            )
            received = [await anext(stream)]
            waiting = asyncio.ensure_future(anext(stream))
            await asyncio.sleep(0.05)
            assert not waiting.done(), "a follower of a running job must wait for more"
            closing.set()
            watcher.wake_all()  # as the runner does when it closes
            with pytest.raises(StopAsyncIteration):
                await asyncio.wait_for(waiting, WAIT)
            assert watcher.watched() == 0
            return received
        finally:
            writer.close()

    assert run(main) == [OutputChunk(OUT, 0, b"still running")]
