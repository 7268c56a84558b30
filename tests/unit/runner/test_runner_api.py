"""runner: isolation errors translated at the boundary, and the request/config defaults.

The ``Runner`` itself needs root and a cgroup v2 kernel; it is tested in
``tests/privileged``.
"""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest

from jobworker.isolation import errors as isolation
from jobworker.isolation.limits import Limits
from jobworker.isolation.namespaces import Namespaces
from jobworker.runner import errors as runner
from jobworker.runner.runner import RunnerConfig, StartRequest, _translate

START_FAILURES = [
    (
        isolation.CommandNotFound("no such command: frob", stage="exec", errno=errno.ENOENT),
        runner.StartFailure.COMMAND_NOT_FOUND,
    ),
    (
        isolation.CommandNotExecutable("/etc/passwd: permission denied", stage="exec"),
        runner.StartFailure.COMMAND_NOT_EXECUTABLE,
    ),
    (
        isolation.BadWorkingDirectory("/nope: no such directory", stage="chdir"),
        runner.StartFailure.BAD_WORKING_DIRECTORY,
    ),
    (
        isolation.LaunchError("mounting /proc failed", stage="mount", errno=errno.EPERM),
        runner.StartFailure.SETUP_FAILED,
    ),
]


@pytest.mark.parametrize(("error", "reason"), START_FAILURES, ids=lambda x: type(x).__name__)
def test_launch_errors_become_start_failed_with_their_reason(
    error: isolation.LaunchError, reason: runner.StartFailure
) -> None:
    translated = _translate(error)
    assert type(translated) is runner.StartFailed
    assert translated.reason is reason
    assert str(translated) == str(error)


@pytest.mark.parametrize(
    "error",
    [
        isolation.InvalidSpec("limits.memory_bytes", "at least 6 MiB"),
        isolation.InvalidDevice("limits.io[0].device", "/dev/null is not a block device"),
    ],
    ids=lambda x: type(x).__name__,
)
def test_invalid_specs_become_invalid_request_naming_the_field(
    error: isolation.InvalidSpec,
) -> None:
    translated = _translate(error)
    assert type(translated) is runner.InvalidRequest
    assert translated.field == error.field
    assert str(translated) == str(error)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (isolation.HostUnsupported("cgroup v1 only: boot with ..."), runner.HostUnsupported),
        (isolation.InternalError("the fork server broke its protocol"), runner.InternalError),
        (isolation.IsolationError("something else went wrong"), runner.InternalError),
    ],
    ids=lambda x: getattr(x, "__name__", type(x).__name__),
)
def test_other_isolation_errors(
    error: isolation.IsolationError, expected: type[runner.RunnerError]
) -> None:
    translated = _translate(error)
    assert type(translated) is expected
    assert str(translated) == str(error)


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        ValueError("not ours"),
        runner.StorageError("already a runner error"),
        asyncio.CancelledError(),
        KeyboardInterrupt(),
    ],
    ids=lambda x: type(x).__name__,
)
def test_everything_else_is_passed_through_unchanged(error: BaseException) -> None:
    assert _translate(error) is error


def test_every_translated_error_is_a_runner_error() -> None:
    errors: list[isolation.IsolationError] = [error for error, _ in START_FAILURES]
    errors += [
        isolation.InvalidSpec("pids", "too many"),
        isolation.HostUnsupported("no"),
        isolation.InternalError("bug"),
    ]
    for error in errors:
        translated = _translate(error)
        assert isinstance(translated, runner.RunnerError)
        assert not isinstance(translated, isolation.IsolationError)


def test_runner_config_defaults(tmp_path: Path) -> None:
    config = RunnerConfig(state_dir=tmp_path)
    assert config.output_cap_bytes == 1 << 30
    assert config.stop_jobs_on_close is False
    assert config.cgroup_parent is None
    assert config.max_running_jobs == 1000  # the README's server defaults
    assert config.shutdown_grace_seconds == 10.0  # as a stop that names no grace period


def test_start_request_defaults() -> None:
    request = StartRequest(command="true")
    assert request.args == ()
    assert request.limits == Limits()
    assert request.namespaces == Namespaces()
    assert request.namespaces.enabled() == Namespaces.names()  # isolated by default
    assert request.working_directory == "/"
    assert dict(request.environment) == {}
    assert StartRequest(command="true").environment is not request.environment
