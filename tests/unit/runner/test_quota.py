"""The output quota of all jobs together: caps at start, what ended jobs keep, removals."""

from __future__ import annotations

import pytest

from jobworker.runner._quota import OutputQuota
from jobworker.runner.errors import CapacityExhausted

MIB = 1 << 20


def test_without_a_quota_every_job_gets_the_per_job_cap():
    quota = OutputQuota(total=None, per_job=64 * MIB)
    assert [quota.start(f"j{n}") for n in range(100)] == [64 * MIB] * 100


def test_a_job_starts_with_a_cap_of_at_most_what_the_quota_has_left():
    quota = OutputQuota(total=100 * MIB, per_job=40 * MIB)
    assert quota.start("a") == 40 * MIB
    assert quota.start("b") == 40 * MIB
    assert quota.start("c") == 20 * MIB  # all that is left while a and b run
    with pytest.raises(CapacityExhausted, match=r"output quota of 100\.0 MiB is used up"):
        quota.start("d")


def test_an_ended_job_holds_its_log_and_a_removed_one_nothing():
    quota = OutputQuota(total=100 * MIB, per_job=None)
    assert quota.start("a") == 100 * MIB  # no per-job cap: the whole quota
    quota.hold("a", 10 * MIB)  # it ended having written 10 MiB
    assert quota.used == 10 * MIB
    assert quota.start("b") == 90 * MIB
    quota.release("b")  # its start failed
    quota.release("a")  # removed
    assert quota.used == 0
    quota.release("never-started")
    assert quota.used == 0
