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
from jobworker.runner.errors import StorageError
from jobworker.runner.records import JobRecord, JobState
from jobworker.runner.store import SCHEMA_VERSION, RecordStore
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
    assert store.records("alice") == []
    assert store.running() == []


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


def test_records_filters_by_owner(store: RecordStore) -> None:
    jobs = [record("a", "alice"), record("b", "bob", T0 + timedelta(1)), record("c", "alice")]
    for job in jobs:
        store.put(job)
    assert [r.id for r in store.records("alice")] == ["a", "c"]
    assert [r.id for r in store.records("bob")] == ["b"]
    assert store.records("carol") == []
    assert [r.id for r in store.records()] == ["a", "c", "b"]


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
    for owner in ("alice", "bob"):
        owned = [r.id for r in store.records(owner)]
        assert owned == [i for i in expected if i in owned]
        assert owned


def test_records_created_at_the_same_time_are_ordered_by_id(store: RecordStore) -> None:
    for job_id in ("c", "a", "b"):
        store.put(record(job_id))
    assert [r.id for r in store.records()] == ["a", "b", "c"]


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
from jobworker.runner.store import RecordStore

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
