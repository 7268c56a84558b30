"""What the runner does when nobody says otherwise, written once for every layer.

The server's options, their ``--help`` and the API fall back on these. This module
imports nothing heavy, so that the command line can show them without loading the runner.
"""

from __future__ import annotations

# A job's pids limit when neither it nor the server sets one, in percent of the kernel's
# task limit; the isolation layer applies it (see ``capacity``).
from jobworker.isolation.capacity import DEFAULT_JOB_TASKS_PERCENT as JOB_TASKS_PERCENT

# The longest timeout or CPU time a job may ask for (a year); the isolation layer enforces it.
from jobworker.isolation.timelimits import MAX_SECONDS as MAX_TIME_LIMIT_SECONDS

__all__ = [
    "JOB_TASKS_PERCENT",
    "KEEP_ENDED_SECONDS",
    "MAX_RUNNING_JOBS",
    "MAX_STDIN_BYTES",
    "MAX_TIME_LIMIT_SECONDS",
    "MIN_FREE_BYTES",
    "OUTPUT_CAP_BYTES",
    "STOP_GRACE_SECONDS",
    "TRANSIENT_IDS",
]

MAX_RUNNING_JOBS = 1000
"""Jobs running at once; more are refused until one ends."""

KEEP_ENDED_SECONDS = 7 * 24 * 3600.0
"""How long an ended job's record and output are kept (see ``_retention``)."""

OUTPUT_CAP_BYTES = 1 << 30
"""Output kept per job; the rest is dropped and readers are told."""

MAX_STDIN_BYTES = 16 << 20
"""Standard input a job may be given at start: it travels in one message and is kept on
disk with the job, so it is bounded like both."""

MIN_FREE_BYTES = 64 << 20
"""New jobs are refused while less is free under the state directory."""

STOP_GRACE_SECONDS = 10.0
"""Between SIGTERM and SIGKILL when a stop names no grace period, and at a shutdown
that stops the jobs."""

TRANSIENT_IDS = (0x70000000, 0x7000FFFF)
"""First and last uid (and gid) of transient users; ``_users`` says why these."""
