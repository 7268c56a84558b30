"""Translation between protobuf messages and the runner's types, both ways."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.duration_pb2 import Duration

from jobworker.api import _convert as convert
from jobworker.isolation.cgroups import Usage
from jobworker.isolation.limits import IOLimit, Limits
from jobworker.isolation.namespaces import Namespaces
from jobworker.isolation.outputlog import Stream
from jobworker.runner import defaults
from jobworker.runner.errors import InvalidRequest
from jobworker.runner.output import OutputCapped, OutputChunk
from jobworker.runner.records import JobRecord, JobState
from jobworker.v1 import jobworker_pb2 as pb

CREATED = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)


def test_a_job_id_is_canonicalised() -> None:
    job_id = uuid.uuid4()
    assert convert.job_id(str(job_id).upper()) == str(job_id)


@pytest.mark.parametrize("text", ["", "nope", "123", "../../etc/passwd"])
def test_a_malformed_job_id_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        convert.job_id(text)
    assert refused.value.field == "id"
    assert repr(text) in str(refused.value)


def test_a_start_request_keeps_unset_limits_unset() -> None:
    request = pb.StartJobRequest(
        command="make",
        args=["-j", "2"],
        limits=pb.Limits(memory_bytes=64 << 20, io=[pb.IoLimit(device="8:0", write_iops=50)]),
        namespaces={"net": False},
        environment={"A": "1"},
        user="nobody:nogroup",
    )
    start = convert.start_request(request, by_admin=False)
    assert start.command == "make"
    assert start.args == ("-j", "2")
    assert start.limits == Limits(memory_bytes=64 << 20, io=(IOLimit("8:0", write_iops=50),))
    assert start.namespaces == Namespaces(net=False)
    assert start.working_directory == "/"
    assert start.environment == {"A": "1"}
    assert start.user == "nobody:nogroup"
    assert not start.by_admin
    default = convert.start_request(pb.StartJobRequest(command="x"), by_admin=True)
    assert default.user == ""  # the server's default user
    assert default.by_admin


def test_namespaces_default_to_on_and_unknown_ones_are_refused() -> None:
    assert (
        convert.start_request(pb.StartJobRequest(command="x"), by_admin=False).namespaces
        == Namespaces()
    )
    with pytest.raises(InvalidRequest) as refused:
        convert.start_request(
            pb.StartJobRequest(command="x", namespaces={"user": True}), by_admin=False
        )
    assert refused.value.field == "namespaces"
    assert "unknown namespace user (known: pid, mount, net, uts, ipc)" in str(refused.value)


@pytest.mark.parametrize(
    ("grace", "seconds"),
    [
        (None, defaults.STOP_GRACE_SECONDS),
        (Duration(seconds=0), 0.0),
        (Duration(nanos=500_000_000), 0.5),
    ],
)
def test_grace_period_defaults_and_passes_through(grace: Duration | None, seconds: float) -> None:
    request = pb.StopJobRequest(id="x", grace_period=grace)
    assert convert.grace_seconds(request) == seconds


@pytest.mark.parametrize("grace", [Duration(seconds=-1), Duration(seconds=3601)])
def test_grace_period_out_of_range_is_refused(grace: Duration) -> None:
    with pytest.raises(InvalidRequest) as refused:
        convert.grace_seconds(pb.StopJobRequest(id="x", grace_period=grace))
    assert refused.value.field == "grace_period"


def record(**changes: object) -> JobRecord:
    base = JobRecord(
        id=str(uuid.UUID(int=1)),
        owner="bob",
        argv=("sh", "-c", "exit 3"),
        working_directory="/tmp",
        user="nobody",
        limits=Limits(cpu_cores=0.5, io=(IOLimit("/dev/vda", read_bps=1 << 20),)),
        namespaces=Namespaces(net=False),
        state=JobState.RUNNING,
        created_at=CREATED,
    )
    return base if not changes else JobRecord(**{**base.__dict__, **changes})


def test_a_running_job_has_no_end_and_no_exit_status() -> None:
    message = convert.job(record(started_at=CREATED + timedelta(milliseconds=5)))
    assert message.state == pb.JOB_STATE_RUNNING
    assert message.command == "sh"
    assert list(message.args) == ["-c", "exit 3"]
    assert message.user == "nobody"
    assert dict(message.namespaces) == {
        "pid": True, "mount": True, "net": False, "uts": True, "ipc": True,
    }  # fmt: skip
    assert message.limits.cpu_cores == 0.5
    assert not message.limits.HasField("memory_bytes")
    assert message.limits.io[0].read_bps == 1 << 20
    assert not message.limits.io[0].HasField("write_bps")
    assert message.create_time.ToDatetime(tzinfo=UTC) == CREATED
    assert message.start_time.ToDatetime(tzinfo=UTC) == CREATED + timedelta(milliseconds=5)
    assert not message.HasField("end_time")
    assert not message.HasField("exit_code")
    assert not message.HasField("signal")
    assert not message.HasField("usage")


def test_an_ended_job_carries_its_signal_name_oom_flag_and_usage() -> None:
    usage = Usage(cpu_user_usec=10, cpu_system_usec=0, memory_peak_bytes=1 << 20, pids_peak=None)
    message = convert.job(
        record(
            state=JobState.STOPPED,
            ended_at=CREATED,
            signal=9,
            oom_killed=True,
            usage=usage,
            stopped_by="carol",
        )
    )
    assert message.state == pb.JOB_STATE_STOPPED
    assert message.signal == 9
    assert message.signal_name == "SIGKILL"
    assert message.oom_killed
    assert message.stopped_by == "carol"
    assert message.usage.cpu_system_usec == 0
    assert message.usage.HasField("cpu_system_usec")  # zero is a value, not "unknown"
    assert not message.usage.HasField("pids_peak")
    assert not message.HasField("exit_code")


def test_an_exit_code_of_zero_is_present() -> None:
    message = convert.job(record(state=JobState.EXITED, ended_at=CREATED, exit_code=0))
    assert message.HasField("exit_code")
    assert message.exit_code == 0


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (JobState.RUNNING, pb.JOB_STATE_RUNNING),
        (JobState.EXITED, pb.JOB_STATE_EXITED),
        (JobState.STOPPED, pb.JOB_STATE_STOPPED),
        (JobState.LOST, pb.JOB_STATE_LOST),
    ],
)
def test_every_state_has_its_enum_value(state: JobState, expected: int) -> None:
    assert convert.job(record(state=state)).state == expected


def test_output_events_keep_their_stream_offset_and_cap() -> None:
    chunk = convert.output_event(OutputChunk(stream=Stream.STDERR, offset=7, data=b"oops"))
    assert chunk.WhichOneof("event") == "chunk"
    assert (chunk.chunk.stream, chunk.chunk.offset, chunk.chunk.data) == (
        pb.OUTPUT_STREAM_STDERR, 7, b"oops",
    )  # fmt: skip
    capped = convert.output_event(OutputCapped(offset=100, cap=100))
    assert capped.WhichOneof("event") == "capped"
    assert (capped.capped.offset, capped.capped.cap_bytes) == (100, 100)


def test_an_empty_chunk_at_offset_zero_is_still_a_chunk() -> None:
    # The chunk is filled in place: with offset and data at their defaults it is still set.
    message = convert.output_event(OutputChunk(stream=Stream.STDOUT, offset=0, data=b""))
    assert message.WhichOneof("event") == "chunk"
    assert pb.StreamJobOutputResponse.FromString(message.SerializeToString()) == message
