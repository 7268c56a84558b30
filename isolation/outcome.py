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
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
