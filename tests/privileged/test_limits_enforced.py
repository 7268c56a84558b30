"""The kernel enforces each limit: measured from the job's behaviour, not read back."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import pytest

from jobworker.isolation.launcher import RunningJob
from jobworker.isolation.limits import IOLimit, Limits
from jobworker.isolation.namespaces import Namespaces
from tests.privileged.helpers import Jobs, run

pytestmark = pytest.mark.privileged

BUSY_LOOP = ("sh", "-c", "while :; do :; done")


def cpu_usage_usec(job: RunningJob) -> int:
    usage = job.cgroup.usage()
    assert usage.cpu_user_usec is not None
    assert usage.cpu_system_usec is not None
    return usage.cpu_user_usec + usage.cpu_system_usec


async def cpu_share(job: RunningJob, seconds: float) -> float:
    """CPU time the job got per second of wall time, over ``seconds``."""
    await asyncio.sleep(1.0)  # let the busy loop start and throttling settle
    usage_before, wall_before = cpu_usage_usec(job), time.monotonic()
    await asyncio.sleep(seconds)
    usage_after, wall_after = cpu_usage_usec(job), time.monotonic()
    return (usage_after - usage_before) / 1e6 / (wall_after - wall_before)


def test_cpu_quota_holds_a_busy_loop_to_a_quarter_core(jobs: Jobs) -> None:
    async def scenario() -> tuple[float, float]:
        limited = await jobs.start(*BUSY_LOOP, limits=Limits(cpu_cores=0.25))
        unlimited = await jobs.start(*BUSY_LOOP)
        try:
            return await asyncio.gather(cpu_share(limited, 5.0), cpu_share(unlimited, 5.0))
        finally:
            await asyncio.gather(limited.stop(0.5), unlimited.stop(0.5))

    limited, unlimited = run(scenario())
    assert 0.18 <= limited <= 0.30, f"limited job got {limited:.3f} CPUs"
    # The same loop without a quota runs several times faster: the limit made the difference.
    assert unlimited > 2 * limited, f"unlimited {unlimited:.3f} vs limited {limited:.3f}"


def test_allocating_past_the_memory_limit_is_oom_killed(jobs: Jobs) -> None:
    hog = f"x = b'x' * ({64 << 20}); print('survived')"
    finished = run(jobs.complete(sys.executable, "-c", hog, limits=Limits(memory_bytes=32 << 20)))
    assert finished.outcome.signal == signal.SIGKILL
    assert finished.outcome.exit_code is None
    assert finished.outcome.oom_killed is True
    assert b"survived" not in finished.stdout
    assert finished.outcome.usage.memory_peak_bytes is not None
    assert finished.outcome.usage.memory_peak_bytes <= 32 << 20


def test_a_job_under_its_memory_limit_is_not_oom_killed(jobs: Jobs) -> None:
    modest = f"x = b'x' * ({8 << 20}); print('done')"
    finished = run(
        jobs.complete(sys.executable, "-c", modest, limits=Limits(memory_bytes=64 << 20))
    )
    assert finished.outcome.exit_code == 0
    assert finished.outcome.oom_killed is False
    assert finished.stdout == b"done\n"
    peak = finished.outcome.usage.memory_peak_bytes
    assert peak is not None
    assert peak >= 8 << 20


def test_pids_limit_contains_a_fork_bomb(jobs: Jobs) -> None:
    bomb = ("sh", "-c", "bomb() { bomb | bomb & }; bomb; sleep 600")

    async def scenario() -> tuple[list[int], float]:
        job = await jobs.start(*bomb, limits=Limits(pids=32))
        counts: list[int] = []
        # Sampled until the bomb is well under way, however slow the machine: it
        # must never be seen past its limit on the way there or after.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (len(counts) < 10 or max(counts) < 16):
            await asyncio.sleep(0.3)
            counts.append(int((job.cgroup.path / "pids.current").read_text()))
        # The host keeps working: another job starts and finishes while the bomb runs.
        started = time.monotonic()
        bystander = await jobs.complete("true", namespaces=Namespaces.none())
        assert bystander.outcome.exit_code == 0
        responsive_after = time.monotonic() - started
        outcome = await job.stop(1.0)
        assert outcome.usage.pids_peak == 32, outcome.usage
        assert not job.cgroup.path.exists()
        return counts, responsive_after

    counts, responsive_after = run(scenario())
    assert max(counts) <= 32, counts
    assert max(counts) >= 16, f"the bomb never got going: {counts}"
    assert responsive_after < 60


def test_io_write_bandwidth_is_throttled_on_a_real_disk(
    jobs: Jobs, scratch_block_device: str
) -> None:
    size = 3 << 20
    write = (
        "dd",
        "if=/dev/zero",
        f"of={scratch_block_device}",
        "bs=64k",
        f"count={size // (64 << 10)}",
        "oflag=direct",
        "status=none",
    )
    rate = 1 << 20
    limit = IOLimit(device=scratch_block_device, write_bps=rate)

    free = run(jobs.complete(*write, namespaces=Namespaces.none()))
    throttled = run(jobs.complete(*write, namespaces=Namespaces.none(), limits=Limits(io=(limit,))))

    for finished in (free, throttled):
        assert finished.outcome.exit_code == 0, finished.stderr
        written = finished.outcome.usage.io_write_bytes
        assert written is not None
        assert written >= size
    free_seconds = (free.outcome.ended_at - free.outcome.started_at).total_seconds()
    throttled_seconds = (throttled.outcome.ended_at - throttled.outcome.started_at).total_seconds()
    # 3 MiB at 1 MiB/s: the kernel lets the first slice through at once, so allow one second.
    assert throttled_seconds >= size / rate - 1.0, throttled_seconds
    assert throttled_seconds > 2 * free_seconds, (throttled_seconds, free_seconds)
