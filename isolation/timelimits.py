"""Time limits of one job: wall-clock time and CPU time, each ending it as a stop would.

The job's shim enforces them (see ``_timekeeper``), not the service: the shim lives
as long as the job, so a limit holds while the service restarts or is down, and its
outcome says which limit ended the job. When one is reached the job gets SIGTERM,
then ``grace`` seconds, then its whole cgroup is killed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from jobworker.isolation.errors import InvalidSpec

MAX_SECONDS = 365 * 24 * 3600.0
"""A year: longer than any job anyone means to limit, short enough to catch a unit mistake."""

DEFAULT_GRACE_SECONDS = 10.0
"""Between SIGTERM and the kill when a limit is reached; the runner passes its own."""


@dataclass(frozen=True)
class TimeLimits:
    """Each limit is optional; ``None`` means the job is not limited that way.

    ``cpu_time`` counts every process of the job together (the cgroup's
    ``cpu.stat`` ``usage_usec``), unlike RLIMIT_CPU, which limits each process
    alone and is reset by every fork.
    """

    timeout: float | None = None
    """Seconds of wall-clock time from the job's start."""
    cpu_time: float | None = None
    """Seconds of CPU time, user and system, of all the job's processes together."""
    grace: float = DEFAULT_GRACE_SECONDS

    @property
    def any(self) -> bool:
        """Whether the job has a time limit at all (its shim then keeps a clock)."""
        return self.timeout is not None or self.cpu_time is not None

    def validate(self) -> None:
        """Refuse a limit that is not a positive duration of at most a year."""
        for name in ("timeout", "cpu_time"):
            seconds = getattr(self, name)
            if seconds is None:
                continue
            if not _is_number(seconds) or not math.isfinite(seconds) or seconds <= 0:
                raise InvalidSpec(name, f"{seconds!r} must be a duration of more than 0s")
            if seconds > MAX_SECONDS:
                raise InvalidSpec(
                    name,
                    f"{seconds:g}s is more than a year ({MAX_SECONDS:g}s), the longest allowed",
                )
        if not _is_number(self.grace) or not 0 <= self.grace <= MAX_SECONDS:
            raise InvalidSpec("grace", f"{self.grace!r} must be a duration of 0s or more")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
