"""A quota on the output of all jobs together, besides each job's own cap.

Each job's output is capped (1 GiB by default), but a thousand jobs at their
cap fill a terabyte. With a quota, a job starts with a cap of at most what the
quota has left, counting the output that ended jobs keep on disk and, for each
running job, all of its cap (it may still write that much). When the job ends,
what it holds becomes the size of its log; when it is removed, nothing. A start
finding nothing left is refused: removing ended jobs frees the quota again.
"""

from __future__ import annotations

from jobworker.runner.errors import CapacityExhausted


class OutputQuota:
    """Output bytes held by jobs, against an optional total; one per runner."""

    def __init__(self, total: int | None, per_job: int | None) -> None:
        self.total = total
        self.per_job = per_job
        self._held: dict[str, int] = {}
        self._used = 0

    @property
    def used(self) -> int:
        """Bytes held now: ended jobs' logs, and running jobs' caps."""
        return self._used

    def start(self, job_id: str) -> int | None:
        """The output cap of a new job, held against the quota; None for no cap at all."""
        if self.total is None:
            return self.per_job
        left = self.total - self._used
        if left <= 0:
            raise CapacityExhausted(
                f"the output quota of {_size(self.total)} is used up by the output of other "
                "jobs; remove ended jobs (`jobworker rm`) to free it"
            )
        cap = left if self.per_job is None else min(self.per_job, left)
        self.hold(job_id, cap)
        return cap

    def hold(self, job_id: str, size: int) -> None:
        """``job_id`` holds ``size`` bytes now (its cap while it runs, its log once ended)."""
        self._used += size - self._held.get(job_id, 0)
        self._held[job_id] = size

    def release(self, job_id: str) -> None:
        """The job and its output are gone."""
        self._used -= self._held.pop(job_id, 0)


def _size(size: int) -> str:
    return f"{size / (1 << 30):.1f} GiB" if size >= 1 << 30 else f"{size / (1 << 20):.1f} MiB"
