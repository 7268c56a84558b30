"""How a job ended, as the shim records it and the service reads it back."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobworker.isolation.cgroups import Usage


@dataclass(frozen=True)
class Outcome:
    """Exactly one of ``exit_code`` and ``signal`` is set, unless the end was not observed.

    ``note`` explains anything unusual, for instance that the exit status is
    unknown because the job's shim was killed.
    """

    exit_code: int | None
    signal: int | None
    oom_killed: bool
    usage: Usage
    started_at: datetime
    ended_at: datetime
    note: str | None = None
    timed_out: bool = False
    """Its timeout was reached, so its shim ended it (see ``timelimits``)."""
    cpu_time_exceeded: bool = False
    """Its CPU time was used up, so its shim ended it."""

    @property
    def signal_name(self) -> str | None:
        """``SIGKILL`` rather than 9, for people."""
        return signal.Signals(self.signal).name if self.signal else None

    def to_json(self) -> str:
        """Serialise for the outcome file."""
        data: dict[str, Any] = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["ended_at"] = self.ended_at.isoformat()
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> Outcome:
        """Inverse of ``to_json``; ``ValueError`` for anything damaged."""
        try:
            data = json.loads(text)
            return cls(
                exit_code=data["exit_code"],
                signal=data["signal"],
                oom_killed=data["oom_killed"],
                usage=Usage(**data["usage"]),
                started_at=datetime.fromisoformat(data["started_at"]),
                ended_at=datetime.fromisoformat(data["ended_at"]),
                note=data["note"],
                # Absent from the outcomes of shims that knew no time limits.
                timed_out=bool(data.get("timed_out", False)),
                cpu_time_exceeded=bool(data.get("cpu_time_exceeded", False)),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"not an outcome: {error!r}") from None


def decode_wait_status(status: int) -> tuple[int | None, int | None]:
    """(exit code, signal) from a waitpid() status."""
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status), None


def utcnow() -> datetime:
    """Timestamps are UTC with microseconds everywhere in jobworker."""
    return datetime.now(UTC)


def write_atomically(path: Path, text: str, *, durable: bool) -> None:
    """Replace ``path`` so that a reader or a crash sees the old file or the new, never half.

    With ``durable``, the data and the directory entry are fsynced too, so the
    file survives a power cut (an outcome must); without, it survives a crash of
    any process, which is all that state useless after a reboot needs.
    """
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        os.write(fd, text.encode())
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temporary, path)
    if durable:
        _sync_directory(path.parent)


def _sync_directory(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    directory = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class OutcomeFile:
    """Where a job's shim writes its outcome, with the space for it taken at the start.

    A job may end when the disk is full; its outcome must still be recorded, or the
    job would be ``lost``. So the shim stages a file of blank space as the job
    starts (JSON allows trailing white space) and at the end overwrites it in
    place, which needs no new blocks, then renames it over the outcome's name.
    """

    SPACE = 16 * 1024
    """Room staged for the outcome; a longer one (long notes) is written the usual way."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._staged = path.with_name(f".{path.name}.tmp")
        self._reserved = False

    def reserve(self) -> None:
        """Stage the blank file; without space for it, ``write`` does the usual thing."""
        try:
            fd = os.open(self._staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        except OSError:
            return
        try:
            os.write(fd, b" " * self.SPACE)
            self._reserved = True
        except OSError:
            self._reserved = False
        finally:
            os.close(fd)

    def write(self, outcome: Outcome) -> None:
        """Record ``outcome`` durably and atomically: a reader sees the old file or the new."""
        text = outcome.to_json()
        if not self._reserved or len(text.encode()) > self.SPACE:
            write_atomically(self.path, text, durable=True)
            return
        fd = os.open(self._staged, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.pwrite(fd, text.encode(), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(self._staged, self.path)
        _sync_directory(self.path.parent)
