"""Part of item 3: what a ListJobs page costs at 100 records and at 100,000.

The part of a page that could grow with the number of records is the store's: the
query, decoding the page's records and making the next token. That is timed here,
on the record store alone, so it needs no root and no server: ``python -m
bench.pages`` measures it on any machine. The rest of the call (converting a page to
protobuf, TLS) depends on the page, not on how many records there are.

Each page holds 100 jobs (ListJobs' default) of every state, read after a position
in the middle of the listing; the records are 99% ended jobs, as a store keeping
ended jobs for a day holds. The database lives on tmpfs when the machine has
``/dev/shm``: filling it commits each record, and an fsync per record would take
minutes to write 100,000 and measure nothing about reading them.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jobworker.isolation.cgroups import Usage
from jobworker.isolation.limits import Limits
from jobworker.isolation.namespaces import Namespaces
from jobworker.isolation.outcome import Outcome
from jobworker.runner._store import RecordStore
from jobworker.runner.pages import Position
from jobworker.runner.records import JobRecord, JobState

SIZES = (100, 100_000)
PAGE = 100
ROUNDS = 200
_OWNERS = 10
_TMPFS = Path("/dev/shm")


def page_milliseconds(sizes: tuple[int, ...] = SIZES, rounds: int = ROUNDS) -> list[list[float]]:
    """Milliseconds per page of ``PAGE`` jobs from a store of each size, ``rounds`` times.

    The stores take turns, page by page, so that whatever else the machine does
    weighs on every size alike.
    """
    folder = Path(tempfile.mkdtemp(prefix="jobworker-pages-", dir=_tmpfs_or_default()))
    stores: list[RecordStore] = []
    try:
        starts: list[Position | None] = []
        for records in sizes:
            stores.append(RecordStore(folder / f"{records}.db"))
            _fill(stores[-1], records)
            before = max(records // 2 - PAGE // 2, 0)  # the page in the middle
            skipped = (
                stores[-1].page(None, before, owner=None, running_only=False) if before else None
            )
            starts.append(skipped.last if skipped else None)
        samples: list[list[float]] = [[] for _ in sizes]
        for _ in range(rounds):
            for store, after, timed in zip(stores, starts, samples, strict=True):
                began = time.perf_counter()
                page = store.page(after, PAGE, owner=None, running_only=False)
                if page.more and page.last is not None:
                    page.last.token()
                timed.append((time.perf_counter() - began) * 1000)
                if len(page.records) != PAGE:
                    raise RuntimeError(f"a page held {len(page.records)} jobs, not {PAGE}")
        return samples
    finally:
        for store in stores:
            store.close()
        shutil.rmtree(folder, ignore_errors=True)


def _fill(store: RecordStore, count: int) -> None:
    began = datetime(2026, 1, 1, tzinfo=UTC)
    for index in range(count):
        created = began + timedelta(seconds=index)
        record = JobRecord(
            id=str(uuid.uuid4()),
            owner=f"user{index % _OWNERS}",
            argv=("sh", "-c", "echo hello; sleep 1"),
            working_directory="/",
            user="job-0b6e1c5c",
            limits=Limits(cpu_cores=0.5, memory_bytes=256 << 20, pids=100),
            namespaces=Namespaces(),
            state=JobState.RUNNING,
            created_at=created,
            started_at=created,
            uid=0x70000000 + index % 0x10000,
            gid=0x70000000 + index % 0x10000,
        )
        if index % 100:
            outcome = Outcome(
                exit_code=0,
                signal=None,
                oom_killed=False,
                usage=Usage(cpu_user_usec=1200, cpu_system_usec=800, memory_peak_bytes=4 << 20),
                started_at=created,
                ended_at=created + timedelta(seconds=1),
            )
            record = record.finished(outcome)
        store.put(record)


def _tmpfs_or_default() -> Path | None:
    return _TMPFS if _TMPFS.is_dir() else None


def main() -> None:
    """Print the page cost at each size and their ratio."""
    medians = []
    for records, samples in zip(SIZES, page_milliseconds(), strict=True):
        medians.append(statistics.median(samples))
        print(f"page of {PAGE} at {records:>7,} records: {medians[-1]:.3f} ms", end=" ")
        print(f"(median of {len(samples)}; fastest {min(samples):.3f} ms)")
    print(f"ratio {SIZES[1]:,} / {SIZES[0]:,} records: {medians[1] / medians[0]:.2f}")


if __name__ == "__main__":
    main()
