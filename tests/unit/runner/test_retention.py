"""Retention: each ended job is removed once it has been kept for the configured time.

The timers are the event loop's own; the removal callback records what it is
asked to remove (the runner's real removal, of a record and a run directory, is
tested on a real kernel in tests/privileged/test_runner.py).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from jobworker.isolation.limits import Limits
from jobworker.isolation.namespaces import Namespaces
from jobworker.isolation.outcome import utcnow
from jobworker.runner._retention import Retention
from jobworker.runner.errors import StorageError
from jobworker.runner.records import JobRecord, JobState

HOUR = 3600.0


def ended(job_id: str, ago: float) -> JobRecord:
    now = utcnow()
    return JobRecord(
        id=job_id,
        owner="alice",
        argv=("true",),
        working_directory="/",
        user="root",
        limits=Limits(),
        namespaces=Namespaces(),
        state=JobState.EXITED,
        created_at=now - timedelta(seconds=ago + 1),
        ended_at=now - timedelta(seconds=ago),
        exit_code=0,
    )


class Removals:
    """The removal callback: remembers each job it removed, and can be told to fail."""

    def __init__(self, fail: bool = False) -> None:
        self.removed: list[str] = []
        self.fail = fail
        self.changed = asyncio.Event()

    async def __call__(self, job_id: str) -> None:
        self.changed.set()
        if self.fail:
            raise StorageError("disk I/O error")
        self.removed.append(job_id)


def test_an_overdue_job_is_removed_at_start_and_a_recent_one_is_kept() -> None:
    async def scenario() -> list[str]:
        removals = Removals()
        retention = Retention(HOUR, removals)
        await retention.remove_or_schedule(ended("old", ago=2 * HOUR))
        await retention.remove_or_schedule(ended("recent", ago=60))
        await asyncio.sleep(0)  # a timer due now would run here
        retention.close()
        return removals.removed

    assert asyncio.run(scenario()) == ["old"]


def test_a_job_is_removed_when_its_time_is_up() -> None:
    async def scenario() -> list[str]:
        removals = Removals()
        retention = Retention(0.05, removals)
        retention.schedule(ended("job", ago=0))
        await asyncio.wait_for(removals.changed.wait(), timeout=10)
        await asyncio.sleep(0)
        retention.close()
        return removals.removed

    assert asyncio.run(scenario()) == ["job"]


def test_without_a_limit_nothing_is_ever_removed() -> None:
    async def scenario() -> list[str]:
        removals = Removals()
        retention = Retention(None, removals)
        await retention.remove_or_schedule(ended("ancient", ago=1000 * HOUR))
        retention.schedule(ended("ancient too", ago=1000 * HOUR))
        await asyncio.sleep(0.05)
        return removals.removed

    assert asyncio.run(scenario()) == []


def test_close_cancels_what_is_pending() -> None:
    async def scenario() -> list[str]:
        removals = Removals()
        retention = Retention(0.05, removals)
        retention.schedule(ended("job", ago=0))
        retention.close()
        await asyncio.sleep(0.2)  # well past the time it would have been removed
        return removals.removed

    assert asyncio.run(scenario()) == []


def test_a_failed_removal_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        retention = Retention(HOUR, Removals(fail=True))
        await retention.remove_or_schedule(ended("old", ago=2 * HOUR))

    asyncio.run(scenario())
    assert "job old could not be removed: disk I/O error" in caplog.text
