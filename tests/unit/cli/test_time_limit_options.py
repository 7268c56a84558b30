"""``run --timeout`` / ``--cpu-time``: parsing, the request, the JSON, and the exit status."""

from __future__ import annotations

import argparse

import pytest
from google.protobuf.duration_pb2 import Duration

from jobworker.cli import _render as render
from jobworker.cli._client import exit_status
from jobworker.cli._errors import UsageError
from jobworker.cli._parser import build
from jobworker.cli._request import start_request
from jobworker.cli._units import parse_duration, parse_time_limit
from jobworker.v1 import jobworker_pb2 as pb

JOB = "0b6e1c5c-6b0b-4c5b-9d3a-3d7b1f2a9c10"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("2m", 120),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("2m30s", 150),
        ("1d2h3m4s5ms", 93784.005),
        ("500ms", 0.5),
        ("2.5", 2.5),
        ("1.5m", 90),
    ],
)
def test_durations_may_add_up_several_units(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["1h30", "h", "1x", "1h-30m", "", "1h,30m", "30m1"])
def test_a_compound_duration_needs_a_unit_on_every_part(text):
    with pytest.raises(argparse.ArgumentTypeError, match="is not a duration; use a number"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "'0': a time limit must be more than 0s"),
        ("0ms", "'0ms': a time limit must be more than 0s"),
        ("366d", "'366d': a time limit may be at most a year (365d)"),
        ("soon", "'soon' is not a duration"),
    ],
)
def test_a_time_limit_is_more_than_0_and_at_most_a_year(text, message):
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        parse_time_limit(text)
    assert str(refused.value).startswith(message)


def test_a_year_is_allowed():
    assert parse_time_limit("365d") == 365 * 86400


def test_run_sends_the_time_limits_as_durations():
    args = build().parse_args(["run", "--timeout", "1h30m", "--cpu-time", "500ms", "--", "x"])
    request = start_request(args)
    assert request.timeout == Duration(seconds=5400)
    assert request.cpu_time == Duration(nanos=500_000_000)


def test_run_without_time_limits_leaves_them_unset():
    request = start_request(build().parse_args(["run", "--", "x"]))
    assert not request.HasField("timeout")
    assert not request.HasField("cpu_time")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--timeout", "0s", "--", "x"], "argument --timeout: '0s': a time limit must be"),
        (["run", "--cpu-time", "2y", "--", "x"], "argument --cpu-time: '2y' is not a duration"),
    ],
)
def test_a_bad_time_limit_is_a_usage_error_naming_the_option(argv, message):
    with pytest.raises(UsageError) as refused:
        build().parse_args(argv)
    assert message in str(refused.value)


def ended(**fields: object) -> pb.Job:
    return pb.Job(id=JOB, state=pb.JOB_STATE_EXITED, **fields)  # type: ignore[arg-type]


def test_follow_exits_124_at_the_timeout_whatever_the_command_did(capsys):
    job = ended(signal=15, signal_name="SIGTERM", timed_out=True, timeout=Duration(seconds=2))
    assert exit_status(job) == 124
    assert capsys.readouterr().err == (
        f"jobworker: job {JOB} exited (killed by SIGTERM, at its timeout)\n"
    )
    assert exit_status(ended(exit_code=0, timed_out=True)) == 124


def test_follow_exits_152_once_the_cpu_time_is_used_up(capsys):
    job = ended(signal=9, signal_name="SIGKILL", cpu_time_exceeded=True)
    assert exit_status(job) == 152
    assert "(killed by SIGKILL, its CPU time used up)" in capsys.readouterr().err


def test_a_job_without_time_limits_exits_as_before():
    assert exit_status(ended(signal=15, signal_name="SIGTERM")) == 143
    assert exit_status(ended(exit_code=3)) == 3


def test_status_shows_the_time_limits_and_which_ended_the_job():
    job = ended(
        exit_code=143, timed_out=True, timeout=Duration(seconds=90), cpu_time=Duration(nanos=5)
    )
    data = render.job_json(job)
    assert data["timeout_seconds"] == 90.0
    assert data["cpu_time_seconds"] == 5e-9
    assert (data["timed_out"], data["cpu_time_exceeded"]) == (True, False)
    assert "time:       timeout 90s, cpu time 5e-09s\n" in render.status_text(job)


def test_a_job_without_time_limits_has_none_in_json_and_no_line_in_status():
    data = render.job_json(ended(exit_code=0))
    assert (data["timeout_seconds"], data["cpu_time_seconds"]) == (None, None)
    assert (data["timed_out"], data["cpu_time_exceeded"]) == (False, False)
    assert "time:" not in render.status_text(ended(exit_code=0))
