"""pages: the token that continues a job listing, and what it refuses."""

from __future__ import annotations

import base64
import contextlib
import json
import string

import pytest

from jobworker.runner.errors import InvalidRequest
from jobworker.runner.pages import Position

WHERE = Position(created_at="2024-05-06T07:08:09.123456+00:00", job_id="0b6e1c5c-6b0b-4c5b")


def token_of(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


def refused(token: str) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as refusal:
        Position.from_token(token)
    return refusal.value


def test_a_token_resumes_where_it_was_made() -> None:
    token = WHERE.token()
    assert Position.from_token(token) == WHERE
    assert set(token) <= set(string.ascii_letters + string.digits + "-_=")  # safe in a URL
    damaged = Position(created_at="not a time, but what the row holds", job_id="x")
    assert Position.from_token(damaged.token()) == damaged


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "jobs:100",
        token_of("jobs:100")[:-1],
        "é",
        " ",
        "a" * 5000,
        base64.urlsafe_b64encode(b"[" * 760).decode(),
        base64.urlsafe_b64encode(b"[" * 100_000).decode(),
    ],
    ids=["garbage", "an offset", "cut short", "not ascii", "blank", "huge", "deep", "deeper"],
)
def test_garbage_is_an_invalid_page_token(token: str) -> None:
    error = refused(token)
    assert error.field == "page_token"
    assert str(error) == "page_token: not a page token from an earlier ListJobs call"


@pytest.mark.parametrize(
    "value",
    [
        [2, WHERE.created_at, WHERE.job_id],
        [1, WHERE.created_at],
        [1, WHERE.created_at, WHERE.job_id, "more"],
        [1, 5, WHERE.job_id],
        [1, WHERE.created_at, None],
        {"created_at": WHERE.created_at, "job_id": WHERE.job_id},
        "jobs:100",
        [[[1, WHERE.created_at, WHERE.job_id]]],
    ],
    ids=["other version", "short", "long", "number", "null", "object", "string", "nested"],
)
def test_a_tampered_token_is_invalid(value: object) -> None:
    assert refused(token_of(value)).field == "page_token"


def test_a_token_with_any_character_changed_is_refused_as_a_page_token_if_at_all() -> None:
    # A change either breaks the token or moves where it resumes: no other error.
    token = WHERE.token()
    for index in range(len(token)):
        for replacement in "A_-=!/+":
            with contextlib.suppress(InvalidRequest):
                Position.from_token(token[:index] + replacement + token[index + 1 :])
