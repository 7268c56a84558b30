"""The runner on a real kernel: lifecycle, records, streaming to many readers, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest

from jobworker.isolation.namespaces import Namespaces
from jobworker.isolation.outputlog import Stream
from jobworker.runner.errors import (
    CapacityExhausted,
    InvalidRequest,
    JobNotFound,
    StartFailed,
    StartFailure,
)
from jobworker.runner.output import OutputCapped, OutputChunk, OutputEvent, OutputTruncated
from jobworker.runner.records import JobState
from jobworker.runner.runner import SHUTDOWN_STOPPER, Runner, RunnerConfig, StartRequest
from tests.descriptors import descriptor_targets
from tests.privileged.helpers import count_zombies, run
from tests.privileged.runner_helpers import (
    CGROUP_ROOT,
    collect,
    digest,
    processes_in,
    sh,
    until_ended,
    wait_for_output,
    with_runner,
)

pytestmark = pytest.mark.privileged
T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]


def test_a_job_runs_to_its_end_and_its_record_says_how(config: RunnerConfig) -> None:
    async def body(runner: Runner) -> None:
        started = await runner.start(sh("echo hi; exit 4"), owner="alice")
        assert started.state is JobState.RUNNING
        assert started.owner == "alice"
        assert started.argv == ("sh", "-c", "echo hi; exit 4")
        assert started.started_at is not None
        assert started.started_at >= started.created_at
        uuid.UUID(started.id, version=4)
        await until_ended(runner, started.id)
        ended = await runner.get(started.id)
        assert ended.state is JobState.EXITED
        assert ended.exit_code == 4
        assert ended.signal is None
        assert ended.usage is not None
        assert ended.usage.cpu_user_usec is not None
        assert ended.ended_at is not None
        assert ended.ended_at > ended.started_at  # type: ignore[operator]
        assert ended.stopped_by is None

    with_runner(config, body)


def test_jobs_keep_the_open_file_limit_the_service_was_given(config: RunnerConfig) -> None:
    """The service lifts its own soft limit (it holds descriptors for every job and
    reader); its jobs get the limit it was started with, as systemd gives a service's.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    given = min(1024, hard)
    assert given < hard, "the test needs a hard limit above 1024 to tell them apart"

    async def body(runner: Runner) -> bytes:
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        job = await runner.start(sh("ulimit -Sn; ulimit -Hn"), owner="alice")
        stdout, _stderr, _caps = await collect(await runner.stream(job.id))
        return stdout

    resource.setrlimit(resource.RLIMIT_NOFILE, (given, hard))
    try:
        stdout = with_runner(config, body)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert stdout == f"{given}\n{hard}\n".encode()


def test_stop_records_who_stopped_and_is_idempotent(config: RunnerConfig) -> None:
    async def body(runner: Runner) -> None:
        job = await runner.start(sh("echo ready; sleep 600"), owner="alice")
        await wait_for_output(runner, job.id, b"ready")
        results = await asyncio.gather(
            runner.stop(job.id, grace=5, by="bob"), runner.stop(job.id, grace=5, by="carol")
        )
        assert results[0] == results[1]
        stopped = results[0]
        assert stopped.state is JobState.STOPPED
        assert stopped.stopped_by in {"bob", "carol"}
        assert stopped.signal == signal.SIGTERM
        assert await runner.stop(job.id, grace=5, by="dave") == stopped

        finished = await runner.start(sh("true"), owner="alice")
        await until_ended(runner, finished.id)
        again = await runner.stop(finished.id, grace=1, by="bob")
        assert again.state is JobState.EXITED
        assert again.stopped_by is None

    with_runner(config, body)


def test_start_errors_leave_no_record_and_no_files(config: RunnerConfig) -> None:
    async def body(runner: Runner) -> None:
        with pytest.raises(StartFailed) as failed:
            await runner.start(StartRequest(command="no-such-command"), owner="alice")
        assert failed.value.reason is StartFailure.COMMAND_NOT_FOUND
        with pytest.raises(StartFailed) as failed:
            await runner.start(StartRequest(command="true", working_directory="/nope"), "alice")
        assert failed.value.reason is StartFailure.BAD_WORKING_DIRECTORY
        with pytest.raises(InvalidRequest) as invalid:
            await runner.start(StartRequest(command=""), owner="alice")
        assert invalid.value.field == "command"
        with pytest.raises(InvalidRequest):
            await runner.start(StartRequest(command="true"), owner="")
        with pytest.raises(JobNotFound):
            await runner.get(str(uuid.uuid4()))
        with pytest.raises(JobNotFound):
            await runner.stream(str(uuid.uuid4()))
        assert (await runner.list_jobs(page_size=10)).records == ()
        assert list(runner.jobs_dir.iterdir()) == []

    with_runner(config, body)


def test_the_running_jobs_cap_is_enforced(config: RunnerConfig) -> None:
    async def body(runner: Runner) -> None:
        first = await runner.start(StartRequest(command="sleep", args=("600",)), "alice")
        second = await runner.start(StartRequest(command="sleep", args=("600",)), "alice")
        with pytest.raises(CapacityExhausted):
            await runner.start(StartRequest(command="true"), "alice")
        await runner.stop(first.id, grace=1, by="alice")
        third = await runner.start(StartRequest(command="true"), "alice")
        await until_ended(runner, third.id)
        await runner.stop(second.id, grace=1, by="alice")

    with_runner(replace(config, max_running_jobs=2), body)


def test_list_filters_by_owner(config: RunnerConfig) -> None:
    async def body(runner: Runner) -> None:
        mine = [await runner.start(sh("true"), owner="alice") for _ in range(2)]
        theirs = await runner.start(sh("true"), owner="bob")
        for job in [*mine, theirs]:
            await until_ended(runner, job.id)
        assert [r.id for r in (await runner.list_jobs("alice", page_size=10)).records] == [
            r.id for r in mine
        ]
        assert [r.id for r in (await runner.list_jobs("bob", page_size=10)).records] == [theirs.id]
        assert len((await runner.list_jobs(page_size=10)).records) == 3

    with_runner(config, body)


def test_many_concurrent_readers_get_identical_complete_output(config: RunnerConfig) -> None:
    lines = 200_000
    expected = "".join(f"{i}\n" for i in range(1, lines + 1)).encode()

    async def body(runner: Runner) -> list[tuple[str, int]]:
        job = await runner.start(sh(f"echo go >&2; seq 1 {lines}"), owner="alice")

        async def stdout_digest() -> tuple[str, int]:
            hasher, size = hashlib.sha256(), 0
            async for event in await runner.stream(job.id):
                if isinstance(event, OutputChunk) and event.stream is Stream.STDOUT:
                    hasher.update(event.data)
                    size += len(event.data)
            return hasher.hexdigest(), size

        results = await asyncio.gather(*(stdout_digest() for _ in range(40)))
        late = await stdout_digest()
        return [*results, late]

    results = with_runner(config, body)
    want = (hashlib.sha256(expected).hexdigest(), len(expected))
    assert all(result == want for result in results)


def test_streams_are_kept_apart_and_resume_from_an_offset(config: RunnerConfig) -> None:
    async def body(runner: Runner) -> None:
        job = await runner.start(sh("echo out1; echo err1 >&2; echo out2"), owner="alice")
        await until_ended(runner, job.id)
        stdout, stderr, caps = await collect(await runner.stream(job.id))
        assert (stdout, stderr, caps) == (b"out1\nout2\n", b"err1\n", [])
        everything = [e async for e in await runner.stream(job.id) if isinstance(e, OutputChunk)]
        total = b"".join(e.data for e in everything)
        tail = [e async for e in await runner.stream(job.id, offset=3, follow=False)]
        assert b"".join(e.data for e in tail if isinstance(e, OutputChunk)) == total[3:]
        assert isinstance(tail[0], OutputChunk)
        assert tail[0].offset == 3

    with_runner(config, body)


def test_a_stalled_reader_does_not_slow_the_job(config: RunnerConfig) -> None:
    size = 64 << 20

    async def body(runner: Runner) -> tuple[str, int]:
        job = await runner.start(
            StartRequest(command="head", args=("-c", str(size), "/dev/zero")), "a"
        )
        stalled = await runner.stream(job.id)
        first = await anext(stalled)
        # That reader now sits on its first chunk, yet the job runs to its end.
        await until_ended(runner, job.id)
        ended = await runner.get(job.id)
        assert ended.exit_code == 0
        return await digest(_chain_from(first, stalled))

    got = with_runner(config, body)
    assert got == (hashlib.sha256(bytes(size)).hexdigest(), size)


async def _chain_from(
    first: OutputEvent, rest: AsyncIterator[OutputEvent]
) -> AsyncIterator[OutputEvent]:
    yield first
    async for event in rest:
        yield event


def test_a_reader_that_goes_away_holds_nothing(config: RunnerConfig) -> None:
    async def body(runner: Runner) -> None:
        job = await runner.start(sh("echo ready; sleep 600"), owner="alice")
        before = _files_open()
        readers = [await runner.stream(job.id) for _ in range(10)]
        for reader in readers:
            assert isinstance(await anext(reader), OutputChunk)
        assert runner._watcher.watched() == 1
        for reader in readers:
            await reader.aclose()
        assert runner._watcher.watched() == 0
        assert _files_open() == before
        await runner.stop(job.id, grace=1, by="alice")

    with_runner(config, body)


def _files_open() -> list[str]:
    """What a reader could hold: every open descriptor but sockets.

    Sockets are the launcher's connections to its spare shims, which it tops up
    after a launch in its own time, so their number at any moment says nothing here.
    """
    return sorted(t for t in descriptor_targets() if not t.startswith("socket:"))


def test_output_past_the_cap_is_marked_for_readers(config: RunnerConfig) -> None:
    async def body(runner: Runner) -> tuple[bytes, list[OutputCapped | OutputTruncated]]:
        job = await runner.start(
            StartRequest(command="head", args=("-c", "5000", "/dev/zero")), "a"
        )
        stdout, _stderr, caps = await collect(await runner.stream(job.id))
        return stdout, caps

    stdout, caps = with_runner(replace(config, output_cap_bytes=1000), body)
    assert stdout == bytes(1000)
    assert caps == [OutputCapped(offset=1000, cap=1000)]


def peak_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_large_output_keeps_the_service_memory_flat(config: RunnerConfig) -> None:
    async def body(runner: Runner) -> tuple[int, int, int, tuple[str, int]]:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current size
        baseline = peak_rss_kib()
        # Eleven times what this process (the service) holds: 10 GB would take an
        # hour in the emulated test VM, so the test scales with the service instead.
        size = 11 * baseline * 1024
        job = await runner.start(
            StartRequest(command="head", args=("-c", str(size), "/dev/zero")), "a"
        )
        result = await digest(await runner.stream(job.id))
        return size, baseline, peak_rss_kib(), result

    size, baseline, peak, (sha, length) = with_runner(replace(config, output_cap_bytes=None), body)
    print(f"\n{size >> 20} MiB of output; service peak RSS {baseline} KiB before, {peak} KiB after")
    assert length == size
    assert sha == hashlib.sha256(bytes(size)).hexdigest()
    assert peak - baseline < 32 * 1024, f"service peak grew from {baseline} to {peak} KiB"


def test_a_clean_restart_re_adopts_running_jobs(config: RunnerConfig) -> None:
    async def scenario() -> None:
        first = await Runner.open(config)
        job = await first.start(sh("echo before; sleep 600"), owner="alice")
        await wait_for_output(first, job.id, b"before")
        await first.close()  # stop_jobs_on_close is off by default: the job lives on
        second = await Runner.open(config)
        try:
            adopted = await second.get(job.id)
            assert adopted.state is JobState.RUNNING
            assert second.running() == 1
            stopped = await second.stop(job.id, grace=5, by="bob")
            assert stopped.state is JobState.STOPPED
            stdout, _, _ = await collect(await second.stream(job.id))
            assert stdout == b"before\n"
        finally:
            await second.close()

    run(scenario())


def test_a_start_does_not_wait_for_a_removal_to_delete_files(config: RunnerConfig) -> None:
    """Record writes go through one database thread: deleting a removed job's files, up to
    an output cap's worth, happens elsewhere, or every start would wait behind it."""

    def fill(folder: Path, seconds: float) -> int:
        """Folders of 100 empty folders, as many as take ``seconds`` to delete; how many.

        Timed on a sample first: on the test VM's overlay, making a file costs many times
        what deleting it does, while a folder costs more to delete than to make.
        """
        sample = folder.with_name("sample")
        make(sample, 10)
        began = time.monotonic()
        shutil.rmtree(sample)
        per_folder = (time.monotonic() - began) / 10
        folders = max(int(seconds / per_folder), 10)
        make(folder, folders)
        return folders

    def make(folder: Path, folders: int) -> None:
        for outer in range(folders):
            for inner in range(100):
                (folder / str(outer) / str(inner)).mkdir(parents=True)

    def deleting(folder: Path, folders: int) -> bool:
        try:
            return len(os.listdir(folder)) < folders
        except FileNotFoundError:
            return True

    async def body(runner: Runner) -> None:
        old = await runner.start(sh("true"), owner="alice")
        await until_ended(runner, old.id)
        bulk = runner.jobs_dir / old.id / "bulk"
        folders = await asyncio.to_thread(fill, bulk, 5.0)
        removal = asyncio.create_task(runner.remove(old.id))
        while not deleting(bulk, folders):
            await asyncio.sleep(0.001)
        new = await runner.start(sh("true"), owner="alice")
        assert bulk.exists(), "the start returned only once the removal's files were gone"
        assert not removal.done()
        await removal
        assert not (runner.jobs_dir / old.id).exists()
        with pytest.raises(JobNotFound):
            await runner.get(old.id)
        await until_ended(runner, new.id)

    with_runner(config, body)


def test_ended_jobs_are_kept_for_the_configured_time_then_removed(config: RunnerConfig) -> None:
    async def removed(runner: Runner, job_id: str) -> bool:
        try:
            await runner.get(job_id)
        except JobNotFound:
            return not (runner.jobs_dir / job_id).exists()
        return False

    async def scenario() -> None:
        first = await Runner.open(replace(config, keep_ended_seconds=None))
        try:
            old = await first.start(sh("echo old"), owner="alice")
            await until_ended(first, old.id)
        finally:
            await first.close()
        # Kept while its time is not up: the record, and the output too.
        second = await Runner.open(replace(config, keep_ended_seconds=3600))
        try:
            assert (await second.get(old.id)).state is JobState.EXITED
            stdout, _, _ = await collect(await second.stream(old.id))
            assert stdout == b"old\n"
        finally:
            await second.close()
        # Overdue when the service starts: gone once it has opened.
        third = await Runner.open(replace(config, keep_ended_seconds=0))
        try:
            assert await removed(third, old.id)
            assert old.id not in [r.id for r in (await third.list_jobs(page_size=10)).records]
            # A job that ends while the service runs goes when its time is up.
            new = await third.start(sh("echo new"), owner="alice")
            await until_ended(third, new.id)
            for _ in range(600):
                if await removed(third, new.id):
                    break
                await asyncio.sleep(0.05)
            assert await removed(third, new.id)
        finally:
            await third.close()

    run(scenario())


def test_close_can_stop_every_job(config: RunnerConfig) -> None:
    async def scenario() -> None:
        first = await Runner.open(replace(config, stop_jobs_on_close=True))
        jobs = [await first.start(sh("sleep 600"), owner="alice") for _ in range(3)]
        await first.close()
        second = await Runner.open(config)
        try:
            for job in jobs:
                record = await second.get(job.id)
                assert record.state is JobState.STOPPED
                assert record.stopped_by == SHUTDOWN_STOPPER
            assert second.running() == 0
        finally:
            await second.close()

    run(scenario())


def start_service(config: RunnerConfig, *command: str) -> tuple[subprocess.Popen[str], str]:
    """The service in its own process, so that it can really be killed with SIGKILL."""
    service = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.privileged.service_process",
            str(config.state_dir),
            config.cgroup_parent or "",
            str(config.homes),
            "--",
            *command,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert service.stdout is not None
    job_id = service.stdout.readline().strip()
    assert job_id, "the service process did not start its job"
    return service, job_id


def test_kill_9_of_the_service_loses_no_output_and_leaves_no_orphans(config: RunnerConfig) -> None:
    counter = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.02; done"
    service, job_id = start_service(config, "sh", "-c", counter)

    async def scenario() -> bytes:
        runner = await Runner.open(config)  # only to wait for output the clean way
        await wait_for_output(runner, job_id, b"\n30\n")
        await runner.close()
        service.send_signal(signal.SIGKILL)
        service.wait()
        assert service.stdout is not None
        service.stdout.close()
        successor = await Runner.open(config)
        try:
            record = await successor.get(job_id)
            assert record.state is JobState.RUNNING
            await wait_for_output(successor, job_id, b"\n200\n")  # still running and captured
            stopped = await successor.stop(job_id, grace=5, by="alice")
            assert stopped.state is JobState.STOPPED
            stdout, _, _ = await collect(await successor.stream(job_id))
            return stdout
        finally:
            await successor.close()

    stdout = run(scenario())
    numbers = [int(n) for n in stdout.split()]
    assert numbers == list(range(1, len(numbers) + 1)), "output was lost or reordered"
    assert len(numbers) >= 200


def test_a_job_that_ended_while_the_service_was_down_keeps_its_exit_code(
    config: RunnerConfig,
) -> None:
    service, job_id = start_service(config, "sh", "-c", "echo done; exit 9")
    service.send_signal(signal.SIGKILL)
    service.wait()
    assert service.stdout is not None
    service.stdout.close()

    async def body(runner: Runner) -> None:
        await until_ended(runner, job_id)
        record = await runner.get(job_id)
        assert record.state is JobState.EXITED
        assert record.exit_code == 9
        stdout, _, _ = await collect(await runner.stream(job_id))
        assert stdout == b"done\n"

    with_runner(config, body)


def test_a_job_whose_shim_died_while_the_service_was_down_is_lost(config: RunnerConfig) -> None:
    service, job_id = start_service(config, "sleep", "600")
    service.send_signal(signal.SIGKILL)
    service.wait()
    assert service.stdout is not None
    service.stdout.close()
    for pid in processes_in(config.cgroup_parent or ""):
        # The service's spare shims exit now that it is gone: one may vanish meanwhile.
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "jobworker-shim":
                os.kill(pid, signal.SIGKILL)

    async def body(runner: Runner) -> None:
        record = await runner.get(job_id)
        assert record.state is JobState.LOST
        assert record.exit_code is None
        assert record.note is not None
        assert "unknown" in record.note
        assert runner.running() == 0

    with_runner(config, body)


def test_a_job_cgroup_without_a_record_is_removed_at_start(config: RunnerConfig) -> None:
    async def scenario() -> None:
        first = await Runner.open(config)
        job = await first.start(sh("sleep 600"), owner="alice")
        await first.close()
        (config.state_dir / "jobworker.db").unlink()  # as if the record had never been written
        for suffix in ("-wal", "-shm"):
            (config.state_dir / f"jobworker.db{suffix}").unlink(missing_ok=True)
        second = await Runner.open(config)
        try:
            assert second.running() == 0
            with pytest.raises(JobNotFound):
                await second.get(job.id)
            assert not (second.jobs_dir / job.id).exists()
        finally:
            await second.close()

    run(scenario())


def test_many_jobs_and_a_hundred_readers_in_one_process(config: RunnerConfig) -> None:
    """1,000 running jobs by default (JOBWORKER_SCALE_JOBS; scripts/test uses 300 in its VM)."""
    count = int(os.environ.get("JOBWORKER_SCALE_JOBS", "1000"))

    async def body(runner: Runner) -> tuple[int, int, int]:
        # One job first, followed to its end: what the runner opens once and keeps (the
        # inotify instance, executor threads) is then counted before, not as a leak.
        warm_up = await runner.start(sh("echo up"), owner="user0")
        await collect(await runner.stream(warm_up.id))
        await until_ended(runner, warm_up.id)
        gc.collect()  # an earlier test's garbage must not close fds in the middle of the count
        fds_before, zombies_before = len(os.listdir("/proc/self/fd")), count_zombies()
        threads_before = threading.active_count()
        gate = asyncio.Semaphore(16)

        async def start(index: int) -> str:
            async with gate:
                # The service's load is the same whatever the namespaces; without pid
                # and net each job is two processes fewer to emulate in the test VM.
                request = sh("echo up; exec sleep 600", namespaces=Namespaces(pid=False, net=False))
                return (await runner.start(request, owner=f"user{index % 10}")).id

        ids = await asyncio.gather(*(start(i) for i in range(count)))
        assert runner.running() == count
        rss = int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0])
        threads = threading.active_count() - threads_before

        async def read(job_id: str) -> bytes:
            stdout, _, _ = await collect(await runner.stream(job_id))
            return stdout

        readers = [asyncio.ensure_future(read(job_id)) for job_id in ids[:100]]
        await asyncio.gather(*(runner.stop(job_id, grace=5, by="t") for job_id in ids))
        outputs = await asyncio.gather(*readers)
        assert all(output == b"up\n" for output in outputs)
        # A thousand jobs later, nothing is left behind.
        assert len(os.listdir("/proc/self/fd")) == fds_before
        assert count_zombies() == zombies_before
        return rss, threads, len((await runner.list_jobs(page_size=count + 10)).records)

    rss, threads, listed = with_runner(replace(config, max_running_jobs=count), body)
    print(f"\nservice RSS with {count} running jobs: {rss / 1024:.1f} MiB; new threads: {threads}")
    assert listed == count + 1, "every job is listed, the warm-up's too"
    # No thread per job: at most asyncio's default executor (its size depends on the
    # CPUs, not on the jobs) and the network-namespace thread may have started.
    assert threads <= min(32, (os.cpu_count() or 1) + 4) + 1, "no thread per job"
    jobs_group = CGROUP_ROOT / (config.cgroup_parent or "").lstrip("/") / "jobs"
    assert not [group for group in jobs_group.iterdir() if group.is_dir()], "job cgroups left"
