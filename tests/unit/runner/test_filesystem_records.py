"""A job record keeps the filesystem view it was asked for, and older records have the host's."""

from __future__ import annotations

import json

from jobworker.runner.records import (
    Bind,
    Filesystem,
    JobRecord,
    Tmpfs,
)
from tests.records import a_record

RECORD = a_record(
    filesystem=Filesystem(
        read_only=True,
        tmpfs=(Tmpfs("/work", 1 << 20), Tmpfs("/cache")),
        binds=(Bind("/srv", "/data", read_only=True), Bind("/x")),
        rootfs="/srv/root",
    ),
)


def test_a_view_survives_the_store() -> None:
    assert JobRecord.from_json(RECORD.to_json()) == RECORD


def test_a_record_from_before_views_has_the_hosts() -> None:
    data = json.loads(RECORD.to_json())
    del data["filesystem"]
    assert JobRecord.from_json(json.dumps(data)).filesystem == Filesystem()
