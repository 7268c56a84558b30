"""child: a step that fails before exec reaches the launcher as a ``Failed`` it can decode.

No root needed: a job with no namespaces and no other user runs only the steps any
process may take, so a real forked process goes through them here.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from jobworker.isolation import _child as child
from jobworker.isolation._protocol import Failed, ProcessSetup


def failure_of(process: ProcessSetup) -> tuple[Failed | None, int]:
    """Run ``child.run`` in a forked process: what it reported on its error pipe, its exit."""
    failed, exit_code, _output = run_child(process)
    return failed, exit_code


def run_child(
    process: ProcessSetup, stdin_fd: int | None = None
) -> tuple[Failed | None, int, bytes]:
    """``child.run`` in a forked process: its report, its exit and what it printed."""
    error_r, error_w = os.pipe2(os.O_CLOEXEC)
    output_r, output_w = os.pipe2(os.O_CLOEXEC)
    plan = child.ChildPlan(
        process=process,
        netns_fd=None,
        account_files=None,
        stdin_fd=stdin_fd,
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
    with os.fdopen(output_r, "rb") as output:
        printed = output.read()
    _pid, status = os.waitpid(pid, 0)
    failed = Failed.decode(report) if report else None
    return failed, os.waitstatus_to_exitcode(status), printed


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


def test_standard_input_is_the_file_given_else_empty(tmp_path: Path) -> None:
    cat = ProcessSetup(argv=("cat",), env={"PATH": "/usr/bin:/bin"})
    given = tmp_path / "stdin"
    given.write_bytes(b"line one\nline two\n")
    stdin_fd = os.open(given, os.O_RDONLY | os.O_CLOEXEC)
    try:
        assert run_child(cat, stdin_fd) == (None, 0, b"line one\nline two\n")
    finally:
        os.close(stdin_fd)
    assert run_child(cat) == (None, 0, b"")  # /dev/null
