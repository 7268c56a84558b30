"""How jobs look: the JSON of ``status --json`` and ``ls --json``, and the text people read.

The JSON object (a contract: scripts parse it)::

    id, owner                   strings
    command                     list of strings: the command and its arguments
    working_directory, user     strings (user: the name the command runs as, e.g. "nobody",
                                or a transient user's, "job-" and 8 hex digits)
    uid, gid                    ints: the ids the command runs as (null in old records)
    state                       "running", "exited", "stopped" or "lost"
    exit_code                   int or null
    signal                      signal name such as "SIGKILL", or null
    oom_killed                  bool
    created_at, started_at,     RFC 3339 UTC timestamps ("2025-01-31T12:00:00.123456Z"),
    ended_at                    or null when not (yet) known
    limits                      {cpu_cores, memory_bytes, pids, memory_high_bytes,
                                 memory_swap_bytes, cpu_weight: number or null,
                                 cpuset: string such as "0-1,3" or null,
                                 io: [{device, read_bps, write_bps, read_iops, write_iops}]}
    namespaces                  {pid, mount, net, uts, ipc: bool}
    stdin_bytes                 int: standard input given at start (0: none, /dev/null)
    filesystem                  {read_only: bool, tmpfs: [{path, size_bytes: int or null}],
                                 binds: [{source, destination, read_only}],
                                 rootfs: string or null}
    usage                       {cpu_user_usec, cpu_system_usec, memory_peak_bytes,
                                 io_read_bytes, io_write_bytes, pids_peak,
                                 memory_high_events, memory_max_events: int or null};
                                 null where unknown, all null while the job runs
    stopped_by, note            string or null
    privileges                  {cap_add, cap_drop: list of strings, seccomp: "default" or
                                 "unconfined", no_new_privs: bool (as asked for)}
    timeout_seconds,            number or null: the job's time limits (wall-clock, CPU)
    cpu_time_seconds
    timed_out,                  bool: whether its timeout, or its CPU time running out,
    cpu_time_exceeded           ended the job (its state is then "exited")
"""

from __future__ import annotations

import shlex
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from jobworker.v1 import jobworker_pb2 as pb

STATES = {
    pb.JOB_STATE_RUNNING: "running",
    pb.JOB_STATE_EXITED: "exited",
    pb.JOB_STATE_STOPPED: "stopped",
    pb.JOB_STATE_LOST: "lost",
}
USAGE_FIELDS = (
    "cpu_user_usec",
    "cpu_system_usec",
    "memory_peak_bytes",
    "io_read_bytes",
    "io_write_bytes",
    "pids_peak",
    "memory_high_events",
    "memory_max_events",
)
_IO_FIELDS = ("read_bps", "write_bps", "read_iops", "write_iops")
_COMMAND_WIDTH = 40
_UNPRINTABLE = frozenset({"Cc", "Cf", "Zl", "Zp"})
"""Unicode categories escaped before printing: controls, format characters, line breaks."""


def job_json(job: pb.Job) -> dict[str, Any]:
    """The JSON object for one job (see the module documentation)."""
    return {
        "id": job.id,
        "owner": job.owner,
        "command": [job.command, *job.args],
        "working_directory": job.working_directory,
        "user": job.user,
        "uid": job.uid if job.HasField("uid") else None,
        "gid": job.gid if job.HasField("gid") else None,
        "state": state_name(job),
        "exit_code": job.exit_code if job.HasField("exit_code") else None,
        "signal": (job.signal_name or f"SIG{job.signal}") if job.HasField("signal") else None,
        "oom_killed": job.oom_killed,
        "created_at": _timestamp(job, "create_time"),
        "started_at": _timestamp(job, "start_time"),
        "ended_at": _timestamp(job, "end_time"),
        "limits": {
            "cpu_cores": _optional(job.limits, "cpu_cores"),
            "memory_bytes": _optional(job.limits, "memory_bytes"),
            "pids": _optional(job.limits, "pids"),
            "memory_high_bytes": _optional(job.limits, "memory_high_bytes"),
            "memory_swap_bytes": _optional(job.limits, "memory_swap_bytes"),
            "cpuset": _optional(job.limits, "cpuset"),
            "cpu_weight": _optional(job.limits, "cpu_weight"),
            "io": [
                {"device": io.device, **{name: _optional(io, name) for name in _IO_FIELDS}}
                for io in job.limits.io
            ],
        },
        "namespaces": {name: bool(job.namespaces.get(name, False)) for name in sorted_names(job)},
        "stdin_bytes": job.stdin_bytes,
        "filesystem": filesystem_json(job.filesystem),
        "usage": {name: _optional(job.usage, name) for name in USAGE_FIELDS},
        "stopped_by": job.stopped_by or None,
        "note": job.note or None,
        "privileges": {
            "cap_add": list(job.privileges.cap_add),
            "cap_drop": list(job.privileges.cap_drop),
            "seccomp": "unconfined" if job.privileges.seccomp_unconfined else "default",
            "no_new_privs": job.privileges.no_new_privs,
        },
        "timeout_seconds": _seconds(job, "timeout"),
        "cpu_time_seconds": _seconds(job, "cpu_time"),
        "timed_out": job.timed_out,
        "cpu_time_exceeded": job.cpu_time_exceeded,
    }


def filesystem_json(view: pb.Filesystem) -> dict[str, Any]:
    """The job's view of the filesystem (see the module documentation)."""
    return {
        "read_only": view.read_only,
        "tmpfs": [{"path": t.path, "size_bytes": _optional(t, "size_bytes")} for t in view.tmpfs],
        "binds": [
            {"source": b.source, "destination": b.destination or b.source, "read_only": b.read_only}
            for b in view.binds
        ],
        "rootfs": view.rootfs or None,
    }


def filesystem_text(view: pb.Filesystem) -> str:
    """The view in a line, e.g. ``read-only, tmpfs /work 1 MiB, bind /srv on /data (ro)``."""
    parts = ["read-only"] if view.read_only else []
    for t in view.tmpfs:
        size = f" {size_text(t.size_bytes)}" if t.HasField("size_bytes") else ""
        parts.append(f"tmpfs {t.path}{size}")
    for b in view.binds:
        parts.append(
            f"bind {b.source} on {b.destination or b.source}{' (ro)' if b.read_only else ''}"
        )
    if view.rootfs:
        parts.append(f"rootfs {view.rootfs}")
    return printable(", ".join(parts)) or "the host's"


def state_name(job: pb.Job) -> str:
    """The state as the JSON and the table show it."""
    return STATES.get(job.state, "unknown")


def sorted_names(job: pb.Job) -> list[str]:
    """The job's namespace names, in the order the CLI documents them."""
    order = ("pid", "mount", "net", "uts", "ipc")
    return sorted(job.namespaces, key=lambda name: order.index(name) if name in order else 99)


def ending(job: pb.Job) -> str:
    """How the job ended, or that it has not: one phrase."""
    if job.state == pb.JOB_STATE_RUNNING:
        return "running"
    if job.state == pb.JOB_STATE_LOST:
        return "lost: its end was not observed, so its exit status is unknown"
    if job.HasField("signal"):
        how = f"killed by {job.signal_name or job.signal}"
    elif job.HasField("exit_code"):
        how = f"exit code {job.exit_code}"
    else:
        how = "exit status unknown"
    if job.oom_killed:
        how += ", by the OOM killer"
    if job.timed_out:
        how += ", at its timeout"
    if job.cpu_time_exceeded:
        how += ", its CPU time used up"
    if job.state == pb.JOB_STATE_STOPPED:
        return f"stopped by {job.stopped_by or 'a client'} ({how})"
    return f"exited ({how})"


def command_line(job: pb.Job) -> str:
    """The command as a shell would take it, safe to print (see ``printable``)."""
    return printable(shlex.join([job.command, *job.args]))


def printable(text: str) -> str:
    """``text`` with control and format characters escaped, as ``ls -b`` would show them.

    What the server returns comes from other users (their commands, directories,
    notes): printed raw, an escape sequence in it could rewrite the reader's terminal
    or hide text (``\x1b[2J``, right-to-left overrides). JSON output escapes them itself.
    """
    return "".join(
        character if unicodedata.category(character) not in _UNPRINTABLE else _escape(character)
        for character in text
    )


def _escape(character: str) -> str:
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def status_text(job: pb.Job) -> str:
    """``jobworker status``: one ``name: value`` line per fact."""
    data = job_json(job)
    on = [name for name, value in data["namespaces"].items() if value]
    lines = [
        ("id", printable(job.id)),
        ("owner", printable(job.owner)),
        ("command", command_line(job)),
        ("workdir", printable(job.working_directory)),
        ("user", printable(user_text(job))),
        ("state", ending(job)),
        ("oom_killed", "true" if job.oom_killed else "false"),
        ("created", data["created_at"] or "-"),
        ("started", data["started_at"] or "-"),
        ("ended", data["ended_at"] or "-"),
        ("limits", limits_text(job.limits)),
        ("namespaces", " ".join(on) or "none (shares the host's)"),
        ("filesystem", filesystem_text(job.filesystem)),
        ("usage", usage_text(job)),
    ]
    if job.stdin_bytes:
        lines.append(("stdin", f"{size_text(job.stdin_bytes)} given at start"))
    if job.HasField("timeout") or job.HasField("cpu_time"):
        lines.append(("time", time_limits_text(job)))
    if job.stopped_by:
        lines.append(("stopped_by", printable(job.stopped_by)))
    if job.note:
        lines.append(("note", printable(job.note)))
    return "".join(f"{name + ':':<12}{value}\n" for name, value in lines)


def user_text(job: pb.Job) -> str:
    """Who the job runs as, e.g. ``job-0b6e1c5c (uid 1879048200, gid 1879048200)``."""
    if not job.HasField("uid"):
        return job.user or "-"
    return f"{job.user} (uid {job.uid}, gid {job.gid})"


def limits_text(limits: pb.Limits) -> str:
    """The limits in a line, e.g. ``cpu 0.5 cores, memory 64 MiB, pids 100``."""
    parts = [
        f"{label} {shown(value)}"
        for field, label, shown in _LIMIT_PHRASES
        if (value := _optional(limits, field)) is not None
    ]
    for io in limits.io:
        rates = []
        for name in _IO_FIELDS:
            value = _optional(io, name)
            if value is not None:
                shown = size_text(value) if name.endswith("bps") else str(value)
                rates.append(f"{name}={shown}/s")
        parts.append(f"io {io.device} {' '.join(rates)}")
    return ", ".join(parts) or "none"


def time_limits_text(job: pb.Job) -> str:
    """The time limits in a line, e.g. ``timeout 90s, cpu time 1.5s``."""
    data = job_json(job)
    parts = [
        f"{name} {data[key]:g}s"
        for name, key in (("timeout", "timeout_seconds"), ("cpu time", "cpu_time_seconds"))
        if data[key] is not None
    ]
    return ", ".join(parts) or "none"


def usage_text(job: pb.Job) -> str:
    """What the job used, e.g. ``cpu 1.20s user 0.03s system, memory peak 3.1 MiB, ...``."""
    if job.state == pb.JOB_STATE_RUNNING:
        return "known once the job has ended"
    usage = job_json(job)["usage"]
    parts = []
    if usage["cpu_user_usec"] is not None or usage["cpu_system_usec"] is not None:
        user, system = usage["cpu_user_usec"] or 0, usage["cpu_system_usec"] or 0
        parts.append(f"cpu {user / 1e6:.2f}s user {system / 1e6:.2f}s system")
    if usage["memory_peak_bytes"] is not None:
        parts.append(f"memory peak {size_text(usage['memory_peak_bytes'])}")
    if usage["io_read_bytes"] is not None or usage["io_write_bytes"] is not None:
        read, written = usage["io_read_bytes"] or 0, usage["io_write_bytes"] or 0
        parts.append(f"io read {size_text(read)} written {size_text(written)}")
    if usage["pids_peak"] is not None:
        parts.append(f"pids peak {usage['pids_peak']}")
    if usage["memory_high_events"]:
        parts.append(f"over memory high {usage['memory_high_events']} times")
    if usage["memory_max_events"]:
        parts.append(f"at memory limit {usage['memory_max_events']} times")
    return ", ".join(parts) or "unknown"


def size_text(size: int) -> str:
    """Bytes for people, in powers of 1024: ``512 B``, ``64 MiB``, ``1.5 GiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


_LIMIT_PHRASES: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("cpu_cores", "cpu", lambda cores: f"{cores:g} cores"),
    ("memory_bytes", "memory", size_text),
    ("pids", "pids", str),
    ("memory_high_bytes", "memory high", size_text),
    ("memory_swap_bytes", "swap", size_text),
    ("cpuset", "cpus", str),
    ("cpu_weight", "cpu weight", str),
)
"""Each limit as ``limits_text`` shows it: its field, its label, how its value reads."""


def age_text(job: pb.Job, now: datetime) -> str:
    """How long ago the job was created: ``5s``, ``3m``, ``2h``, ``4d``."""
    seconds = max(0, int((now - job.create_time.ToDatetime(tzinfo=UTC)).total_seconds()))
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds // length}{unit}"
    return f"{seconds}s"


def table(jobs: list[pb.Job], now: datetime) -> str:
    """``jobworker ls``: id, state, command, age, owner, one job a line under a header."""
    rows = [("ID", "STATE", "COMMAND", "AGE", "OWNER")]
    for job in jobs:
        command = command_line(job)
        if len(command) > _COMMAND_WIDTH:
            command = command[: _COMMAND_WIDTH - 3] + "..."
        rows.append(
            (printable(job.id), state_name(job), command, age_text(job, now), printable(job.owner))
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return "".join(
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]])
        + "\n"
        for row in rows
    )


def _timestamp(job: pb.Job, field: str) -> str | None:
    if not job.HasField(field):  # type: ignore[arg-type]
        return None
    stamp: Timestamp = getattr(job, field)
    return stamp.ToJsonString()


def _seconds(job: pb.Job, field: str) -> float | None:
    if not job.HasField(field):  # type: ignore[arg-type]
        return None
    duration: Duration = getattr(job, field)
    return float(duration.ToNanoseconds() / 1e9)


def _optional(message: Message, field: str) -> Any:
    return getattr(message, field) if message.HasField(field) else None
