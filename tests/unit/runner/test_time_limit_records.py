"""Time limits through the API's conversion and the runner's records."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.duration_pb2 import Duration

from jobworker.api import _convert as convert
from jobworker.isolation.cgroups import Usage
from jobworker.isolation.outcome import Outcome
from jobworker.runner.records import JobRecord, JobState, TimeLimits
from jobworker.v1 import jobworker_pb2 as pb
from tests.records import a_record

CREATED = datetime(2026, 12, 7, 22, 0, tzinfo=UTC)


def running(time_limits: TimeLimits | None = None) -> JobRecord:
    return a_record(
        argv=("sleep", "60"),
        started_at=CREATED,
        time_limits=time_limits or TimeLimits(),
    )


def end(*, timed_out: bool = False, cpu_time_exceeded: bool = False) -> Outcome:
    return Outcome(
        exit_code=None,
        signal=15,
        oom_killed=False,
        usage=Usage(cpu_user_usec=1_000_000),
        started_at=CREATED,
        ended_at=CREATED + timedelta(seconds=2),
        note="the job reached its timeout",
        timed_out=timed_out,
        cpu_time_exceeded=cpu_time_exceeded,
    )


def test_a_start_request_carries_the_time_limits_in_seconds():
    request = pb.StartJobRequest(
        command="x", timeout=Duration(seconds=90), cpu_time=Duration(nanos=250_000_000)
    )
    converted = convert.start_request(request, by_admin=False)
    assert (converted.timeout, converted.cpu_time) == (90.0, 0.25)


def test_unset_time_limits_stay_unset_and_a_zero_duration_is_kept_for_validation():
    assert convert.start_request(pb.StartJobRequest(command="x"), by_admin=False).timeout is None
    zero = pb.StartJobRequest(command="x", timeout=Duration())
    assert convert.start_request(zero, by_admin=False).timeout == 0.0  # refused by the spec


def test_a_job_limited_in_time_that_reached_its_timeout():
    record = running(TimeLimits(timeout=2.0, cpu_time=1.5)).finished(end(timed_out=True))
    assert record.state is JobState.EXITED  # a limit ends a job as the OOM killer does
    message = convert.job(record)
    assert message.timeout == Duration(seconds=2)
    assert message.cpu_time == Duration(seconds=1, nanos=500_000_000)
    assert message.timed_out
    assert not message.cpu_time_exceeded


def test_a_job_without_time_limits_has_the_fields_unset():
    message = convert.job(running().finished(end()))
    assert not message.HasField("timeout")
    assert not message.HasField("cpu_time")
    assert not message.timed_out


@pytest.mark.parametrize(
    "record",
    [
        running(TimeLimits(timeout=2.0, cpu_time=0.5, grace=3.0)),
        running(TimeLimits(cpu_time=1.0)).finished(end(cpu_time_exceeded=True)),
        running(TimeLimits(timeout=1.0)).finished(end(timed_out=True)),
    ],
)
def test_a_record_keeps_its_time_limits_and_how_they_ended_it(record):
    assert JobRecord.from_json(record.to_json()) == record


def test_a_record_from_before_time_limits_has_none():
    data = json.loads(running().finished(end()).to_json())
    del data["time_limits"], data["timed_out"], data["cpu_time_exceeded"]
    record = JobRecord.from_json(json.dumps(data))
    assert record.time_limits == TimeLimits()
    assert (record.timed_out, record.cpu_time_exceeded) == (False, False)
