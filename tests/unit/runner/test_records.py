"""records: the states a job record goes through, and its JSON form for the store."""

from __future__ import annotations

import dataclasses
import json
import signal
from datetime import UTC, datetime, timedelta, timezone

import pytest

from jobworker.isolation.cgroups import Usage
from jobworker.isolation.limits import IOLimit, Limits
from jobworker.isolation.namespaces import Namespaces
from jobworker.isolation.outcome import Outcome
from jobworker.runner.records import JobRecord, JobState
from tests.records import a_record

CREATED = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
STARTED = CREATED + timedelta(microseconds=250)
ENDED = STARTED + timedelta(seconds=3, microseconds=7)
USAGE = Usage(
    cpu_user_usec=1_500,
    cpu_system_usec=300,
    memory_peak_bytes=4 << 20,
    io_read_bytes=0,
    io_write_bytes=8192,
    pids_peak=3,
)


def running(**changes: object) -> JobRecord:
    fields = {"argv": ("sh", "-c", "exit 3"), "created_at": CREATED, "started_at": STARTED}
    return a_record(**(fields | changes))


def outcome(
    *,
    exit_code: int | None = None,
    signal: int | None = None,
    oom_killed: bool = False,
    note: str | None = None,
) -> Outcome:
    return Outcome(
        exit_code=exit_code,
        signal=signal,
        oom_killed=oom_killed,
        usage=USAGE,
        started_at=STARTED,
        ended_at=ENDED,
        note=note,
    )


# --- transitions -------------------------------------------------------------------


def test_a_new_record_is_running_and_not_ended() -> None:
    record = running()
    assert record.state is JobState.RUNNING
    assert not record.ended
    assert record.stopped_by is None


def test_an_exit_code_makes_the_job_exited() -> None:
    before = running()
    after = before.finished(outcome(exit_code=3))
    assert after.state is JobState.EXITED
    assert after.ended
    assert (after.exit_code, after.signal, after.oom_killed) == (3, None, False)
    assert after.usage == USAGE
    assert (after.started_at, after.ended_at) == (STARTED, ENDED)
    assert after.stopped_by is None
    # A transition makes a new record; the old one is untouched.
    assert before.state is JobState.RUNNING
    assert before.exit_code is None


def test_exit_code_zero_is_exited() -> None:
    after = running().finished(outcome(exit_code=0))
    assert after.state is JobState.EXITED
    assert after.exit_code == 0


def test_a_signal_from_elsewhere_makes_the_job_exited() -> None:
    after = running().finished(outcome(signal=signal.SIGKILL))
    assert after.state is JobState.EXITED
    assert (after.exit_code, after.signal, after.oom_killed) == (None, signal.SIGKILL, False)


def test_an_oom_kill_makes_the_job_exited_and_says_so() -> None:
    after = running().finished(outcome(signal=signal.SIGKILL, oom_killed=True))
    assert after.state is JobState.EXITED
    assert after.signal == signal.SIGKILL
    assert after.oom_killed


def test_a_requested_stop_makes_the_job_stopped() -> None:
    after = running().stop_requested("bob").finished(outcome(signal=signal.SIGTERM))
    assert after.state is JobState.STOPPED
    assert after.ended
    assert after.signal == signal.SIGTERM
    assert after.stopped_by == "bob"


def test_a_job_that_exits_by_itself_after_a_stop_request_is_still_stopped() -> None:
    after = running().stop_requested("bob").finished(outcome(exit_code=0))
    assert after.state is JobState.STOPPED
    assert after.exit_code == 0
    assert after.stopped_by == "bob"


def test_an_oom_kill_after_a_stop_request_is_stopped_and_keeps_oom_killed() -> None:
    after = running().stop_requested("bob").finished(outcome(signal=9, oom_killed=True))
    assert after.state is JobState.STOPPED
    assert after.oom_killed


@pytest.mark.parametrize("stopper", [None, "bob"])
def test_an_unobserved_end_makes_the_job_lost_and_keeps_the_note(stopper: str | None) -> None:
    record = running() if stopper is None else running().stop_requested(stopper)
    note = "the job's shim was killed; the exit status is unknown"
    after = record.finished(outcome(note=note))
    assert after.state is JobState.LOST
    assert after.ended
    assert (after.exit_code, after.signal) == (None, None)
    assert after.note == note
    assert after.stopped_by == stopper
    assert after.ended_at == ENDED


def test_stop_requested_keeps_the_first_stopper() -> None:
    first = running().stop_requested("bob")
    second = first.stop_requested("carol")
    assert first.stopped_by == "bob"
    assert second.stopped_by == "bob"
    assert second.state is JobState.RUNNING
    assert second.finished(outcome(signal=15)).stopped_by == "bob"


def test_stop_requested_makes_a_new_record() -> None:
    before = running()
    after = before.stop_requested("bob")
    assert before.stopped_by is None
    assert after.stopped_by == "bob"
    assert after.state is JobState.RUNNING
    assert not after.ended


# --- JSON --------------------------------------------------------------------------

FULL_LIMITS = Limits(
    cpu_cores=0.5,
    memory_bytes=256 << 20,
    pids=64,
    io=(
        IOLimit(device="8:0", read_bps=1 << 20, write_bps=2 << 20),
        IOLimit(device="/dev/vda", read_iops=100, write_iops=50),
    ),
)

ROUND_TRIP_CASES = {
    "running, nothing optional": running(started_at=None),
    "running, stop requested": running().stop_requested("bob"),
    "exited, every field": running(limits=FULL_LIMITS, namespaces=Namespaces(net=False, ipc=False))
    .stop_requested("bob")
    .finished(outcome(signal=9, oom_killed=True, note="killed by the OOM killer")),
    "exited, usage fields unknown": running().finished(
        dataclasses.replace(outcome(exit_code=1), usage=Usage())
    ),
    "lost, no namespaces": running(namespaces=Namespaces.none()).finished(
        outcome(note="the exit status is unknown")
    ),
    "timestamps without microseconds": running(
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
        started_at=datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC),
    ),
    "unicode argv and owner": running(owner="ünïcode", argv=("echo", "☃", "")),
}


@pytest.mark.parametrize("record", ROUND_TRIP_CASES.values(), ids=ROUND_TRIP_CASES.keys())
def test_json_round_trip(record: JobRecord) -> None:
    text = record.to_json()
    json.loads(text)  # plain JSON
    restored = JobRecord.from_json(text)
    assert restored == record
    assert restored.to_json() == text


@pytest.mark.parametrize("record", ROUND_TRIP_CASES.values(), ids=ROUND_TRIP_CASES.keys())
def test_json_is_what_dataclasses_asdict_gave_so_stored_records_stay_readable(
    record: JobRecord,
) -> None:
    expected = dataclasses.asdict(record)
    expected["state"] = record.state.value
    for name in ("created_at", "started_at", "ended_at"):
        moment = getattr(record, name)
        expected[name] = moment.isoformat() if moment else None
    assert record.to_json() == json.dumps(expected)


def test_a_record_stored_before_users_could_be_chosen_ran_as_root() -> None:
    data = json.loads(running().to_json())
    del data["user"]
    assert JobRecord.from_json(json.dumps(data)) == running(user="root")


def test_json_round_trip_keeps_types() -> None:
    record = ROUND_TRIP_CASES["exited, every field"]
    restored = JobRecord.from_json(record.to_json())
    assert isinstance(restored.argv, tuple)
    assert isinstance(restored.limits.io, tuple)
    assert all(isinstance(io, IOLimit) for io in restored.limits.io)
    assert restored.limits.io == FULL_LIMITS.io
    assert restored.namespaces == Namespaces(net=False, ipc=False)
    assert isinstance(restored.usage, Usage)
    assert restored.usage == USAGE
    assert restored.state is JobState.STOPPED
    assert restored.oom_killed is True


def test_json_timestamps_keep_microseconds_and_utc() -> None:
    record = ROUND_TRIP_CASES["exited, every field"]
    restored = JobRecord.from_json(record.to_json())
    for name in ("created_at", "started_at", "ended_at"):
        value = getattr(restored, name)
        assert value == getattr(record, name)
        assert value.utcoffset() == timedelta(0), name
    assert restored.created_at.microsecond == 123456
    assert restored.started_at is not None
    assert restored.started_at.microsecond == 123706
    assert restored.ended_at is not None
    assert restored.ended_at.microsecond == 123713


def test_json_keeps_a_non_utc_offset() -> None:
    tz = timezone(timedelta(hours=2))
    record = running(created_at=datetime(2024, 5, 6, 9, 8, 9, 1, tzinfo=tz))
    restored = JobRecord.from_json(record.to_json())
    assert restored.created_at.utcoffset() == timedelta(hours=2)
    assert restored.created_at == record.created_at


def test_json_has_no_environment() -> None:
    data = json.loads(running().to_json())
    assert "environment" not in data
    assert "env" not in data
