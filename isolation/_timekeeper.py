"""The clock a job's shim keeps for the job's time limits (see ``timelimits``).

The shim waits for the job in ``poll``; this tells it how long it may sleep and what
to do when it wakes: send SIGTERM once a limit is reached, kill the cgroup once the
grace period is over. A job without time limits has no keeper, and its shim sleeps
until the job ends.

CPU time cannot be waited for, only read (``cpu.stat``), so it is read no earlier
than the job could have used up what it has left by running on every CPU of the
host: a job that uses little CPU is looked at rarely (with a budget of B seconds
left, at most once every B / CPUs seconds), one close to its budget often, but never
more than once every ``MIN_CPU_CHECK_SECONDS``, which bounds the overshoot to that
times the CPUs it runs on.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from jobworker.isolation.timelimits import TimeLimits

MIN_CPU_CHECK_SECONDS = 0.01
MAX_WAIT_SECONDS = 3600.0
"""poll() takes milliseconds in a C int (24 days); waking hourly for nothing costs nothing."""


class Expired(enum.Enum):
    """Which limit ended the job."""

    TIMEOUT = "timeout"
    CPU_TIME = "cpu_time"


class Step(enum.Enum):
    """What the shim must do now."""

    TERMINATE = "send SIGTERM to the job's main process"
    KILL = "kill the job's cgroup"


class TimeKeeper:
    """The limits of one job, counted from when the keeper is made (the job's start).

    ``cpu_usage_usec`` reads the job's CPU time so far (None once its group is
    gone); ``clock`` is monotonic, so a change of the system's time moves no deadline.
    """

    def __init__(
        self,
        limits: TimeLimits,
        cpu_usage_usec: Callable[[], int | None],
        *,
        cpus: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self._cpu_usage_usec = cpu_usage_usec
        self._cpus = max(cpus, 1)
        self._clock = clock
        started = clock()
        self._deadline = None if limits.timeout is None else started + limits.timeout
        self._next_cpu_check = (
            None if limits.cpu_time is None else started + limits.cpu_time / self._cpus
        )
        self._kill_at: float | None = None
        self.expired: Expired | None = None
        self.killed = False
        """Whether the grace ran out and the cgroup was killed."""

    def wait(self) -> float | None:
        """Seconds until ``step`` has something to do; None if it never will."""
        if self.killed:
            return None
        due = [self._kill_at] if self._kill_at is not None else []
        if self.expired is None:
            due = [m for m in (self._deadline, self._next_cpu_check) if m is not None]
        if not due:
            return None
        return min(max(min(due) - self._clock(), 0.0), MAX_WAIT_SECONDS)

    def step(self) -> Step | None:
        """What to do now, if anything; each step is returned once."""
        now = self._clock()
        if self.expired is not None:
            if self.killed or self._kill_at is None or now < self._kill_at:
                return None
            self.killed = True
            return Step.KILL
        if self._deadline is not None and now >= self._deadline:
            self.expired = Expired.TIMEOUT
        elif self._next_cpu_check is not None and now >= self._next_cpu_check:
            self._check_cpu(now)
        if self.expired is None:
            return None
        self._kill_at = now + self.limits.grace
        return Step.TERMINATE

    def _check_cpu(self, now: float) -> None:
        assert self.limits.cpu_time is not None
        used = self._cpu_usage_usec()
        if used is None:  # the group is gone: the job is ending anyway
            self._next_cpu_check = None
            return
        left = self.limits.cpu_time - used / 1e6
        if left <= 0:
            self.expired = Expired.CPU_TIME
        else:
            self._next_cpu_check = now + max(left / self._cpus, MIN_CPU_CHECK_SECONDS)

    def note(self) -> str | None:
        """What the outcome says of a limit that ended the job; None if none did."""
        if self.expired is None:
            return None
        if self.expired is Expired.TIMEOUT:
            what = f"the job reached its timeout ({self.limits.timeout:g}s of wall-clock time)"
        else:
            what = f"the job used up its CPU time ({self.limits.cpu_time:g}s)"
        then = (
            f"and was killed after the {self.limits.grace:g}s grace period"
            if self.killed
            else "and ended within the grace period"
        )
        return f"{what}: it was sent SIGTERM {then}"
