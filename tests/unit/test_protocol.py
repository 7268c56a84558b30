"""_protocol: each message survives its wire form, and anything malformed is refused as such."""

from __future__ import annotations

import errno
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from jobworker.isolation._protocol import (
    READY,
    Cloned,
    Failed,
    ForkFailed,
    ProcessSetup,
    Request,
    ShimState,
    decode_reply,
)
from jobworker.isolation.errors import MalformedMessage
from jobworker.isolation.rundir import RunDir
from jobworker.isolation.timelimits import TimeLimits

STARTED = datetime(2026, 12, 7, 18, 0, 0, 123456, tzinfo=UTC)


def full_request() -> Request:
    """Every field set to something other than its default."""
    return Request(
        job_id="4f0c-job",
        cgroup=Path("/sys/fs/cgroup/jobworker/jobs/4f0c-job"),
        run_dir=RunDir(Path("/var/lib/jobworker/jobs/4f0c-job")),
        process=ProcessSetup(
            argv=("sh", "-c", "echo \x01 é \u2603", ""),
            env={"PATH": "/bin", "EMPTY": "", "NL": "a\nb"},
            cwd="/tmp",
            pid_namespace=True,
            unshare_flags=0x20000 | 0x40000000,
            private_mounts=True,
            hostname="4f0c-job",
            uid=70000,
            gid=70001,
            groups=(70001, 5),
            no_new_privs=True,
        ),
        output_cap=1 << 30,
        account=("u:x:70000:70001::/home/u:/bin/sh\n", "u:x:70001:\n"),
        stdin=True,
        time_limits=TimeLimits(timeout=1.5, cpu_time=3600, grace=0),
    )


def minimal_request() -> Request:
    """Every field that has a default left to it."""
    return Request(
        job_id="j",
        cgroup=Path("/c"),
        run_dir=RunDir(Path("/r")),
        process=ProcessSetup(argv=("true",), env={}),
    )


@pytest.mark.parametrize("request_", [full_request(), minimal_request()])
def test_a_request_survives_its_wire_form(request_: Request) -> None:
    assert Request.decode(request_.encode()) == request_


def test_a_request_is_sent_as_utf8_not_escaped() -> None:
    # Escaping every non-ASCII character would make a request that the spec allows
    # up to six times larger on the wire.
    raw = full_request().encode()
    assert "é \u2603".encode() in raw
    assert b"\\u" not in raw.replace(b"\\u0001", b"")


def test_cloned_and_failed_survive_their_wire_form() -> None:
    cloned = Cloned(pid=4242, started_at=STARTED)
    failed = Failed(stage="exec", errno=errno.ENOENT, message="No such file or directory")
    assert decode_reply(cloned.encode()) == cloned
    assert decode_reply(failed.encode()) == failed
    assert Failed.decode(failed.encode()) == failed


def test_the_error_pipe_refuses_a_report_of_success() -> None:
    with pytest.raises(MalformedMessage):
        Failed.decode(Cloned(pid=1, started_at=STARTED).encode())


def test_shim_state_survives_its_file_form() -> None:
    state = ShimState(
        shim_pid=10, shim_ticks=1234, main_pid=11, main_ticks=1240, started_at=STARTED
    )
    assert ShimState.decode(state.encode()) == state


@pytest.mark.parametrize(
    "raw",
    [b"", b"{not json", b"\xff\xfe", b"[]", b"null", b'"request"'],
    ids=["empty", "not-json", "not-utf8", "list", "null", "string"],
)
def test_what_is_not_a_json_object_is_malformed(raw: bytes) -> None:
    for decode in (Request.decode, decode_reply, Failed.decode):
        with pytest.raises(MalformedMessage):
            decode(raw)
    with pytest.raises(MalformedMessage):
        ShimState.decode(raw.decode(errors="replace"))


def mutated(raw: bytes | str, change: dict[str, Any], *, inside: str | None = None) -> bytes:
    """``raw``'s JSON with ``change`` applied (to the object at key ``inside``, if given).

    A value of ``...`` removes the key.
    """
    data = json.loads(raw)
    target = data if inside is None else data[inside]
    for key, value in change.items():
        if value is ...:
            del target[key]
        else:
            target[key] = value
    return json.dumps(data).encode()


REQUEST_DAMAGE = [
    ({"job_id": ...}, None),
    ({"job_id": 7}, None),
    ({"surprise": 1}, None),
    ({"output_cap": "big"}, None),
    ({"output_cap": True}, None),
    ({"account": ["only one line"]}, None),
    ({"account": [1, 2]}, None),
    ({"process": []}, None),
    ({"argv": "sh -c true"}, "process"),
    ({"argv": ["sh", 1]}, "process"),
    ({"env": {"A": 1}}, "process"),
    ({"env": [["A", "b"]]}, "process"),
    ({"uid": "0"}, "process"),
    ({"uid": 1.5}, "process"),
    ({"groups": [True]}, "process"),
    ({"pid_namespace": 1}, "process"),
    ({"hostname": 0}, "process"),
    ({"no_new_privs": ...}, "process"),
    ({"seccomp": "strict"}, "process"),
    ({"time_limits": ...}, None),
    ({"time_limits": 5}, None),
    ({"timeout": "5s"}, "time_limits"),
    ({"timeout": True}, "time_limits"),
    ({"cpu_time": [1]}, "time_limits"),
    ({"grace": None}, "time_limits"),
    ({"grace": ...}, "time_limits"),
    ({"deadline": 5}, "time_limits"),
]


@pytest.mark.parametrize(("change", "inside"), REQUEST_DAMAGE)
def test_a_damaged_request_is_malformed(change: dict[str, Any], inside: str | None) -> None:
    with pytest.raises(MalformedMessage):
        Request.decode(mutated(full_request().encode(), change, inside=inside))


@pytest.mark.parametrize(
    ("reply", "change"),
    [
        (Cloned(pid=1, started_at=STARTED), {"event": "started"}),
        (Cloned(pid=1, started_at=STARTED), {"event": ...}),
        (Cloned(pid=1, started_at=STARTED), {"pid": "1"}),
        (Cloned(pid=1, started_at=STARTED), {"started_at": "yesterday"}),
        (Cloned(pid=1, started_at=STARTED), {"started_at": 1700000000}),
        (Cloned(pid=1, started_at=STARTED), {"stage": "exec"}),
        (Failed(stage="exec", errno=2, message="x"), {"errno": None}),
        (Failed(stage="exec", errno=2, message="x"), {"message": ...}),
        (Failed(stage="exec", errno=2, message="x"), {"stage": ["exec"]}),
    ],
)
def test_a_damaged_reply_is_malformed(reply: Cloned | Failed, change: dict[str, Any]) -> None:
    with pytest.raises(MalformedMessage):
        decode_reply(mutated(reply.encode(), change))


@pytest.mark.parametrize(
    "change",
    [
        {"shim_pid": ...},
        {"main_ticks": None},
        {"shim_ticks": "1234"},
        {"main_pid": False},
        {"started_at": "2026-13-40"},
        {"extra": 1},
    ],
)
def test_a_damaged_state_file_is_malformed(change: dict[str, Any]) -> None:
    state = ShimState(
        shim_pid=10, shim_ticks=1234, main_pid=11, main_ticks=1240, started_at=STARTED
    )
    with pytest.raises(MalformedMessage):
        ShimState.decode(mutated(state.encode(), change).decode())


def test_the_error_names_what_is_wrong() -> None:
    raw = mutated(full_request().encode(), {"uid": "0"}, inside="process")
    with pytest.raises(MalformedMessage, match="process setup: uid is not an integer"):
        Request.decode(raw)


def test_a_failed_fork_survives_its_wire_form_and_is_told_from_ready() -> None:
    failed = ForkFailed(errno.EAGAIN, "Resource temporarily unavailable")
    message = failed.encode()
    assert ForkFailed.is_one(message)
    assert not ForkFailed.is_one(READY)
    assert ForkFailed.decode(message) == failed


@pytest.mark.parametrize("message", [READY, b"fork failed\0x\0reason", b""])
def test_anything_else_is_not_a_failed_fork(message: bytes) -> None:
    with pytest.raises(MalformedMessage):
        ForkFailed.decode(message)
