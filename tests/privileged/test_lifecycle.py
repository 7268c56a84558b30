"""Launching, failing to launch, stopping, outcomes, output and cleanup of real jobs."""

from __future__ import annotations

import asyncio
import gc
import os
import select
import signal
import sys
from pathlib import Path

import pytest

from jobworker.isolation.errors import (
    BadWorkingDirectory,
    CommandNotExecutable,
    CommandNotFound,
    InvalidSpec,
)
from jobworker.isolation.launcher import Launcher, RunningJob
from jobworker.isolation.limits import Limits
from jobworker.isolation.namespaces import Namespaces
from jobworker.isolation.outcome import Outcome
from jobworker.isolation.outputlog import Kind, OutputLogReader
from jobworker.isolation.rundir import RunDir
from tests.privileged.helpers import (
    Jobs,
    count_zombies,
    net_namespaces,
    open_descriptors,
    output_contains,
    run,
)

pytestmark = pytest.mark.privileged

BOTH = pytest.mark.parametrize(
    "namespaces", [Namespaces(), Namespaces.none()], ids=["isolated", "shared"]
)


@BOTH
def test_exit_code_and_separate_ordered_streams(jobs: Jobs, namespaces: Namespaces) -> None:
    script = "echo one; echo two >&2; echo three; echo four >&2; exit 3"
    finished = run(jobs.complete("sh", "-c", script, namespaces=namespaces))
    assert finished.outcome.exit_code == 3
    assert finished.outcome.signal is None
    assert finished.outcome.oom_killed is False
    assert finished.stdout == b"one\nthree\n"
    assert finished.stderr == b"two\nfour\n"


@BOTH
def test_a_signal_that_ends_the_job_is_reported(jobs: Jobs, namespaces: Namespaces) -> None:
    finished = run(jobs.complete("sh", "-c", "kill -TERM $$", namespaces=namespaces))
    assert finished.outcome.signal == signal.SIGTERM
    assert finished.outcome.signal_name == "SIGTERM"
    assert finished.outcome.exit_code is None


@BOTH
def test_the_command_runs_inside_its_cgroup_from_the_start(
    jobs: Jobs, namespaces: Namespaces
) -> None:
    spec = jobs.spec("cat", "/proc/self/cgroup", namespaces=namespaces)

    async def scenario() -> bytes:
        job = await jobs.launcher.launch(spec.validate())
        return (await jobs.finish(job)).stdout

    relative = jobs.launcher.host.job_group(spec.job_id).path.relative_to(jobs.launcher.host.mount)
    assert run(scenario()) == f"0::/{relative}\n".encode()


def test_environment_and_working_directory(jobs: Jobs, tmp_path: Path) -> None:
    os.environ["JOBWORKER_TEST_SECRET"] = "must-not-leak"
    try:
        spec = jobs.spec(
            "sh",
            "-c",
            'pwd; echo "$GREETING $JOBWORKER_JOB_ID $PATH ${JOBWORKER_TEST_SECRET:-}"',
            cwd=str(tmp_path),
            env={"GREETING": "hello"},
        )

        async def scenario() -> bytes:
            return (await jobs.finish(await jobs.launcher.launch(spec.validate()))).stdout

        lines = run(scenario()).decode().splitlines()
    finally:
        del os.environ["JOBWORKER_TEST_SECRET"]
    assert lines[0] == str(tmp_path)
    greeting, job_id, path = lines[1].split()
    assert (greeting, job_id) == ("hello", spec.job_id)
    assert "/usr/bin" in path.split(":")


@BOTH
@pytest.mark.parametrize(
    ("argv", "cwd", "error"),
    [
        (("no-such-command-anywhere",), "/", CommandNotFound),
        (("/no/such/file",), "/", CommandNotFound),
        (("/etc/passwd",), "/", CommandNotExecutable),
        (("/etc",), "/", CommandNotExecutable),
        (("true",), "/no/such/directory", BadWorkingDirectory),
        (("true",), "/etc/passwd", BadWorkingDirectory),
    ],
)
def test_a_command_that_cannot_start_fails_at_launch_with_the_reason(
    jobs: Jobs, namespaces: Namespaces, argv: tuple[str, ...], cwd: str, error: type[Exception]
) -> None:
    spec = jobs.spec(*argv, cwd=cwd, namespaces=namespaces)
    with pytest.raises(error) as raised:
        run(jobs.launcher.launch(spec.validate()))
    assert argv[0] in str(raised.value) or cwd in str(raised.value)
    assert not jobs.launcher.host.job_group(spec.job_id).path.exists()


def test_a_command_line_near_the_size_cap_reaches_the_command(jobs: Jobs) -> None:
    # Control characters and non-ASCII letters: JSON escapes make them several
    # times larger on the way to the shim than the 128 KiB the spec allows.
    argument = "\x01" * 60_000 + "é" * 30_000
    finished = run(jobs.complete("sh", "-c", 'printf %s "$1" | wc -c', "sh", argument))
    assert finished.outcome.exit_code == 0, finished.stderr
    assert int(finished.stdout) == len(argument.encode())


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        (Limits(cpu_cores=0), "cpu"),
        (Limits(cpu_cores=-1), "cpu"),
        (Limits(memory_bytes=1), "memory"),
        (Limits(pids=0), "pids"),
        (Limits(pids=1), "pids"),  # the pid namespace's init needs one of its own
    ],
)
def test_invalid_limits_are_refused_before_anything_exists(
    jobs: Jobs, limits: Limits, field: str
) -> None:
    spec = jobs.spec("true", limits=limits)
    with pytest.raises(InvalidSpec) as raised:
        spec.validate()
    assert raised.value.field == field
    assert not jobs.launcher.host.job_group(spec.job_id).path.exists()


def test_stop_kills_a_job_that_ignores_sigterm_after_the_grace_period(jobs: Jobs) -> None:
    stubborn = "trap '' TERM; echo ready; while :; do sleep 0.1; done"

    async def scenario() -> tuple[RunningJob, Outcome]:
        job = await jobs.start("sh", "-c", stubborn)
        await output_contains(job, b"ready")
        return job, await job.stop(grace=1.0)

    job, outcome = run(scenario())
    assert outcome.signal == signal.SIGKILL
    assert not job.cgroup.path.exists()


def test_stop_lets_a_job_exit_cleanly_on_sigterm(jobs: Jobs) -> None:
    polite = "trap 'echo bye; exit 7' TERM; echo ready; while :; do sleep 0.1; done"

    async def scenario() -> tuple[Outcome, bytes]:
        job = await jobs.start("sh", "-c", polite)
        await output_contains(job, b"ready")
        outcome = await job.stop(grace=60.0)
        return outcome, (await jobs.finish(job)).stdout

    outcome, stdout = run(scenario())
    assert outcome.exit_code == 7
    assert stdout == b"ready\nbye\n"


def test_signals_sent_to_the_job_reach_the_command_through_init(jobs: Jobs) -> None:
    script = "trap 'echo got-usr1; exit 0' USR1; echo ready; while :; do sleep 0.1; done"

    async def scenario() -> tuple[Outcome, bytes]:
        job = await jobs.start("sh", "-c", script)
        await output_contains(job, b"ready")
        assert job.signal(signal.SIGUSR1)
        finished = await jobs.finish(job)
        return finished.outcome, finished.stdout

    outcome, stdout = run(scenario())
    assert outcome.exit_code == 0
    assert stdout == b"ready\ngot-usr1\n"


def test_stop_kills_grandchildren_that_escaped_with_setsid(jobs: Jobs, tmp_path: Path) -> None:
    pid_file = tmp_path / "escaped.pid"
    script = f"setsid sh -c 'echo $$ > {pid_file}; exec sleep 600' & echo ready; sleep 600"

    async def scenario() -> int:
        # No PID namespace: the escaped process really lives among the host's processes.
        job = await jobs.start("sh", "-c", script, namespaces=Namespaces.none())
        await output_contains(job, b"ready")
        while not pid_file.exists() or not pid_file.read_text().strip():
            await asyncio.sleep(0.1)
        escaped = os.pidfd_open(int(pid_file.read_text()))
        await job.stop(grace=0.5)
        return escaped

    escaped = run(scenario())
    try:
        assert select.select([escaped], [], [], 10)[0], "the escaped process survived stop"
    finally:
        os.close(escaped)


def test_the_job_ends_with_its_main_process_and_leftovers_are_killed(
    jobs: Jobs, tmp_path: Path
) -> None:
    pid_file = tmp_path / "daemon.pid"
    # The main process exits only once the daemon has said who it is, however slow the VM.
    daemon = f"echo $$ > {pid_file}.new && mv {pid_file}.new {pid_file}; exec sleep 600"
    script = f"setsid sh -c '{daemon}' & until [ -e {pid_file} ]; do sleep 0.1; done; exit 0"
    finished = run(jobs.complete("sh", "-c", script, namespaces=Namespaces.none()))
    assert finished.outcome.exit_code == 0
    assert not Path(f"/proc/{pid_file.read_text().strip()}").exists()


def test_concurrent_stops_are_safe_and_agree(jobs: Jobs) -> None:
    async def scenario() -> list[Outcome]:
        job = await jobs.start("sleep", "600")
        return list(await asyncio.gather(*(job.stop(grace=0.5) for _ in range(3))))

    outcomes = run(scenario())
    assert outcomes[0].signal == signal.SIGTERM
    assert outcomes.count(outcomes[0]) == 3


def test_stop_on_a_finished_job_returns_its_outcome(jobs: Jobs) -> None:
    async def scenario() -> tuple[Outcome, Outcome]:
        job = await jobs.start("true")
        first = await job.wait()
        return first, await job.stop(grace=1.0)

    first, again = run(scenario())
    assert first == again
    assert first.exit_code == 0


def test_usage_is_reported(jobs: Jobs) -> None:
    busy = f"x = b'y' * ({16 << 20}); sum(range(3_000_000))"
    finished = run(jobs.complete(sys.executable, "-c", busy))
    usage = finished.outcome.usage
    assert usage.cpu_user_usec is not None
    assert usage.cpu_user_usec > 0
    assert usage.cpu_system_usec is not None
    assert usage.memory_peak_bytes is not None
    assert usage.memory_peak_bytes >= 16 << 20
    assert usage.pids_peak == 2  # init and the command
    assert finished.outcome.ended_at > finished.outcome.started_at


def test_output_past_the_cap_is_dropped_and_marked(jobs: Jobs) -> None:
    produce = "head -c 100000 /dev/zero; echo tail >&2"
    job_finished = run(jobs.complete("sh", "-c", produce, output_cap=10_000))
    assert job_finished.outcome.exit_code == 0
    assert len(job_finished.stdout) + len(job_finished.stderr) == 10_000


def test_cap_marker_and_dropped_count_are_in_the_log(jobs: Jobs) -> None:
    async def scenario() -> list[tuple[Kind, int]]:
        job = await jobs.start("head", "-c", "100000", "/dev/zero", output_cap=10_000)
        await job.wait()
        with OutputLogReader(job.output_log) as reader:
            return [
                (r.kind, r.number if r.kind is not Kind.DATA else len(r.data))
                for r in reader.records()
            ]

    records = run(scenario())
    assert sum(n for kind, n in records if kind is Kind.DATA) == 10_000
    assert [kind for kind, _ in records if kind is not Kind.DATA] == [Kind.CAPPED, Kind.END]
    assert records[-1] == (Kind.END, 90_000)


def test_a_restarted_service_adopts_a_running_job(jobs: Jobs) -> None:
    async def scenario() -> Outcome:
        job = await jobs.start("sh", "-c", "echo ready; sleep 600")
        await output_contains(job, b"ready")
        successor = Launcher(jobs.launcher.host)
        try:
            adopted = successor.adopt(job.job_id, job.run_dir)
            assert isinstance(adopted, RunningJob)
            assert adopted.pid == job.pid
            return await adopted.stop(grace=5.0)
        finally:
            await successor.close()
            await job.wait()  # releases the first handle's descriptors

    outcome = run(scenario())
    assert outcome.signal == signal.SIGTERM


def test_adopting_a_job_that_ended_meanwhile_gives_its_recorded_outcome(jobs: Jobs) -> None:
    async def scenario() -> Outcome | RunningJob:
        job = await jobs.start("sh", "-c", "exit 5")
        await job.wait()
        return jobs.launcher.adopt(job.job_id, job.run_dir)

    adopted = run(scenario())
    assert isinstance(adopted, Outcome)
    assert adopted.exit_code == 5


def test_adopting_a_job_whose_shim_died_kills_it_and_says_so(jobs: Jobs) -> None:
    async def scenario() -> tuple[RunningJob, Outcome | RunningJob]:
        job = await jobs.start("sleep", "600")
        stat = Path(f"/proc/{job.pid}/stat").read_text()
        shim_pid = int(stat.rsplit(")", 1)[1].split()[1])  # the parent of the job is its shim
        os.kill(shim_pid, signal.SIGKILL)
        await job.wait()
        return job, jobs.launcher.adopt(job.job_id, job.run_dir)

    job, adopted = run(scenario())
    assert isinstance(adopted, Outcome)
    assert adopted.exit_code is None
    assert adopted.signal is None
    assert adopted.note is not None
    assert "unknown" in adopted.note
    assert not RunDir(job.run_dir).outcome.exists()
    assert not Path(f"/proc/{job.pid}").exists()
    assert not job.cgroup.path.exists()


def test_many_jobs_leak_nothing(jobs: Jobs) -> None:
    """Hundreds here, with every kind of namespace; the runner's scale test adds a thousand."""

    def snapshot() -> tuple[list[str], int, int, int]:
        # Garbage of earlier tests in this process (clients, sockets) may hold descriptors
        # until it is collected; a leak is what survives a collection.
        gc.collect()
        return (
            open_descriptors(),
            len(Path("/proc/self/mountinfo").read_text().splitlines()),
            len(net_namespaces()),
            count_zombies(),
        )

    variants = [Namespaces(), Namespaces.none(), Namespaces(net=False)]

    async def one(index: int) -> Outcome:
        job = await jobs.start("sh", "-c", "echo out; echo err >&2", namespaces=variants[index % 3])
        return await job.wait()

    async def scenario(count: int) -> list[Outcome]:
        gate = asyncio.Semaphore(8)

        async def gated(index: int) -> Outcome:
            async with gate:
                return await one(index)

        return list(await asyncio.gather(*(gated(i) for i in range(count))))

    run(scenario(9))  # warm-up: first-use allocations are not leaks
    before = snapshot()
    outcomes = run(scenario(int(os.environ.get("JOBWORKER_LEAK_JOBS", "400"))))
    assert all(o.exit_code == 0 for o in outcomes)
    assert snapshot() == before
    assert not jobs.launcher.leftover_groups()
