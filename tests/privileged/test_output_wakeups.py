"""Followers are woken once each record the shim writes is whole, on the test VM's kernel.

Privileged only in where it runs: it needs the kernel the service is tested on,
not root. Before Linux 6.7 splice(2) into a file raises no inotify event (the VM
runs 6.1, as Debian 12 does), and a follower sleeps until an event comes. If the
event for a record came only from its header, a follower that looked while the
payload was still being spliced would stay one record behind until the job
wrote again, which for a job that prints a line and goes quiet is forever.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

import pytest

from jobworker.isolation.outputlog import OutputLogWriter, Stream
from jobworker.runner._inotify import FileWatcher
from jobworker.runner.output import OutputChunk, read_output
from tests.privileged.helpers import run

pytestmark = pytest.mark.privileged

RECORD = 1 << 20  # a large record, so a follower often looks while it is being spliced
ROUNDS = 20


def test_a_follower_gets_each_record_without_waiting_for_the_next(tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    writer = OutputLogWriter(log, cap=None)
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, RECORD)

    async def scenario() -> list[int]:
        watcher = FileWatcher()
        ended, closing = asyncio.Event(), asyncio.Event()
        received = 0
        grown = asyncio.Event()

        async def follow() -> None:
            nonlocal received
            async for event in read_output(
                log, 0, follow=True, watcher=watcher, ended=ended, closing=closing
            ):
                assert isinstance(event, OutputChunk)
                received += len(event.data)
                grown.set()

        # The follower waits while each record is moved, as a live follower does.
        follower = asyncio.create_task(follow())
        totals: list[int] = []
        try:
            for round_number in range(1, ROUNDS + 1):
                os.write(write_end, bytes(RECORD))  # the pipe holds all of it
                await asyncio.to_thread(writer.move_from, Stream.STDOUT, read_end)
                # Nothing is written after this record: the follower must get it anyway.
                async with asyncio.timeout(20):
                    while received < round_number * RECORD:
                        grown.clear()
                        await grown.wait()
                totals.append(received)
        except TimeoutError:
            totals.append(received)
        finally:
            closing.set()
            watcher.wake(log)
            await follower
            watcher.close()
        return totals

    try:
        assert run(scenario()) == [RECORD * n for n in range(1, ROUNDS + 1)]
    finally:
        os.close(read_end)
        os.close(write_end)
        writer.close()
