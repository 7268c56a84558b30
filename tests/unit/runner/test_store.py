"""store: durable job records in SQLite, in a temporary state directory."""

from __future__ import annotations

import gc
import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobworker.isolation.cgroups import Usage
from jobworker.isolation.limits import IOLimit, Limits
from jobworker.isolation.namespaces import Namespaces
from jobworker.isolation.outcome import Outcome
from jobworker.runner import _store as store_module
from jobworker.runner._store import SCHEMA_VERSION, RecordStore, StoredPage
from jobworker.runner.errors import StorageError
from jobworker.runner.records import JobRecord, JobState
from tests.descriptors import descriptor_targets

T0 = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def record(job_id: str, owner: str = "alice", created_at: datetime = T0) -> JobRecord:
    return JobRecord(
        id=job_id,
        owner=owner,
        argv=("sleep", "10"),
        working_directory="/tmp",
        user="1000:1000",
        limits=Limits(cpu_cores=0.5, io=(IOLimit(device="8:0", read_bps=1 << 20),)),
        namespaces=Namespaces(net=False),
        state=JobState.RUNNING,
        created_at=created_at,
        started_at=created_at,
    )


def ended(job: JobRecord, exit_code: int = 0) -> JobRecord:
    return job.finished(
        Outcome(
            exit_code=exit_code,
            signal=None,
            oom_killed=False,
            usage=Usage(cpu_user_usec=10),
            started_at=job.created_at,
            ended_at=job.created_at + timedelta(seconds=1),
        )
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "jobworker.db"


@pytest.fixture
def store(db: Path) -> Iterator[RecordStore]:
    opened = RecordStore(db)
    yield opened
    opened.close()


def open_files(path: Path) -> list[str]:
    """This process's descriptors that refer to ``path`` or its -wal/-shm companions."""
    return [target for target in descriptor_targets() if target.startswith(str(path))]


def set_user_version(path: Path, version: int) -> None:
    connection = sqlite3.connect(path)
    try:
        connection.execute(f"PRAGMA user_version={version}")
    finally:
        connection.close()


def pragma(path: Path, name: str) -> object:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        connection.close()


# --- reading and writing -----------------------------------------------------------


def test_an_empty_store_has_no_records(store: RecordStore) -> None:
    assert store.get("nope") is None
    assert store.records() == []
    assert store.running() == []
    for owner in (None, "alice"):
        for running_only in (False, True):
            empty = store.page(None, 10, owner=owner, running_only=running_only)
            assert empty == StoredPage([], last=None, more=False)


def test_put_then_get(store: RecordStore) -> None:
    job = record("a")
    store.put(job)
    assert store.get("a") == job
    assert store.get("b") is None


def test_delete_removes_one_record_and_commits(db: Path, store: RecordStore) -> None:
    store.put(record("a"))
    store.put(record("b"))
    store.delete("a")
    store.delete("never-stored")  # a start that failed before its record landed
    assert store.get("a") is None
    assert [r.id for r in store.records()] == ["b"]
    reopened = RecordStore(db)  # another connection: the delete is committed
    try:
        assert [r.id for r in reopened.records()] == ["b"]
    finally:
        reopened.close()


def ids(page: StoredPage) -> list[str]:
    return [r.id for r in page.records]


def listing(
    store: RecordStore, owner: str | None = None, *, running_only: bool = False
) -> list[str]:
    """Every id a listing by pages of two gives, in order."""
    listed: list[str] = []
    after = None
    while True:
        page = store.page(after, 2, owner=owner, running_only=running_only)
        listed += ids(page)
        after = page.last
        if not page.more:
            return listed


def test_pages_filter_by_owner(store: RecordStore) -> None:
    jobs = [record("a", "alice"), record("b", "bob", T0 + timedelta(1)), record("c", "alice")]
    for job in jobs:
        store.put(job)
    assert listing(store, "alice") == ["a", "c"]
    assert listing(store, "bob") == ["b"]
    assert listing(store, "carol") == []
    assert listing(store) == ["a", "c", "b"]
    assert [r.id for r in store.records()] == ["a", "c", "b"]


def test_pages_of_running_jobs_go_by_the_stored_state(store: RecordStore) -> None:
    for index, owner in enumerate(["alice", "bob", "alice", "alice", "bob", "alice"]):
        job = record(f"job{index}", owner, T0 + timedelta(seconds=index))
        store.put(ended(job) if index % 3 == 1 else job.stop_requested("x") if index == 5 else job)
    assert listing(store, running_only=True) == ["job0", "job2", "job3", "job5"]
    assert listing(store, "alice", running_only=True) == ["job0", "job2", "job3", "job5"]
    assert listing(store, "bob", running_only=True) == []
    assert listing(store, "bob") == ["job1", "job4"]


def test_records_are_oldest_first_whatever_the_insertion_order(store: RecordStore) -> None:
    times = {
        "late": T0 + timedelta(days=1),
        "whole-second": T0.replace(microsecond=0),  # isoformat drops ".000000"
        "one-microsecond-later": T0.replace(microsecond=1),
        "middle": T0,
        "earliest": T0 - timedelta(days=400),
    }
    for job_id, created_at in times.items():
        store.put(record(job_id, "alice" if len(job_id) % 2 else "bob", created_at))
    expected = sorted(times, key=times.__getitem__)
    assert [r.id for r in store.records()] == expected
    assert listing(store) == expected
    assert listing(store, running_only=True) == expected
    for owner in ("alice", "bob"):
        owned = listing(store, owner)
        assert owned == [i for i in expected if i in owned]
        assert owned


def test_records_created_at_the_same_time_are_ordered_by_id(store: RecordStore) -> None:
    for job_id in ("c", "a", "b", "e", "d"):
        store.put(record(job_id))
    assert [r.id for r in store.records()] == ["a", "b", "c", "d", "e"]
    assert listing(store) == ["a", "b", "c", "d", "e"]  # a page may end inside a tie


def test_removals_between_pages_skip_no_record_and_repeat_none(store: RecordStore) -> None:
    created = [record(f"job{i:02}", created_at=T0 + timedelta(seconds=i // 2)) for i in range(20)]
    for job in created:
        store.put(job)
    listed: list[str] = []
    after = None
    while True:
        page = store.page(after, 3, owner=None, running_only=False)
        listed += ids(page)
        if not page.more:
            break
        assert page.last is not None
        after = page.last
        # Between pages: the job the page ended at goes, and the one listed before it,
        # and the first of those not listed yet. An offset would now skip two.
        store.delete(page.last.job_id)
        store.delete(listed[-2])
        unlisted = [j.id for j in created if j.id not in listed and store.get(j.id)]
        store.delete(unlisted[0])
    removed_unlisted = {j.id for j in created} - set(listed)
    assert len(listed) == len(set(listed)), "a record was listed twice"
    assert listed == sorted(listed), "out of order"
    # Every record not listed was removed before its turn: none was skipped.
    assert all(store.get(job_id) is None for job_id in removed_unlisted)
    assert removed_unlisted


def test_a_listing_goes_past_a_damaged_record(db: Path, store: RecordStore) -> None:
    for index in range(3):
        store.put(record(f"job{index}", created_at=T0 + timedelta(seconds=index)))
    connection = sqlite3.connect(db)
    try:
        connection.execute("UPDATE jobs SET record = '{not json' WHERE id = 'job1'")
        connection.commit()
    finally:
        connection.close()
    first = store.page(None, 2, owner=None, running_only=False)
    damaged = first.records[1]
    assert (damaged.id, damaged.state) == ("job1", JobState.LOST)
    assert "record is damaged" in (damaged.note or "")
    assert first.more
    assert ids(store.page(first.last, 2, owner=None, running_only=False)) == ["job2"]
    # Its stored state is still running: the running-only listing has it, as lost.
    assert listing(store, running_only=True) == ["job0", "job1", "job2"]


@pytest.mark.parametrize(
    "query",
    [
        store_module._PAGE,
        store_module._PAGE_OF_OWNER,
        store_module._PAGE_RUNNING,
        store_module._PAGE_RUNNING_OF_OWNER,
    ],
)
def test_every_page_query_searches_an_index_from_where_the_last_page_ended(
    db: Path, store: RecordStore, query: str
) -> None:
    connection = sqlite3.connect(db)
    try:
        plan = connection.execute(f"EXPLAIN QUERY PLAN {query}", ("x",) * query.count("?"))
        steps = [row[3] for row in plan.fetchall()]
    finally:
        connection.close()
    assert len(steps) == 1, steps  # no sorting step: the index gives the order
    assert steps[0].startswith("SEARCH jobs USING INDEX"), steps
    assert "(created_at,id)>(?,?)" in steps[0], steps


def test_a_database_with_the_indexes_of_older_versions_gets_the_new_ones(db: Path) -> None:
    connection = sqlite3.connect(db)
    try:
        connection.executescript(
            """
            CREATE TABLE jobs (id TEXT PRIMARY KEY, owner TEXT NOT NULL, state TEXT NOT NULL,
                               created_at TEXT NOT NULL, record TEXT NOT NULL);
            CREATE INDEX jobs_by_owner ON jobs (owner, created_at);
            CREATE INDEX jobs_by_state ON jobs (state);
            PRAGMA user_version=1;
            """
        )
        job = record("a")
        connection.execute(
            "INSERT INTO jobs VALUES (?, ?, ?, ?, ?)",
            (job.id, job.owner, job.state.value, job.created_at.isoformat(), job.to_json()),
        )
        connection.commit()
    finally:
        connection.close()
    for _ in range(2):  # and opening it again changes nothing
        opened = RecordStore(db)
        try:
            assert listing(opened, "alice", running_only=True) == ["a"]
        finally:
            opened.close()
        connection = sqlite3.connect(db)
        try:
            indexes = connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            ).fetchall()
        finally:
            connection.close()
        assert sorted(name for (name,) in indexes) == [
            "jobs_by_owner_time",
            "jobs_by_time",
            "jobs_running",
        ]


def test_running_lists_only_running_jobs(store: RecordStore) -> None:
    store.put(record("a"))
    store.put(ended(record("b")))
    store.put(record("c").stop_requested("bob"))
    assert sorted(r.id for r in store.running()) == ["a", "c"]
    assert all(r.state is JobState.RUNNING for r in store.running())


def test_a_second_put_replaces_the_record(store: RecordStore) -> None:
    job = record("a")
    store.put(job)
    final = ended(job.stop_requested("bob"))
    store.put(final)
    assert store.get("a") == final
    assert store.get("a") != job
    assert store.records() == [final]
    assert store.running() == []


def test_records_survive_close_and_reopen(db: Path) -> None:
    jobs = [record("a"), ended(record("b", "bob", T0 + timedelta(seconds=1)), exit_code=7)]
    first = RecordStore(db)
    for job in jobs:
        first.put(job)
    first.close()
    second = RecordStore(db)
    try:
        assert second.records() == jobs
        assert second.get("b") == jobs[1]
        assert second.running() == [jobs[0]]
    finally:
        second.close()


KILLED_WRITER = """
import json, os, signal, sys
from pathlib import Path
from jobworker.runner.records import JobRecord
from jobworker.runner._store import RecordStore

store = RecordStore(Path(sys.argv[1]))
for operation, argument in json.loads(sys.argv[2]):
    if operation == "put":
        store.put(JobRecord.from_json(argument))
    else:
        store.delete(argument)
os.kill(os.getpid(), signal.SIGKILL)  # no close, no atexit, no finalizer
"""


def write_then_be_killed(db: Path, operations: list[tuple[str, str]]) -> None:
    """Apply puts and deletes in a child process SIGKILLed the moment the last returns."""
    child = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(db), json.dumps(operations)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr


def test_writes_survive_a_process_killed_as_soon_as_they_return(db: Path) -> None:
    # Durable against the service being killed, which is what a crash test can
    # cut; a power cut is synchronous=FULL's part and no test here can make one.
    a, b, c = record("a"), record("b", "bob"), record("c")
    operations = [
        ("put", a.to_json()),
        ("put", b.to_json()),
        ("put", c.to_json()),
        ("put", ended(b, exit_code=3).to_json()),
        ("delete", "a"),
    ]
    write_then_be_killed(db, operations)
    reopened = RecordStore(db)
    try:
        assert reopened.get("a") is None
        assert reopened.get("b") == ended(b, exit_code=3)
        assert reopened.get("c") == c
    finally:
        reopened.close()


def test_a_second_store_on_the_same_file_sees_committed_records(db: Path) -> None:
    one, two = RecordStore(db), RecordStore(db)
    try:
        one.put(record("a"))
        assert two.get("a") == record("a")
        two.put(ended(record("a")))
        assert one.get("a") == ended(record("a"))
        assert one.running() == []
    finally:
        one.close()
        two.close()


def test_the_database_is_in_wal_mode_and_has_the_schema_version(
    store: RecordStore, db: Path
) -> None:
    store.put(record("a"))
    assert pragma(db, "journal_mode") == "wal"
    assert pragma(db, "user_version") == SCHEMA_VERSION


def test_using_a_closed_store_is_a_storage_error(db: Path) -> None:
    store = RecordStore(db)
    store.close()
    with pytest.raises(StorageError):
        store.get("a")
    with pytest.raises(StorageError, match="job a"):
        store.put(record("a"))
    with pytest.raises(StorageError, match="job a"):
        store.delete("a")


# --- refusing what it cannot use -----------------------------------------------------


def test_a_database_from_a_newer_version_is_refused(db: Path) -> None:
    set_user_version(db, SCHEMA_VERSION + 1)
    with pytest.raises(StorageError) as refused:
        RecordStore(db)
    message = str(refused.value)
    assert str(db) in message
    assert f"schema {SCHEMA_VERSION + 1}" in message
    assert f"schema {SCHEMA_VERSION}" in message
    # Refused untouched: still the newer version, and not switched to WAL.
    assert pragma(db, "user_version") == SCHEMA_VERSION + 1
    assert pragma(db, "journal_mode") == "delete"


def test_a_corrupt_file_is_a_storage_error(db: Path) -> None:
    db.write_bytes(b"this is not an SQLite database\n" * 200)
    with pytest.raises(StorageError, match="not a database") as refused:
        RecordStore(db)
    assert not isinstance(refused.value, sqlite3.Error)
    assert str(db) in str(refused.value)


@pytest.mark.parametrize(
    "where",
    ["missing directory", "parent is a file", "directory nobody may write to"],
)
def test_an_unusable_directory_is_a_storage_error(tmp_path: Path, where: str) -> None:
    if where == "missing directory":
        path = tmp_path / "no" / "such" / "dir" / "jobworker.db"
    elif where == "parent is a file":
        (tmp_path / "file").write_text("")
        path = tmp_path / "file" / "jobworker.db"
    else:
        # Permission bits don't stop root; /proc refuses new files to everyone.
        path = Path("/proc/jobworker-unit-test.db")
    with pytest.raises(StorageError, match="cannot open the job database") as refused:
        RecordStore(path)
    assert str(path) in str(refused.value)
    assert not path.exists()


@pytest.mark.parametrize("damage", ["newer schema", "not a database"])
def test_a_refused_database_is_not_left_open(db: Path, damage: str) -> None:
    if damage == "newer schema":
        set_user_version(db, SCHEMA_VERSION + 1)
    else:
        db.write_bytes(b"garbage!" * 1000)
    gc.disable()  # what is tested is that the store closes it, not that the GC does
    try:
        try:
            RecordStore(db)
        except StorageError:
            pass
        else:
            pytest.fail("the database was not refused")
        assert open_files(db) == []
    finally:
        gc.enable()
        gc.collect()
