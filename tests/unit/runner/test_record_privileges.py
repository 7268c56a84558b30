"""records: what a job asked for of its privileges is kept, and old records read as defaults."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from jobworker.runner.records import JobRecord, JobState, Limits, Namespaces, Privileges

CREATED = datetime(2026, 12, 7, 22, 0, 0, 123456, tzinfo=UTC)


def record(**changes: object) -> JobRecord:
    fields: dict[str, object] = {
        "id": "3f1c2d9e-0000-4000-8000-000000000002",
        "owner": "admin",
        "argv": ("true",),
        "working_directory": "/",
        "user": "root",
        "limits": Limits(),
        "namespaces": Namespaces(),
        "state": JobState.RUNNING,
        "created_at": CREATED,
    }
    fields.update(changes)
    return JobRecord(**fields)  # type: ignore[arg-type]


def test_privileges_survive_the_store() -> None:
    asked = Privileges(
        cap_add=("net_admin",), cap_drop=("ALL", "CAP_CHOWN"), seccomp=False, no_new_privs=True
    )
    assert JobRecord.from_json(record(privileges=asked).to_json()).privileges == asked


def test_a_record_from_before_privileges_had_the_defaults() -> None:
    data = json.loads(record(privileges=Privileges(no_new_privs=True)).to_json())
    del data["privileges"]
    assert JobRecord.from_json(json.dumps(data)).privileges == Privileges()
