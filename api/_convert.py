"""Translation between the protobuf messages and the runner's types.

Requests are checked here for what only the API can know (a job id's format,
namespace names, the grace period's range); everything about the job itself
is validated by the runner and the isolation layer, once.
"""

from __future__ import annotations

import signal
import uuid
from datetime import datetime

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from jobworker.runner import defaults
from jobworker.runner.errors import InvalidRequest
from jobworker.runner.output import OutputCapped, OutputEvent, OutputTruncated, Stream
from jobworker.runner.records import (
    Bind,
    Filesystem,
    IOLimit,
    JobRecord,
    JobState,
    Limits,
    Namespaces,
    Privileges,
    Tmpfs,
    Usage,
)
from jobworker.runner.runner import StartRequest
from jobworker.v1 import jobworker_pb2 as pb

MAX_GRACE_SECONDS = 3600.0

_STATES = {
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.EXITED: pb.JOB_STATE_EXITED,
    JobState.STOPPED: pb.JOB_STATE_STOPPED,
    JobState.LOST: pb.JOB_STATE_LOST,
}
_STREAMS = {Stream.STDOUT: pb.OUTPUT_STREAM_STDOUT, Stream.STDERR: pb.OUTPUT_STREAM_STDERR}


def job_id(text: str) -> str:
    """A job id in its canonical form, or INVALID_ARGUMENT."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise InvalidRequest("id", f"{text!r} is not a job id (a UUID)") from None


def start_request(request: pb.StartJobRequest, *, by_admin: bool) -> StartRequest:
    """The runner's request for a StartJob call; ``by_admin`` if the caller is an admin."""
    return StartRequest(
        command=request.command,
        args=tuple(request.args),
        limits=_limits(request.limits),
        namespaces=_namespaces(dict(request.namespaces)),
        working_directory=request.working_directory or "/",
        environment=dict(request.environment),
        user=request.user,
        stdin=request.stdin,
        filesystem=_filesystem(request.filesystem),
        privileges=_privileges(request.privileges),
        by_admin=by_admin,
        timeout=_seconds(request.timeout) if request.HasField("timeout") else None,
        cpu_time=_seconds(request.cpu_time) if request.HasField("cpu_time") else None,
    )


def grace_seconds(request: pb.StopJobRequest) -> float:
    """The grace period of a StopJob call, defaulted and bounded."""
    if not request.HasField("grace_period"):
        return defaults.STOP_GRACE_SECONDS
    seconds = request.grace_period.ToTimedelta().total_seconds()
    if not 0 <= seconds <= MAX_GRACE_SECONDS:
        raise InvalidRequest("grace_period", f"{seconds:g}s is outside 0s..{MAX_GRACE_SECONDS:g}s")
    return seconds


def _limits(message: pb.Limits) -> Limits:
    return Limits(
        cpu_cores=message.cpu_cores if message.HasField("cpu_cores") else None,
        memory_bytes=message.memory_bytes if message.HasField("memory_bytes") else None,
        pids=message.pids if message.HasField("pids") else None,
        memory_high_bytes=message.memory_high_bytes
        if message.HasField("memory_high_bytes")
        else None,
        memory_swap_bytes=message.memory_swap_bytes
        if message.HasField("memory_swap_bytes")
        else None,
        cpuset=message.cpuset if message.HasField("cpuset") else None,
        cpu_weight=message.cpu_weight if message.HasField("cpu_weight") else None,
        io=tuple(
            IOLimit(
                device=io.device,
                read_bps=io.read_bps if io.HasField("read_bps") else None,
                write_bps=io.write_bps if io.HasField("write_bps") else None,
                read_iops=io.read_iops if io.HasField("read_iops") else None,
                write_iops=io.write_iops if io.HasField("write_iops") else None,
            )
            for io in message.io
        ),
    )


def _privileges(message: pb.Privileges) -> Privileges:
    return Privileges(
        cap_add=tuple(message.cap_add),
        cap_drop=tuple(message.cap_drop),
        seccomp=not message.seccomp_unconfined,
        no_new_privs=message.no_new_privs,
    )


def _privileges_message(privileges: Privileges) -> pb.Privileges:
    return pb.Privileges(
        cap_add=privileges.cap_add,
        cap_drop=privileges.cap_drop,
        seccomp_unconfined=not privileges.seccomp,
        no_new_privs=privileges.no_new_privs,
    )


def _namespaces(requested: dict[str, bool]) -> Namespaces:
    known = Namespaces.names()
    unknown = sorted(set(requested) - set(known))
    if unknown:
        raise InvalidRequest(
            "namespaces", f"unknown namespace {', '.join(unknown)} (known: {', '.join(known)})"
        )
    return Namespaces(**{name: requested.get(name, True) for name in known})


def _filesystem(message: pb.Filesystem) -> Filesystem:
    return Filesystem(
        read_only=message.read_only,
        tmpfs=tuple(
            Tmpfs(t.path, t.size_bytes if t.HasField("size_bytes") else None) for t in message.tmpfs
        ),
        binds=tuple(Bind(b.source, b.destination, b.read_only) for b in message.binds),
        rootfs=message.rootfs or None,
    )


def _filesystem_message(view: Filesystem) -> pb.Filesystem:
    return pb.Filesystem(
        read_only=view.read_only,
        tmpfs=[pb.Tmpfs(path=t.path, size_bytes=t.size_bytes) for t in view.tmpfs],
        binds=[
            pb.Bind(source=b.source, destination=b.destination, read_only=b.read_only)
            for b in view.binds
        ],
        rootfs=view.rootfs or "",
    )


def job(record: JobRecord) -> pb.Job:
    """The Job message for a record."""
    message = pb.Job(
        id=record.id,
        owner=record.owner,
        command=record.argv[0],
        args=record.argv[1:],
        working_directory=record.working_directory,
        user=record.user,
        limits=_limits_message(record.limits),
        namespaces={name: getattr(record.namespaces, name) for name in Namespaces.names()},
        state=_STATES[record.state],
        create_time=_timestamp(record.created_at),
        oom_killed=record.oom_killed,
        stopped_by=record.stopped_by or "",
        note=record.note or "",
        uid=record.uid,
        gid=record.gid,
        stdin_bytes=record.stdin_bytes,
        filesystem=_filesystem_message(record.filesystem),
        privileges=_privileges_message(record.privileges),
        timed_out=record.timed_out,
        cpu_time_exceeded=record.cpu_time_exceeded,
    )
    if record.time_limits.timeout is not None:
        message.timeout.CopyFrom(_duration(record.time_limits.timeout))
    if record.time_limits.cpu_time is not None:
        message.cpu_time.CopyFrom(_duration(record.time_limits.cpu_time))
    if record.started_at is not None:
        message.start_time.CopyFrom(_timestamp(record.started_at))
    if record.ended_at is not None:
        message.end_time.CopyFrom(_timestamp(record.ended_at))
    if record.exit_code is not None:
        message.exit_code = record.exit_code
    if record.signal is not None:
        message.signal = record.signal
        message.signal_name = _signal_name(record.signal)
    if record.usage is not None:
        message.usage.CopyFrom(_usage(record.usage))
    return message


def output_event(event: OutputEvent) -> pb.StreamJobOutputResponse:
    """One message of a StreamJobOutput response.

    A chunk is filled in place. Handing a ready ``OutputChunk`` to the response's
    constructor copies it, data and all, once more than needed: building and
    serialising a message of 1 MiB took 170 µs that way and 95 µs in place on the
    development host (64 KiB: 13 and 6.5 µs).
    """
    if isinstance(event, OutputCapped):
        return pb.StreamJobOutputResponse(
            capped=pb.OutputCapped(offset=event.offset, cap_bytes=event.cap)
        )
    if isinstance(event, OutputTruncated):
        return pb.StreamJobOutputResponse(
            truncated=pb.OutputTruncated(offset=event.offset, reason=event.reason)
        )
    message = pb.StreamJobOutputResponse()
    chunk = message.chunk
    chunk.stream = _STREAMS[event.stream]
    chunk.offset = event.offset
    chunk.data = event.data
    return message


def _limits_message(limits: Limits) -> pb.Limits:
    message = pb.Limits(
        cpu_cores=limits.cpu_cores,
        memory_bytes=limits.memory_bytes,
        pids=limits.pids,
        memory_high_bytes=limits.memory_high_bytes,
        memory_swap_bytes=limits.memory_swap_bytes,
        cpuset=limits.cpuset,
        cpu_weight=limits.cpu_weight,
    )
    for io in limits.io:
        message.io.append(
            pb.IoLimit(
                device=io.device,
                read_bps=io.read_bps,
                write_bps=io.write_bps,
                read_iops=io.read_iops,
                write_iops=io.write_iops,
            )
        )
    return message


def _usage(usage: Usage) -> pb.ResourceUsage:
    return pb.ResourceUsage(
        cpu_user_usec=usage.cpu_user_usec,
        cpu_system_usec=usage.cpu_system_usec,
        memory_peak_bytes=usage.memory_peak_bytes,
        io_read_bytes=usage.io_read_bytes,
        io_write_bytes=usage.io_write_bytes,
        pids_peak=usage.pids_peak,
        memory_high_events=usage.memory_high_events,
        memory_max_events=usage.memory_max_events,
    )


def _seconds(duration: Duration) -> float:
    """A Duration in seconds; its range is the isolation layer's to check (it names the field)."""
    return duration.seconds + duration.nanos / 1e9


def _duration(seconds: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(round(seconds * 1e9))
    return duration


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"
