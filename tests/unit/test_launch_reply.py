"""The launcher's reading of a shim's start report: descriptors never leak on a bad one."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jobworker.isolation._protocol import Cloned, Failed
from jobworker.isolation.errors import CommandNotFound, MalformedMessage
from jobworker.isolation.launcher import _cloned
from jobworker.isolation.spec import JobSpec

SPEC = JobSpec(job_id="reply-test", argv=("missing-command",), run_dir=Path("/nonexistent"))


@pytest.fixture
def fds() -> Iterator[list[int]]:
    read_end, write_end = os.pipe()
    yield [read_end, write_end]
    for fd in (read_end, write_end):
        if not is_closed(fd):
            os.close(fd)


def is_closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as error:
        return error.errno == errno.EBADF
    return False


@pytest.mark.parametrize(
    ("message", "raised"),
    [
        (b"{not json", MalformedMessage),
        (Failed("exec", errno.ENOENT, "No such file or directory").encode(), CommandNotFound),
        (Cloned(4242, datetime.now(UTC)).encode(), MalformedMessage),  # two fds, not one
    ],
)
def test_every_descriptor_of_a_report_that_is_not_a_start_is_closed(
    fds: list[int], message: bytes, raised: type[Exception]
) -> None:
    with pytest.raises(raised):
        _cloned(SPEC, message, fds)
    assert all(is_closed(fd) for fd in fds)


def test_a_start_report_hands_over_its_one_pidfd_open(fds: list[int]) -> None:
    reported = Cloned(4242, datetime.now(UTC))
    reply, pidfd = _cloned(SPEC, reported.encode(), fds[:1])
    assert (reply, pidfd) == (reported, fds[0])
    assert not is_closed(fds[0])
