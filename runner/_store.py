"""Durable job records in SQLite (WAL mode, every commit fsynced).

Each record is one JSON document next to the few columns queries need. The
store is synchronous and not thread-safe by itself: the runner gives it one
thread of its own, so the event loop never waits on a disk flush.

A listing is read a page at a time, in SQL (see ``pages``): each of its queries
names the index that serves it, so a page reads only its own rows whatever the
number of records.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from jobworker.runner.errors import StorageError, StorageFull
from jobworker.runner.pages import Position
from jobworker.runner.records import JobRecord

SCHEMA_VERSION = 1
"""The table's version. Indexes are not part of it: any version may add or drop one."""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (created_at, id);
CREATE INDEX IF NOT EXISTS jobs_by_owner_time ON jobs (owner, created_at, id);
CREATE INDEX IF NOT EXISTS jobs_running ON jobs (created_at, id) WHERE state = 'running';
DROP INDEX IF EXISTS jobs_by_owner;
DROP INDEX IF EXISTS jobs_by_state;
"""
"""Idempotent: it also brings a database that older versions wrote up to date. Those
made the last two indexes, which no query uses now and every write would update.
``'running'`` is ``JobState.RUNNING`` written out: a query can use the partial index
only if it names the state as the same literal, not as a parameter."""

_GET = "SELECT id, owner, created_at, record FROM jobs WHERE id = ?"
_ALL = (
    "SELECT id, owner, created_at, record FROM jobs INDEXED BY jobs_by_time ORDER BY created_at, id"
)
_RUNNING = (
    "SELECT id, owner, created_at, record FROM jobs INDEXED BY jobs_running WHERE state = 'running'"
)
# Pages: after a (created_at, id), at most a number of rows. Running jobs are read from
# their own index (there are no more than may run), also for one owner: the owner's
# index would go through all of that owner's ended jobs first.
_PAGE = (
    "SELECT id, owner, created_at, record FROM jobs INDEXED BY jobs_by_time "
    "WHERE (created_at, id) > (?, ?) ORDER BY created_at, id LIMIT ?"
)
_PAGE_OF_OWNER = (
    "SELECT id, owner, created_at, record FROM jobs INDEXED BY jobs_by_owner_time "
    "WHERE owner = ? AND (created_at, id) > (?, ?) ORDER BY created_at, id LIMIT ?"
)
_PAGE_RUNNING = (
    "SELECT id, owner, created_at, record FROM jobs INDEXED BY jobs_running "
    "WHERE state = 'running' AND (created_at, id) > (?, ?) ORDER BY created_at, id LIMIT ?"
)
_PAGE_RUNNING_OF_OWNER = (
    "SELECT id, owner, created_at, record FROM jobs INDEXED BY jobs_running "
    "WHERE state = 'running' AND owner = ? AND (created_at, id) > (?, ?) "
    "ORDER BY created_at, id LIMIT ?"
)
_BEFORE_ALL = Position(created_at="", job_id="")
"""Before every record: each has a creation time, never empty."""


@dataclass(frozen=True)
class StoredPage:
    """Records in listing order; ``last`` is where they end, ``more`` whether others follow."""

    records: list[JobRecord]
    last: Position | None
    more: bool


class RecordStore:
    """The job records of one state directory."""

    def __init__(self, path: Path) -> None:
        _make_private(path)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as error:
            raise StorageError(f"cannot open the job database {path}: {error}") from None
        try:
            self._prepare(path)
        except BaseException:
            self._db.close()
            raise

    def _prepare(self, path: Path) -> None:
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"{path} was written by a newer jobworker (schema {version}); "
                    f"this one understands schema {SCHEMA_VERSION}"
                )
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk before put() returns, even across a power cut.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as error:
            raise StorageError(f"cannot open the job database {path}: {error}") from None

    def put(self, record: JobRecord) -> None:
        """Insert or replace a record, atomically and durably."""
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO jobs (id, owner, state, created_at, record) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.owner,
                    record.state.value,
                    record.created_at.isoformat(),
                    record.to_json(),
                ),
            )
        except sqlite3.Error as error:
            raise _storage_error(f"cannot store the record of job {record.id}", error) from None

    def delete(self, job_id: str) -> None:
        """Remove a record (of a job that failed to start); a missing one is fine."""
        try:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        except sqlite3.Error as error:
            raise _storage_error(f"cannot delete the record of job {job_id}", error) from None

    def get(self, job_id: str) -> JobRecord | None:
        """The record of one job, if there is one."""
        rows = self._query(_GET, (job_id,))
        return _decode(rows[0]) if rows else None

    def records(self) -> list[JobRecord]:
        """Every record, oldest first."""
        return [_decode(row) for row in self._query(_ALL, ())]

    def page(
        self, after: Position | None, limit: int, *, owner: str | None, running_only: bool
    ) -> StoredPage:
        """Up to ``limit`` records after ``after`` in listing order, of ``owner`` if given.

        ``running_only`` goes by the stored state; the runner knows better for a job
        whose final record is not stored yet.
        """
        start = after or _BEFORE_ALL
        keyset: tuple[str | int, ...] = (start.created_at, start.job_id, limit + 1)
        if owner is None:
            rows = self._query(_PAGE_RUNNING if running_only else _PAGE, keyset)
        else:
            query = _PAGE_RUNNING_OF_OWNER if running_only else _PAGE_OF_OWNER
            rows = self._query(query, (owner, *keyset))
        shown = rows[:limit]  # the row past them only says that another page follows
        last = Position(created_at=shown[-1][2], job_id=shown[-1][0]) if shown else None
        return StoredPage([_decode(row) for row in shown], last, more=len(rows) > limit)

    def running(self) -> list[JobRecord]:
        """Records of jobs that were running when last heard of (damaged ones come as lost)."""
        return [_decode(row) for row in self._query(_RUNNING, ())]

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def _query(self, sql: str, parameters: tuple[str | int, ...]) -> list[tuple[str, ...]]:
        try:
            return self._db.execute(sql, parameters).fetchall()
        except sqlite3.Error as error:
            raise StorageError(f"cannot read job records: {error}") from None


def _storage_error(what: str, error: sqlite3.Error) -> StorageError:
    """``StorageFull`` when the disk is full (SQLite needs room even to delete)."""
    if getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return StorageFull(f"{what}: no space left for the job database")
    return StorageError(f"{what}: {error}")


def _decode(row: tuple[str, ...]) -> JobRecord:
    """A row's record; a damaged one becomes a ``lost`` record saying so, never an error.

    One damaged row (a disk error, a hand edit) must not stop the service from
    starting or listing everyone else's jobs.
    """
    job_id, owner, created_at, text = row
    try:
        return JobRecord.from_json(text)
    except ValueError as error:
        return JobRecord.damaged(job_id, owner, created_at, str(error))


def _make_private(path: Path) -> None:
    """Create the database file, and fix an existing one, readable by the service alone.

    SQLite would create it by the umask (often 0644), letting any local user read
    every job's command line; it gives its -wal and -shm files the mode of the
    database file, so the whole set is private from the first write.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        for suffix in ("-wal", "-shm"):
            companion = path.with_name(path.name + suffix)
            if companion.exists():
                companion.chmod(0o600)
    except OSError as error:
        raise StorageError(f"cannot open the job database {path}: {error.strerror}") from None
