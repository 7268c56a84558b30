"""A job's run directory: the one place that names the files a job's shim keeps there.

The runner makes the directory and removes it; the shim fills it; the launcher and the
runner read it back, even after a restart of the service. Each asks this value for a
path instead of joining a file name of its own, so the layout can change in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    """The directory and its files; nothing here touches the disk."""

    path: Path

    @property
    def output_log(self) -> Path:
        """The job's stdout and stderr as the shim captured them (see ``outputlog``)."""
        return self.path / "output.log"

    @property
    def outcome(self) -> Path:
        """How the job ended, written by its shim once it is over (see ``outcome``)."""
        return self.path / "outcome.json"

    @property
    def shim_state(self) -> Path:
        """Who the job's shim and main process are, for a restarted service to find them."""
        return self.path / "shim.json"

    @property
    def shim_log(self) -> Path:
        """The shim's own stdout and stderr: a traceback, should it fail."""
        return self.path / "shim.log"

    @property
    def stdin(self) -> Path:
        """The bytes given at start as the job's standard input, when it was given any."""
        return self.path / "stdin"

    @property
    def passwd(self) -> Path:
        """The job's /etc/passwd, when it names a user the host does not know."""
        return self.path / "passwd"

    @property
    def group(self) -> Path:
        """The job's /etc/group, beside ``passwd``."""
        return self.path / "group"
