"""The limits a job gets: its own, else the server's default, else the maximum; never above it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from jobworker.isolation.limits import IOLimit, Limits
from jobworker.runner._job_limits import LimitPolicy
from jobworker.runner.errors import InvalidConfiguration, InvalidRequest

POLICY = LimitPolicy(
    defaults=Limits(memory_bytes=256 << 20, pids=500),
    maximum=Limits(cpu_cores=2.0, memory_bytes=1 << 30),
)


def test_what_a_job_asks_for_within_the_maximum_is_what_it_gets():
    asked = Limits(cpu_cores=1.5, memory_bytes=512 << 20, pids=50, io=(IOLimit("8:0", read_bps=1),))
    assert POLICY.apply(asked) == asked
    swapping = Limits(memory_bytes=64 << 20, memory_swap_bytes=1 << 30, memory_high_bytes=32 << 20)
    assert POLICY.apply(swapping) == replace(swapping, cpu_cores=2.0, pids=500)


def test_a_job_asking_for_nothing_gets_the_default_else_the_maximum():
    assert POLICY.apply(Limits()) == Limits(cpu_cores=2.0, memory_bytes=256 << 20, pids=500)


def test_no_policy_leaves_a_job_unlimited():
    assert LimitPolicy(Limits(), Limits()).apply(Limits()) == Limits()


@pytest.mark.parametrize(
    ("asked", "field", "message"),
    [
        (Limits(cpu_cores=2.5), "cpu", "2.5 cores is above the server's maximum of 2 cores"),
        (
            Limits(memory_bytes=(1 << 30) + 1),
            "memory",
            "1073741825 bytes is above the server's maximum of 1073741824 bytes",
        ),
        (
            Limits(memory_bytes=1 << 20, memory_swap_bytes=(1 << 30) + 1),
            "memory_swap",
            "1073741825 bytes is above the server's maximum memory of 1073741824 bytes",
        ),
    ],
)
def test_more_than_the_maximum_is_refused_naming_the_limit(asked, field, message):
    with pytest.raises(InvalidRequest, match=message) as refused:
        POLICY.apply(asked)
    assert refused.value.field == field


def test_values_that_are_not_numbers_are_left_to_the_jobs_validation():
    asked = Limits(memory_bytes="lots")  # type: ignore[arg-type]
    assert POLICY.apply(asked).memory_bytes == asked.memory_bytes


def test_a_default_above_the_maximum_is_a_configuration_error():
    with pytest.raises(InvalidConfiguration, match=r"default pids limit \(10\) is above"):
        LimitPolicy(Limits(pids=10), Limits(pids=5))
