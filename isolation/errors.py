"""Errors raised by the isolation layer.

Every failure the layer can explain is one of these; an ``OSError`` from the
kernel becomes one of them here, at the layer that knows what the syscall was
for, so callers never have to guess what an errno meant::

    IsolationError
    ├── HostUnsupported      the host cannot isolate jobs (no cgroup v2, not root, ...)
    ├── InvalidSpec          a job's limits or namespaces are refused before anything exists
    │   ├── InvalidDevice    an IO limit names something that is not a usable block device
    │   └── LimitUnenforceable  well-formed, but more than this host has (e.g. CPUs)
    ├── LaunchError          the job could not be started; nothing of it is left behind
    │   ├── CommandNotFound
    │   ├── CommandNotExecutable
    │   ├── BadWorkingDirectory
    │   └── ResourcesExhausted   no process could be made for it now (EAGAIN, ENOMEM)
    ├── OutputLogError       a file is not an output log, or is damaged before its tail
    └── InternalError        our own helper processes misbehaved (a bug, not user input)
        └── MalformedMessage  a message or state file between our processes cannot be read
"""

from __future__ import annotations


class IsolationError(Exception):
    """Base of every error raised by ``jobworker.isolation``."""


class HostUnsupported(IsolationError):
    """The host cannot run isolated jobs; the message says what is missing and how to fix it."""


class InvalidSpec(IsolationError):
    """A limit or namespace setting is invalid; ``field`` names the offending setting."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class InvalidDevice(InvalidSpec):
    """An IO limit names a path or MAJ:MIN that is not a block device io.max accepts."""


class LimitUnenforceable(InvalidSpec):
    """A well-formed limit this host cannot give, such as more cores than it has.

    Kept apart from other invalid specs because the same request may succeed on
    a bigger host: the API answers FAILED_PRECONDITION, not INVALID_ARGUMENT.
    """


class LaunchError(IsolationError):
    """The command could not be started.

    ``stage`` names the step that failed (``exec``, ``chdir``, ``cgroup``, ``mount`` ...)
    and ``errno`` the kernel's reason, so callers can report the cause at launch
    time instead of a mysterious exit code later.
    """

    def __init__(self, message: str, *, stage: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.errno = errno


class CommandNotFound(LaunchError):
    """The command is not an existing file, nor found on the job's PATH."""


class CommandNotExecutable(LaunchError):
    """The command exists but cannot be executed (permissions, format, a directory)."""


class BadWorkingDirectory(LaunchError):
    """The working directory does not exist or is not a directory."""


class ResourcesExhausted(LaunchError):
    """The host (or the service's own cgroup) could not give the job a process right now.

    Not the job's fault, and possibly over in a moment: the caller may try again.
    """


class OutputLogError(IsolationError):
    """The file is not an output log, or is damaged before its readable tail."""


class InternalError(IsolationError):
    """A helper process of ours broke its protocol; this is a bug worth reporting."""


class MalformedMessage(InternalError):
    """A launch message or a shim's state file is not what the protocol says.

    Damaged, truncated, or written by another version of the service: never the job's
    doing, so it is an internal error (and a damaged state file makes a job ``lost``).
    """
