"""Runner errors become standard gRPC codes with the runner's specific message."""

from __future__ import annotations

import grpc
import pytest

from jobworker.api._status import status_for
from jobworker.api.errors import TooManyStreams
from jobworker.runner import errors


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.JobNotFound("no job x"), grpc.StatusCode.NOT_FOUND),
        (errors.InvalidRequest("limits.pids", "0 is outside"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.LimitUnenforceable("cpu", "3 cores"), grpc.StatusCode.FAILED_PRECONDITION),
        (
            errors.StartFailed("sh: not found", errors.StartFailure.COMMAND_NOT_FOUND),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        (errors.HostUnsupported("no cgroup v2"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.JobStillRunning("job x is running"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.CapacityExhausted("1000 jobs"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.UserNotAllowed("only an admin may"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.StorageFull("no space left"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.StorageError("database is locked"), grpc.StatusCode.UNAVAILABLE),
        (TooManyStreams("bob already has 128"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
    ids=lambda value: type(value).__name__,
)
def test_each_error_gets_its_code_and_keeps_its_message(
    error: Exception, code: grpc.StatusCode
) -> None:
    assert status_for(error) == (code, str(error))


def test_an_invalid_request_message_names_its_field() -> None:
    _, message = status_for(errors.InvalidRequest("page_size", "must be between 0 and 1000"))
    assert message == "page_size: must be between 0 and 1000"


@pytest.mark.parametrize(
    "error",
    [errors.InternalError("pidfd_open: EBADF"), OSError(5, "I/O error"), KeyError("x")],
)
def test_internal_failures_are_logged_but_not_shown(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    code, message = status_for(error)
    assert code == grpc.StatusCode.INTERNAL
    assert str(error) not in message
    assert "Traceback" not in message
    assert caplog.records[-1].exc_info is not None
