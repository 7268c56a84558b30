"""Children that begin with every signal at its default action and none blocked.

A test run inherits the dispositions of whatever started it: a background job of a
non-interactive shell ignores SIGINT and SIGQUIT, ``nohup`` ignores SIGHUP, and an
ignored signal stays ignored across exec. A test that signals a child of its own
must not depend on that, just as a job does not (the launcher resets them for it).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping, Sequence

CATCHABLE = frozenset(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}

_RESET_THEN_EXEC = """
import os, signal, sys
for signo in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}:
    signal.signal(signo, signal.SIG_DFL)
signal.pthread_sigmask(signal.SIG_SETMASK, ())
os.execvp(sys.argv[1], sys.argv[1:])
"""


def spawn(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """posix_spawnp ``argv`` with default dispositions and an empty signal mask; its PID."""
    return os.posix_spawnp(argv[0], list(argv), env, setsigdef=CATCHABLE, setsigmask=())


def command(*argv: str) -> list[str]:
    """``argv`` for ``subprocess``, run through a Python that resets the same and execs it.

    Not ``preexec_fn``, which is unsafe in a process with threads.
    """
    return [sys.executable, "-c", _RESET_THEN_EXEC, *argv]
