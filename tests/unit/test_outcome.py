"""outcome: how a job ended, its wait status and the outcome file."""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime, timedelta, timezone

import pytest

from jobworker.isolation.cgroups import Usage
from jobworker.isolation.outcome import Outcome, decode_wait_status, utcnow, write_atomically
from tests import default_signals

STARTED = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def outcome(**changes: object) -> Outcome:
    fields: dict[str, object] = {
        "exit_code": 0,
        "signal": None,
        "oom_killed": False,
        "usage": Usage(),
        "started_at": STARTED,
        "ended_at": STARTED + timedelta(seconds=3, microseconds=7),
    }
    fields.update(changes)
    return Outcome(**fields)  # type: ignore[arg-type]


def wait_status(*argv: str) -> int:
    """Run argv to its end and return the raw status waitpid() reported."""
    pid = default_signals.spawn(argv, {"PATH": os.defpath})
    waited, status = os.waitpid(pid, 0)
    assert waited == pid
    return status


# --- JSON --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "original",
    [
        outcome(),
        outcome(exit_code=3, note="something odd"),
        outcome(exit_code=None, signal=9, oom_killed=True),
        outcome(
            exit_code=None,
            signal=None,
            note="the job's shim was killed: exit status unknown",
            usage=Usage(1, 2, 3, 4, 5, 6),
        ),
        outcome(
            usage=Usage(cpu_user_usec=10, memory_peak_bytes=2**40, io_read_bytes=0),
            started_at=datetime(2030, 1, 1, tzinfo=timezone(timedelta(hours=2))),
        ),
        outcome(exit_code=None, signal=15, timed_out=True, note="the job reached its timeout"),
        outcome(exit_code=None, signal=9, cpu_time_exceeded=True),
    ],
)
def test_json_round_trip(original):
    text = original.to_json()
    assert Outcome.from_json(text) == original
    assert Outcome.from_json(text).to_json() == text


def test_json_is_plain_data():
    data = json.loads(outcome(exit_code=None, signal=15, usage=Usage(pids_peak=4)).to_json())
    assert data == {
        "exit_code": None,
        "signal": 15,
        "oom_killed": False,
        "usage": {
            "cpu_user_usec": None,
            "cpu_system_usec": None,
            "memory_peak_bytes": None,
            "io_read_bytes": None,
            "io_write_bytes": None,
            "pids_peak": 4,
            "memory_high_events": None,
            "memory_max_events": None,
        },
        "started_at": "2024-05-06T07:08:09.123456+00:00",
        "ended_at": "2024-05-06T07:08:12.123463+00:00",
        "note": None,
        "timed_out": False,
        "cpu_time_exceeded": False,
    }


def test_an_outcome_from_a_shim_that_knew_no_time_limits_says_no_limit_ended_it():
    data = json.loads(outcome(exit_code=0).to_json())
    del data["timed_out"], data["cpu_time_exceeded"]
    read = Outcome.from_json(json.dumps(data))
    assert (read.timed_out, read.cpu_time_exceeded) == (False, False)


def test_round_trip_keeps_time_zone_and_microseconds():
    restored = Outcome.from_json(outcome().to_json())
    assert restored.started_at.utcoffset() == timedelta(0)
    assert restored.started_at.microsecond == 123456
    assert restored.ended_at - restored.started_at == timedelta(seconds=3, microseconds=7)


def test_signal_name():
    assert outcome(exit_code=None, signal=9).signal_name == "SIGKILL"
    assert outcome(exit_code=None, signal=15).signal_name == "SIGTERM"
    assert outcome(exit_code=1).signal_name is None


def test_utcnow_is_aware_utc():
    now = utcnow()
    assert now.utcoffset() == timedelta(0)
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=60)


# --- wait statuses from real processes -------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 3, 255])
def test_decode_exit_status(code):
    status = wait_status("sh", "-c", f"exit {code}")
    assert decode_wait_status(status) == (code, None)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL, signal.SIGINT])
def test_decode_signal_status(signum):
    status = wait_status("sh", "-c", f"kill -{signum.name.removeprefix('SIG')} $$")
    assert decode_wait_status(status) == (None, signum)


def test_exit_code_128_plus_n_is_not_a_signal():
    # A shell reports a signalled child as 128+n; that is still an exit.
    status = wait_status("sh", "-c", "exit 143")
    assert decode_wait_status(status) == (143, None)


# --- write_atomically -------------------------------------------------------------------


def test_write_atomically_creates(tmp_path):
    path = tmp_path / "outcome.json"
    write_atomically(path, '{"a": 1}', durable=True)
    assert path.read_text() == '{"a": 1}'
    assert os.listdir(tmp_path) == ["outcome.json"]


def test_write_atomically_replaces(tmp_path):
    path = tmp_path / "outcome.json"
    path.write_text("old content that is much longer than the new one")
    other = tmp_path / "other"
    other.write_text("untouched")
    inode = path.stat().st_ino
    write_atomically(path, "new", durable=True)
    assert path.read_text() == "new"
    assert path.stat().st_ino != inode  # a new file renamed over it, not rewritten in place
    assert sorted(os.listdir(tmp_path)) == ["other", "outcome.json"]
    assert other.read_text() == "untouched"


def test_write_atomically_keeps_an_open_reader_on_the_old_file(tmp_path):
    path = tmp_path / "outcome.json"
    path.write_text("old")
    with path.open() as reader:
        write_atomically(path, "new", durable=True)
        assert reader.read() == "old"
    assert path.read_text() == "new"


def test_write_atomically_over_a_stale_temporary_file(tmp_path):
    # Left by a crash between open and rename: must be overwritten, not appended to.
    path = tmp_path / "outcome.json"
    (tmp_path / ".outcome.json.tmp").write_text("x" * 100)
    write_atomically(path, "fresh", durable=True)
    assert path.read_text() == "fresh"
    assert os.listdir(tmp_path) == ["outcome.json"]


def test_write_atomically_unicode(tmp_path):
    path = tmp_path / "outcome.json"
    write_atomically(path, "note: é ✓", durable=True)
    assert path.read_bytes() == "note: é ✓".encode()
