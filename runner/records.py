"""Job records: what the runner knows about a job, and the few states a job goes through.

::

    running ──► exited    ended on its own (an exit, a signal from elsewhere, the OOM killer)
       │  │               or at a time limit (``timed_out``, ``cpu_time_exceeded``)
       │  └───► stopped   ended after a client asked it to stop
       └──────► lost      its end was not observed: the job's shim was killed or the host
                          restarted while the job ran; the exit status is unknown

A record is immutable; a transition makes a new one, so a reader only ever
sees a whole record, before or after.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

from jobworker.isolation.cgroups import Usage
from jobworker.isolation.filesystem import Bind, Filesystem, Tmpfs
from jobworker.isolation.limits import IOLimit, Limits
from jobworker.isolation.namespaces import Namespaces
from jobworker.isolation.outcome import Outcome
from jobworker.isolation.privileges import Privileges
from jobworker.isolation.timelimits import TimeLimits

# The value types of a record's fields are the isolation layer's; they are exported here,
# with the record, so that the runner's callers need not reach past it.
__all__ = [
    "Bind",
    "Filesystem",
    "IOLimit",
    "JobRecord",
    "JobState",
    "Limits",
    "Namespaces",
    "Privileges",
    "TimeLimits",
    "Tmpfs",
    "Usage",
]


class JobState(enum.Enum):
    """See the module documentation."""

    RUNNING = "running"
    EXITED = "exited"
    STOPPED = "stopped"
    LOST = "lost"


@dataclass(frozen=True)
class JobRecord:
    """Everything recorded about one job. The environment is not kept: it may hold secrets."""

    id: str
    owner: str
    argv: tuple[str, ...]
    working_directory: str
    user: str
    """The name of the user the command runs as (its number where it has none); for a
    transient user, the name it has in the job's own /etc/passwd (``job-`` and 8 hex digits)."""
    limits: Limits
    namespaces: Namespaces
    state: JobState
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    usage: Usage | None = None
    stopped_by: str | None = None
    note: str | None = None
    uid: int | None = None
    """The user and group ids the command runs as (None in records from before they were kept)."""
    gid: int | None = None
    stdin_bytes: int = 0
    """How much standard input the job was given at start."""
    filesystem: Filesystem = field(default_factory=Filesystem)
    """The job's view of the filesystem, as requested (the host's in older records)."""
    privileges: Privileges = field(default_factory=Privileges)
    """What the job asked for beyond the defaults (capabilities, syscall filter)."""
    time_limits: TimeLimits = field(default_factory=TimeLimits)
    timed_out: bool = False
    """Its shim ended it at its timeout: the state is ``exited``, as for the OOM killer."""
    cpu_time_exceeded: bool = False
    """Its shim ended it once its CPU time was used up; the state is ``exited`` too."""

    @property
    def ended(self) -> bool:
        """Whether the job is over; its record will not change again."""
        return self.state is not JobState.RUNNING

    def stop_requested(self, by: str) -> JobRecord:
        """The record once ``by`` asked the job to stop; the first to ask is kept."""
        return self if self.stopped_by is not None else replace(self, stopped_by=by)

    def finished(self, outcome: Outcome) -> JobRecord:
        """The final record, given how the job ended."""
        if outcome.exit_code is None and outcome.signal is None:
            state = JobState.LOST
        elif self.stopped_by is not None:
            state = JobState.STOPPED
        else:
            state = JobState.EXITED
        return replace(
            self,
            state=state,
            started_at=outcome.started_at,
            ended_at=outcome.ended_at,
            exit_code=outcome.exit_code,
            signal=outcome.signal,
            oom_killed=outcome.oom_killed,
            usage=outcome.usage,
            note=outcome.note,
            timed_out=outcome.timed_out,
            cpu_time_exceeded=outcome.cpu_time_exceeded,
        )

    def to_json(self) -> str:
        """Serialise for the record store.

        Built field by field rather than with ``dataclasses.asdict``, whose deep
        copies were the largest CPU cost of the database thread (measured with py-spy).
        """
        limits = self.limits
        data: dict[str, Any] = {
            "id": self.id,
            "owner": self.owner,
            "argv": list(self.argv),
            "working_directory": self.working_directory,
            "user": self.user,
            "limits": {
                "cpu_cores": limits.cpu_cores,
                "memory_bytes": limits.memory_bytes,
                "pids": limits.pids,
                "io": [_shallow(io) for io in limits.io],
                "memory_high_bytes": limits.memory_high_bytes,
                "memory_swap_bytes": limits.memory_swap_bytes,
                "cpuset": limits.cpuset,
                "cpu_weight": limits.cpu_weight,
            },
            "namespaces": _shallow(self.namespaces),
            "state": self.state.value,
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "oom_killed": self.oom_killed,
            "usage": _shallow(self.usage) if self.usage is not None else None,
            "stopped_by": self.stopped_by,
            "note": self.note,
            "uid": self.uid,
            "gid": self.gid,
            "stdin_bytes": self.stdin_bytes,
            "filesystem": _filesystem_json(self.filesystem),
            "privileges": _privileges_json(self.privileges),
            "time_limits": _shallow(self.time_limits),
            "timed_out": self.timed_out,
            "cpu_time_exceeded": self.cpu_time_exceeded,
        }
        return json.dumps(data)

    @classmethod
    def damaged(cls, job_id: str, owner: str, created_at: str, damage: str) -> JobRecord:
        """What is known of a job whose stored record cannot be read: it is lost."""
        try:
            created = datetime.fromisoformat(created_at)
        except ValueError:
            created = datetime.fromtimestamp(0, UTC)
        return cls(
            id=job_id,
            owner=owner,
            argv=("?",),
            working_directory="?",
            user="?",
            limits=Limits(),
            namespaces=Namespaces(),
            state=JobState.LOST,
            created_at=created,
            ended_at=created,
            note=f"the job's record is damaged ({damage}); what it ran and how it ended are "
            "unknown, and anything left of it was killed",
        )

    @classmethod
    def from_json(cls, text: str) -> JobRecord:
        """Inverse of ``to_json``; ``ValueError`` for a damaged record."""
        try:
            return cls._from_json(text)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a job record: {error!r}") from None

    @classmethod
    def _from_json(cls, text: str) -> JobRecord:
        data = json.loads(text)
        limits = data["limits"]
        return cls(
            id=data["id"],
            owner=data["owner"],
            argv=tuple(data["argv"]),
            working_directory=data["working_directory"],
            user=data.get("user", "root"),  # records from before users could be chosen
            limits=Limits(
                cpu_cores=limits["cpu_cores"],
                memory_bytes=limits["memory_bytes"],
                pids=limits["pids"],
                io=tuple(IOLimit(**io) for io in limits["io"]),
                memory_high_bytes=limits.get("memory_high_bytes"),
                memory_swap_bytes=limits.get("memory_swap_bytes"),
                cpuset=limits.get("cpuset"),
                cpu_weight=limits.get("cpu_weight"),
            ),
            namespaces=Namespaces(**data["namespaces"]),
            state=JobState(data["state"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            started_at=_time(data["started_at"]),
            ended_at=_time(data["ended_at"]),
            exit_code=data["exit_code"],
            signal=data["signal"],
            oom_killed=data["oom_killed"],
            usage=Usage(**data["usage"]) if data["usage"] is not None else None,
            stopped_by=data["stopped_by"],
            note=data["note"],
            uid=data.get("uid"),
            gid=data.get("gid"),
            stdin_bytes=data.get("stdin_bytes", 0),
            filesystem=_filesystem(data.get("filesystem")),
            privileges=_privileges(data.get("privileges")),
            # Records from before time limits have none of these.
            time_limits=TimeLimits(**data.get("time_limits", {})),
            timed_out=data.get("timed_out", False),
            cpu_time_exceeded=data.get("cpu_time_exceeded", False),
        )


def _shallow(value: IOLimit | Namespaces | TimeLimits | Usage | Tmpfs | Bind) -> dict[str, Any]:
    """A flat dataclass's fields as a dict (its values are plain numbers, strings, bools)."""
    return {item.name: getattr(value, item.name) for item in fields(value)}


def _filesystem_json(view: Filesystem) -> dict[str, Any]:
    return {
        "read_only": view.read_only,
        "tmpfs": [_shallow(tmpfs) for tmpfs in view.tmpfs],
        "binds": [_shallow(bind) for bind in view.binds],
        "rootfs": view.rootfs,
    }


def _filesystem(data: dict[str, Any] | None) -> Filesystem:
    if data is None:  # a record from before filesystem views
        return Filesystem()
    return Filesystem(
        read_only=data["read_only"],
        tmpfs=tuple(Tmpfs(**tmpfs) for tmpfs in data["tmpfs"]),
        binds=tuple(Bind(**bind) for bind in data["binds"]),
        rootfs=data["rootfs"],
    )


def _privileges_json(privileges: Privileges) -> dict[str, Any]:
    return {
        "cap_add": list(privileges.cap_add),
        "cap_drop": list(privileges.cap_drop),
        "seccomp": privileges.seccomp,
        "no_new_privs": privileges.no_new_privs,
    }


def _privileges(data: dict[str, Any] | None) -> Privileges:
    if data is None:  # records from before privileges could be chosen
        return Privileges()
    return Privileges(
        cap_add=tuple(data["cap_add"]),
        cap_drop=tuple(data["cap_drop"]),
        seccomp=data["seccomp"],
        no_new_privs=data["no_new_privs"],
    )


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
