"""A full disk loses nothing: jobs run on, their end is recorded, and freeing space heals it.

Before: ENOSPC in a shim killed its job, so every printing job became ``lost``
with a note blaming a killed shim, and a final record that could not be stored
left its job ``running``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from jobworker.runner.errors import CapacityExhausted, StorageFull
from jobworker.runner.output import OutputCapped, OutputTruncated
from jobworker.runner.records import JobState
from jobworker.runner.runner import Runner, RunnerConfig
from tests.privileged.helpers import run
from tests.privileged.runner_helpers import collect, sh, until_ended

pytestmark = pytest.mark.privileged


@pytest.fixture
def small_disk(config: RunnerConfig) -> Iterator[RunnerConfig]:
    """The runner's state directory on a 16 MiB filesystem of its own."""
    state = config.state_dir
    state.mkdir(parents=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=700", "small", str(state)], check=True
    )
    try:
        yield replace(config, min_free_bytes=2 << 20, stop_jobs_on_close=True)
    finally:
        subprocess.run(["umount", "-l", str(state)], check=True)


def stored_state(state_dir: Path, job_id: str) -> str | None:
    with sqlite3.connect(state_dir / "jobworker.db") as db:
        row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else str(row[0])


def test_jobs_run_on_when_their_output_no_longer_fits(small_disk: RunnerConfig) -> None:
    state = small_disk.state_dir
    go = small_disk.homes / "go"  # a path jobs can reach (the test's own folders are private)

    async def scenario() -> None:
        runner = await Runner.open(small_disk)
        try:
            late = await runner.start(
                sh(f"while [ ! -e {go} ]; do sleep 0.1; done; head -c 8M /dev/zero; exit 3"),
                owner="bob",
            )
            filler = await runner.start(sh("head -c 30M /dev/zero; echo done >&2"), owner="bob")
            stdout, _stderr, markers = await collect(await runner.stream(filler.id))
            ended = await runner.get(filler.id)
            assert (ended.state, ended.exit_code) == (JobState.EXITED, 0), ended.note
            reason = f"output truncated: No space left on device on {state}"
            assert reason in (ended.note or "")
            assert markers == [OutputTruncated(offset=len(stdout), reason=reason)]
            assert 0 < len(stdout) < 16 << 20

            # The other job prints now, on a full disk: more than the filler's unused
            # reserve (at most 4 MiB), which it gave back when it ended.
            go.touch()
            await until_ended(runner, late.id)
            ended = await runner.get(late.id)
            assert (ended.state, ended.exit_code) == (JobState.EXITED, 3), ended.note
            assert "output truncated" in (ended.note or "")

            with pytest.raises(StorageFull, match="no new jobs while"):
                await runner.start(sh("true"), owner="bob")

            await runner.remove(filler.id)  # frees the space: everything works again
            for _ in range(300):  # records that waited for space are stored promptly
                if stored_state(state, late.id) == "exited":
                    break
                await asyncio.sleep(0.1)
            assert stored_state(state, late.id) == "exited"
            job = await runner.start(sh("echo fine"), owner="bob")
            out, err, markers = await collect(await runner.stream(job.id))
            assert (out, err, markers) == (b"fine\n", b"", [])
        finally:
            await runner.close()

    run(scenario())


def test_the_output_of_all_jobs_together_stays_within_the_quota(config: RunnerConfig) -> None:
    quota = replace(config, output_quota_bytes=1 << 20, output_cap_bytes=None)

    async def scenario() -> None:
        runner = await Runner.open(quota)
        try:
            big = await runner.start(sh("head -c 2M /dev/zero"), owner="bob")
            stdout, _, markers = await collect(await runner.stream(big.id))
            assert len(stdout) == 1 << 20
            assert markers == [OutputCapped(offset=1 << 20, cap=1 << 20)]
            with pytest.raises(CapacityExhausted, match=r"output quota of 1\.0 MiB is used up"):
                await runner.start(sh("true"), owner="carol")
            await runner.remove(big.id)
            job = await runner.start(sh("echo fits"), owner="carol")
            assert (await collect(await runner.stream(job.id)))[0] == b"fits\n"
        finally:
            await runner.close()

    run(scenario())
