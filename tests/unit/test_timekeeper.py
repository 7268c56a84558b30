"""The shim's clock for time limits, against a cgroup tree in tmp_path and a clock we turn."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobworker.isolation._timekeeper import (
    MIN_CPU_CHECK_SECONDS,
    Expired,
    Step,
    TimeKeeper,
)
from jobworker.isolation.cgroups import JobCgroup
from jobworker.isolation.errors import InvalidSpec
from jobworker.isolation.timelimits import MAX_SECONDS, TimeLimits


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeGroup:
    """A job cgroup in tmp_path whose cpu.stat the test writes, as the kernel would."""

    def __init__(self, path: Path) -> None:
        path.mkdir()
        self.group = JobCgroup(path)
        self.used(0)

    def used(self, usec: int) -> None:
        (self.group.path / "cpu.stat").write_text(
            f"usage_usec {usec}\nuser_usec {usec}\nsystem_usec 0\n"
        )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def group(tmp_path: Path) -> FakeGroup:
    return FakeGroup(tmp_path / "job")


def keeper(limits: TimeLimits, group: FakeGroup, clock: Clock, cpus: int = 2) -> TimeKeeper:
    return TimeKeeper(limits, group.group.cpu_usage_usec, cpus=cpus, clock=clock)


def test_a_timeout_terminates_at_the_deadline_then_kills_after_the_grace(group, clock):
    kept = keeper(TimeLimits(timeout=2.0, grace=3.0), group, clock)
    assert kept.wait() == 2.0
    clock.now += 1.999
    assert kept.step() is None
    clock.now += 0.001
    assert kept.step() is Step.TERMINATE
    assert kept.expired is Expired.TIMEOUT
    assert kept.step() is None  # each step once
    assert kept.wait() == pytest.approx(3.0)
    clock.now += 3.0
    assert kept.step() is Step.KILL
    assert kept.killed
    assert kept.wait() is None
    assert kept.step() is None
    assert kept.note() == (
        "the job reached its timeout (2s of wall-clock time): it was sent SIGTERM and was "
        "killed after the 3s grace period"
    )


def test_a_job_that_ends_within_the_grace_is_not_said_to_be_killed(group, clock):
    kept = keeper(TimeLimits(timeout=1.0, grace=10.0), group, clock)
    clock.now += 1.0
    assert kept.step() is Step.TERMINATE
    note = kept.note()
    assert note is not None
    assert note.endswith("and ended within the grace period")


def test_a_zero_grace_kills_at_once(group, clock):
    kept = keeper(TimeLimits(timeout=1.0, grace=0.0), group, clock)
    clock.now += 1.5
    assert kept.step() is Step.TERMINATE
    assert kept.wait() == 0.0
    assert kept.step() is Step.KILL


def test_cpu_time_is_read_no_sooner_than_every_cpu_could_use_it_up(group, clock):
    kept = keeper(TimeLimits(cpu_time=1.0), group, clock, cpus=2)
    assert kept.wait() == 0.5  # two CPUs could use one second in half a second
    clock.now += 0.5
    group.used(400_000)
    assert kept.step() is None
    assert kept.wait() == pytest.approx(0.3)  # 0.6 s left, on two CPUs
    clock.now += 0.3
    group.used(999_000)
    assert kept.step() is None
    assert kept.wait() == pytest.approx(
        MIN_CPU_CHECK_SECONDS
    )  # 1 ms left: never sooner than the floor
    clock.now += MIN_CPU_CHECK_SECONDS
    group.used(1_000_000)
    assert kept.step() is Step.TERMINATE
    assert kept.expired is Expired.CPU_TIME
    note = kept.note()
    assert note is not None
    assert note.startswith("the job used up its CPU time (1s)")


def test_an_idle_job_is_looked_at_rarely(group, clock):
    kept = keeper(TimeLimits(cpu_time=3600.0), group, clock, cpus=4)
    assert kept.wait() == 900.0
    clock.now += 900.0
    assert kept.step() is None
    assert kept.wait() == 900.0


def test_the_earlier_of_two_limits_wakes_the_shim(group, clock):
    kept = keeper(TimeLimits(timeout=5.0, cpu_time=60.0), group, clock, cpus=1)
    assert kept.wait() == 5.0
    clock.now += 5.0
    assert kept.step() is Step.TERMINATE
    assert kept.expired is Expired.TIMEOUT


def test_a_removed_group_stops_the_cpu_checks(group, clock):
    kept = keeper(TimeLimits(cpu_time=1.0), group, clock)
    (group.group.path / "cpu.stat").unlink()
    group.group.path.rmdir()
    clock.now += 0.5
    assert kept.step() is None
    assert kept.wait() is None
    assert kept.expired is None


def test_a_long_wait_is_cut_to_what_poll_can_take(group, clock):
    assert keeper(TimeLimits(timeout=MAX_SECONDS), group, clock).wait() == 3600.0


@pytest.mark.parametrize(
    ("limits", "field", "reason"),
    [
        (TimeLimits(timeout=0), "timeout", "0 must be a duration of more than 0s"),
        (TimeLimits(timeout=-1.5), "timeout", "-1.5 must be a duration of more than 0s"),
        (TimeLimits(cpu_time=float("nan")), "cpu_time", "nan must be a duration of more than 0s"),
        (TimeLimits(cpu_time=float("inf")), "cpu_time", "inf must be a duration of more than 0s"),
        (TimeLimits(timeout=True), "timeout", "True must be a duration of more than 0s"),
        (
            TimeLimits(cpu_time=MAX_SECONDS + 1),
            "cpu_time",
            "3.1536e+07s is more than a year (3.1536e+07s), the longest allowed",
        ),
        (TimeLimits(timeout=1, grace=-1), "grace", "-1 must be a duration of 0s or more"),
    ],
)
def test_a_time_limit_is_a_positive_duration_of_at_most_a_year(limits, field, reason):
    with pytest.raises(InvalidSpec) as refused:
        limits.validate()
    assert (refused.value.field, refused.value.reason) == (field, reason)


def test_valid_limits_pass():
    TimeLimits().validate()
    TimeLimits(timeout=0.001, cpu_time=MAX_SECONDS, grace=0).validate()
    assert not TimeLimits().any
    assert TimeLimits(cpu_time=1).any
