"""The CLI's errors: each is one line for the user and an exit status for scripts.

::

    CliError              exit 1: the server, the connection, or a file said no
    └── UsageError        exit 2: the command line itself is wrong

Everything lower layers raise (gRPC status codes, certificate and server
configuration errors) is translated into one of these at the command that
called it, so ``main`` prints ``jobworker: <message>`` and never a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
"""Ctrl-C: 128 + SIGINT, as shells report it."""


class CliError(Exception):
    """A failure to report as one line; ``exit_code`` is the process's exit status.

    ``program`` starts the line: the command that failed, e.g. ``jobworker run``.
    """

    exit_code = EXIT_ERROR

    def __init__(self, message: str, *, program: str = "jobworker") -> None:
        super().__init__(message)
        self.program = program


class UsageError(CliError):
    """The command line is wrong: a bad value, a missing or conflicting option."""

    exit_code = EXIT_USAGE
