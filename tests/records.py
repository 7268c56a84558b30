"""A job record for tests that need one: plain values, any of them replaced by name."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jobworker.runner.records import JobRecord, JobState, Limits, Namespaces

CREATED = datetime(2026, 12, 7, tzinfo=UTC)


def a_record(**fields: Any) -> JobRecord:
    """A running job of alice's running ``true`` as nobody; ``fields`` replace any value."""
    values: dict[str, Any] = {
        "id": "3f1c2d9e-0000-4000-8000-000000000001",
        "owner": "alice",
        "argv": ("true",),
        "working_directory": "/",
        "user": "nobody",
        "limits": Limits(),
        "namespaces": Namespaces(),
        "state": JobState.RUNNING,
        "created_at": CREATED,
    }
    return JobRecord(**(values | fields))
