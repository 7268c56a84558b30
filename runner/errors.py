"""Errors raised by the runner; the isolation layer's errors are translated here.

::

    RunnerError
    ├── JobNotFound          no job with that id
    ├── InvalidRequest       a start request is invalid; ``field`` names the culprit
    ├── UserNotAllowed       the caller may not run a job as the user it named
    ├── PrivilegesNotAllowed the caller may not widen a job's privileges (an admin may)
    ├── LimitUnenforceable   a valid limit this host cannot give (more CPUs than it has)
    ├── StartFailed          the command could not be started; ``reason`` says why
    ├── HostUnsupported      this host cannot run jobs (when the runner opens), or its
    │                        kernel refused a limit of this one
    ├── InvalidConfiguration the runner's configuration cannot work (raised when it opens)
    ├── JobStillRunning      the call needs an ended job, and this one runs
    ├── CapacityExhausted    no room for another job now: the running-job maximum, the
    │                        output quota, transient user ids, or processes are used up
    ├── StorageError         the state directory or the record database failed
    │   └── StorageFull      ... for lack of space (or below the configured reserve)
    └── InternalError        a bug in jobworker, not a problem with the request
"""

from __future__ import annotations

import enum


class RunnerError(Exception):
    """Base of every error raised by ``jobworker.runner``."""


class JobNotFound(RunnerError):
    """No job has that id."""


class InvalidRequest(RunnerError):
    """The request is invalid; nothing was created. The message starts with ``field``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class UserNotAllowed(RunnerError):
    """The caller may not run a job as the user it asked for (see ``_users``)."""


class PrivilegesNotAllowed(RunnerError):
    """A non-admin asked to add capabilities or to lift the syscall filter."""


class LimitUnenforceable(RunnerError):
    """A valid limit that this host cannot enforce; the message starts with ``field``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class StartFailure(enum.Enum):
    """Why a command could not be started."""

    COMMAND_NOT_FOUND = "command not found"
    COMMAND_NOT_EXECUTABLE = "command not executable"
    BAD_WORKING_DIRECTORY = "bad working directory"
    SETUP_FAILED = "isolation set-up failed"


class StartFailed(RunnerError):
    """The job could not be started; nothing of it is left running."""

    def __init__(self, message: str, reason: StartFailure) -> None:
        super().__init__(message)
        self.reason = reason


class HostUnsupported(RunnerError):
    """The host cannot isolate jobs; the message says what is missing and how to fix it."""


class InvalidConfiguration(RunnerError):
    """The runner cannot open with this configuration; the message says what to change."""


class JobStillRunning(RunnerError):
    """The job is running, and the call needs a job that has ended."""


class CapacityExhausted(RunnerError):
    """As many jobs are running as the configuration allows."""


class StorageError(RunnerError):
    """Records or output could not be stored."""


class StorageFull(StorageError):
    """No space is left to store records or output, or less than the configured reserve."""


class InternalError(RunnerError):
    """A bug in jobworker; the message is meant for a bug report."""
