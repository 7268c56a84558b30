"""How long an ended job's record and output are kept before the runner removes them.

Without a limit, every job ever run would keep its record and up to the output
cap on disk until someone deleted the files by hand. Like Nomad's job garbage
collection, an ended job is kept for a while (so that its status and output
can still be read), then removed. Each job gets one timer on the event loop,
due when its time is up: no periodic scan, and nothing to do while no job is due.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from jobworker.isolation.outcome import utcnow
from jobworker.runner.errors import StorageError
from jobworker.runner.records import JobRecord

log = logging.getLogger("jobworker.runner")


class Retention:
    """Removes each ended job once it has been kept for ``keep_seconds`` (None: forever)."""

    def __init__(
        self, keep_seconds: float | None, remove: Callable[[str], Awaitable[None]]
    ) -> None:
        self._keep = keep_seconds
        self._remove = remove
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._removals: set[asyncio.Task[None]] = set()

    async def remove_or_schedule(self, record: JobRecord) -> None:
        """For an ended job found at start: remove it now if its time is up, else schedule it."""
        if self._keep is not None and self._seconds_left(record) <= 0:
            await self._removal(record.id)
        else:
            self.schedule(record)

    def schedule(self, record: JobRecord) -> None:
        """Remove an ended job when its time is up."""
        if self._keep is None:
            return
        self._timers[record.id] = asyncio.get_running_loop().call_later(
            self._seconds_left(record), self._start_removal, record.id
        )

    def forget(self, job_id: str) -> None:
        """Drop the job's pending removal: it was removed by other means."""
        timer = self._timers.pop(job_id, None)
        if timer is not None:
            timer.cancel()

    def close(self) -> None:
        """Cancel every pending removal; the next start schedules them again."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._removals:
            task.cancel()

    def _seconds_left(self, record: JobRecord) -> float:
        assert self._keep is not None
        ended_at = record.ended_at or record.created_at  # every ended record has ended_at
        return self._keep - (utcnow() - ended_at).total_seconds()

    def _start_removal(self, job_id: str) -> None:
        del self._timers[job_id]
        task = asyncio.create_task(self._removal(job_id), name=f"remove-{job_id}")
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def _removal(self, job_id: str) -> None:
        try:
            await self._remove(job_id)
            log.info("job %s removed: it ended more than %s s ago", job_id, self._keep)
        except StorageError as error:  # nobody to report to: log it; the next start retries
            log.warning("job %s could not be removed: %s", job_id, error)
