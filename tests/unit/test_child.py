"""child: a step that fails before exec reaches the launcher as a ``Failed`` it can decode.

No root needed: a job with no namespaces and no other user runs only the steps any
process may take, so a real forked process goes through them here.
"""

from __future__ import annotations

import errno
import os

import pytest

from jobworker.isolation import _child as child
from jobworker.isolation._protocol import Failed, ProcessSetup


def failure_of(process: ProcessSetup) -> tuple[Failed | None, int]:
    """Run ``child.run`` in a forked process: what it reported on its error pipe, its exit."""
    error_r, error_w = os.pipe2(os.O_CLOEXEC)
    output_r, output_w = os.pipe2(os.O_CLOEXEC)
    plan = child.ChildPlan(
        process=process,
        netns_fd=None,
        account_files=None,
        stdout_fd=output_w,
        stderr_fd=output_w,
        error_fd=error_w,
        status_fd=None,
        ignored_signals=(),
    )
    pid = os.fork()
    if pid == 0:
        child.run(plan)  # never returns
    os.close(error_w)
    os.close(output_w)
    with os.fdopen(error_r, "rb") as errors:
        report = errors.read()
    os.close(output_r)
    _pid, status = os.waitpid(pid, 0)
    return (Failed.decode(report) if report else None), os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize(
    ("process", "stage", "number"),
    [
        (ProcessSetup(argv=("true",), env={"PATH": "/bin"}, cwd="/no/such/dir"), "chdir", "ENOENT"),
        (ProcessSetup(argv=("/no/such/command",), env={}), "exec", "ENOENT"),
        (ProcessSetup(argv=("/",), env={}), "exec", "EACCES"),
    ],
)
def test_a_failed_step_is_reported_as_failed(
    process: ProcessSetup, stage: str, number: str
) -> None:
    failed, exit_code = failure_of(process)
    assert failed is not None
    assert (failed.stage, failed.errno) == (stage, getattr(errno, number))
    assert failed.message == os.strerror(failed.errno)
    assert exit_code == 127


def test_a_successful_exec_reports_nothing() -> None:
    failed, exit_code = failure_of(ProcessSetup(argv=("true",), env={"PATH": "/usr/bin:/bin"}))
    assert failed is None
    assert exit_code == 0
