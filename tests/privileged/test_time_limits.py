"""Time limits on a real kernel: the shim ends a job at its timeout or once its CPU time is used.

Windows are generous (the test VM is emulated and shared), but each test also checks
that the limit, not the command, ended the job: commands would run for a minute or
forever, and the record says which limit ended it.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime

import pytest

from jobworker.runner.errors import InvalidRequest
from jobworker.runner.records import JobRecord, JobState
from jobworker.runner.runner import Runner, RunnerConfig, StartRequest
from tests.privileged.helpers import run
from tests.privileged.runner_helpers import (
    CGROUP_ROOT,
    home_root,
    sh,
    until_ended,
    wait_for_output,
    with_runner,
)
from tests.privileged.test_cli import Cli, serve_cli

pytestmark = pytest.mark.privileged

SLOW_VM_SECONDS = 15.0
"""How late an end may come in the emulated, shared test VM; a minute-long command would
be later still."""
BUSY_LOOP = "while :; do :; done"


def wall_seconds(record: JobRecord) -> float:
    assert record.started_at is not None
    assert record.ended_at is not None
    return (record.ended_at - record.started_at).total_seconds()


def cpu_usec(record: JobRecord) -> int:
    assert record.usage is not None
    return (record.usage.cpu_user_usec or 0) + (record.usage.cpu_system_usec or 0)


async def finish(runner: Runner, job_id: str) -> JobRecord:
    await until_ended(runner, job_id)
    return await runner.get(job_id)


def test_a_timeout_ends_a_sleeping_job_at_its_deadline(config: RunnerConfig) -> None:
    async def body(runner: Runner) -> JobRecord:
        for bad in (0.0, -1.0, 366 * 24 * 3600.0):
            with pytest.raises(InvalidRequest) as refused:
                await runner.start(StartRequest(command="true", timeout=bad), owner="alice")
            assert refused.value.field == "timeout"
        job = await runner.start(StartRequest(command="sleep", args=("60",), timeout=2), "alice")
        return await finish(runner, job.id)

    record = with_runner(config, body)
    print(f"\ntimeout 2s: ended after {wall_seconds(record):.2f}s ({record.note})")
    assert record.state is JobState.EXITED
    assert record.timed_out
    assert not record.cpu_time_exceeded
    assert record.stopped_by is None
    assert record.signal == signal.SIGTERM  # sleep took the SIGTERM: no kill was needed
    assert 2.0 <= wall_seconds(record) < 2.0 + SLOW_VM_SECONDS
    assert record.note is not None
    assert "timeout (2s" in record.note
    assert record.time_limits.timeout == 2.0


def test_a_job_that_ignores_sigterm_is_killed_after_the_grace(config: RunnerConfig) -> None:
    async def body(runner: Runner) -> JobRecord:
        job = await runner.start(sh("trap '' TERM; echo ready; sleep 60", timeout=2), "alice")
        await wait_for_output(runner, job.id, b"ready")
        return await finish(runner, job.id)

    record = with_runner(replace(config, limit_grace_seconds=3), body)
    print(f"\ntimeout 2s, grace 3s, SIGTERM ignored: ended after {wall_seconds(record):.2f}s")
    assert record.state is JobState.EXITED
    assert record.timed_out
    assert record.signal == signal.SIGKILL
    assert 5.0 <= wall_seconds(record) < 5.0 + SLOW_VM_SECONDS
    assert record.note is not None
    assert "killed after the 3s grace period" in record.note


def test_the_deadline_holds_while_the_service_is_down_and_after_a_restart(
    config: RunnerConfig,
) -> None:
    jobs_group = CGROUP_ROOT / (config.cgroup_parent or "").lstrip("/") / "jobs"

    async def scenario() -> tuple[JobRecord, JobRecord, bool]:
        first = await Runner.open(config)
        early = await first.start(StartRequest(command="sleep", args=("600",), timeout=3), "al")
        late = await first.start(StartRequest(command="sleep", args=("600",), timeout=20), "al")
        await first.close()  # the jobs live on; nobody but their shims keeps time now
        started = time.monotonic()
        while (jobs_group / early.id).exists():
            assert time.monotonic() - started < 3 + SLOW_VM_SECONDS, "the timeout did not hold"
            await asyncio.sleep(0.2)  # tests may poll; the product must not
        second = await Runner.open(config)
        try:
            late_running = (await second.get(late.id)).state is JobState.RUNNING
            return await second.get(early.id), await finish(second, late.id), late_running
        finally:
            await second.close()

    early, late, late_running = run(scenario())
    print(
        f"\nended while down: {wall_seconds(early):.2f}s; re-adopted "
        f"({'running' if late_running else 'already over'} at the restart): "
        f"{wall_seconds(late):.2f}s"
    )
    for record, timeout in ((early, 3.0), (late, 20.0)):
        assert record.state is JobState.EXITED
        assert record.timed_out
        assert timeout <= wall_seconds(record) < timeout + SLOW_VM_SECONDS
        assert record.signal == signal.SIGTERM


@pytest.mark.parametrize(
    ("script", "busy"),
    [(BUSY_LOOP, 1), (f"{BUSY_LOOP} & {BUSY_LOOP}", 2)],
    ids=["one-busy-process", "two-busy-processes"],
)
def test_cpu_time_counts_every_process_and_ends_the_job(
    config: RunnerConfig, script: str, busy: int
) -> None:
    async def body(runner: Runner) -> JobRecord:
        job = await runner.start(sh(script, cpu_time=1), "alice")
        return await finish(runner, job.id)

    record = with_runner(config, body)
    used = cpu_usec(record)
    print(
        f"\ncpu-time 1s, {busy} busy: {used / 1e6:.3f}s of CPU in {wall_seconds(record):.2f}s "
        f"({record.note})"
    )
    assert record.state is JobState.EXITED
    assert record.cpu_time_exceeded
    assert not record.timed_out
    assert record.signal == signal.SIGTERM
    # Two processes counted apart (as RLIMIT_CPU does) would have used 2 s between them.
    assert 1_000_000 <= used < 1_500_000


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    with home_root() as homes:
        yield from serve_cli(tmp_path_factory.mktemp("cli"), homes)


def test_run_follow_exits_124_at_the_timeout_and_152_past_the_cpu_time(cli: Cli) -> None:
    timed = cli("run", "--follow", "--timeout", "2s", "--", "sleep", "600")
    assert timed.returncode == 124, timed.stderr
    assert "at its timeout" in timed.stderr
    job_id = timed.stderr.split("started job ", 1)[1].split()[0]
    status = cli.status(job_id)
    assert (status["timed_out"], status["cpu_time_exceeded"]) == (True, False)
    assert status["timeout_seconds"] == 2.0
    assert status["cpu_time_seconds"] is None
    assert status["state"] == "exited"
    ran = datetime.fromisoformat(str(status["ended_at"])) - datetime.fromisoformat(
        str(status["started_at"])
    )
    assert 2.0 <= ran.total_seconds() < 2.0 + SLOW_VM_SECONDS

    busy = cli("run", "--follow", "--cpu-time", "500ms", "--", "sh", "-c", BUSY_LOOP)
    assert busy.returncode == 152, busy.stderr
    assert "its CPU time used up" in busy.stderr
    text = cli("status", busy.stderr.split("started job ", 1)[1].split()[0])
    assert "time:       cpu time 0.5s\n" in text.stdout
