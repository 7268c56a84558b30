"""The JSON schema of ``status --json`` / ``ls --json`` and the text people read."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from jobworker.cli import _render as render
from jobworker.cli._streaming import copy_output
from jobworker.v1 import jobworker_pb2 as pb
from tests.status_schema import LIMITS_KEYS, STATUS_KEYS, USAGE_KEYS

NAMESPACES = {"pid": True, "mount": True, "net": False, "uts": True, "ipc": True}


def stamp(text):
    moment = Timestamp()
    moment.FromJsonString(text)
    return moment


def running_job():
    return pb.Job(
        id="0b6e1c5c-6b0b-4c5b-9d3a-3d7b1f2a9c10",
        owner="bob",
        command="sh",
        args=["-c", "echo hi; sleep 60"],
        working_directory="/",
        user="nobody",
        uid=65534,
        gid=65534,
        limits=pb.Limits(cpu_cores=0.5, memory_bytes=64 << 20),
        namespaces=NAMESPACES,
        state=pb.JOB_STATE_RUNNING,
        create_time=stamp("2025-01-31T12:00:00.123456Z"),
        start_time=stamp("2025-01-31T12:00:00.200Z"),
    )


def oom_killed_job():
    job = running_job()
    job.state = pb.JOB_STATE_EXITED
    job.end_time.CopyFrom(stamp("2025-01-31T12:00:05Z"))
    job.signal = 9
    job.signal_name = "SIGKILL"
    job.oom_killed = True
    job.usage.CopyFrom(pb.ResourceUsage(cpu_user_usec=1_200_000, memory_peak_bytes=64 << 20))
    job.limits.io.append(pb.IoLimit(device="/dev/vda", read_bps=10 << 20))
    return job


def test_a_running_job_as_json():
    data = json.loads(json.dumps(render.job_json(running_job())))
    assert set(data) == STATUS_KEYS
    assert data["command"] == ["sh", "-c", "echo hi; sleep 60"]
    assert (data["user"], data["uid"], data["gid"]) == ("nobody", 65534, 65534)
    assert data["state"] == "running"
    assert data["exit_code"] is None
    assert data["signal"] is None
    assert data["oom_killed"] is False
    assert data["created_at"] == "2025-01-31T12:00:00.123456Z"
    assert data["started_at"] == "2025-01-31T12:00:00.200Z"
    assert data["ended_at"] is None
    assert set(data["limits"]) == LIMITS_KEYS
    assert data["limits"] == {
        **dict.fromkeys(LIMITS_KEYS),
        "cpu_cores": 0.5,
        "memory_bytes": 64 << 20,
        "io": [],
    }
    assert data["namespaces"] == NAMESPACES
    assert list(data["namespaces"]) == ["pid", "mount", "net", "uts", "ipc"]
    assert data["usage"] == dict.fromkeys(USAGE_KEYS)
    assert data["stopped_by"] is None
    assert data["note"] is None


def test_an_oom_killed_job_as_json():
    data = render.job_json(oom_killed_job())
    assert data["state"] == "exited"
    assert (data["exit_code"], data["signal"], data["oom_killed"]) == (None, "SIGKILL", True)
    assert data["ended_at"] == "2025-01-31T12:00:05Z"
    assert data["usage"]["cpu_user_usec"] == 1_200_000
    assert data["usage"]["cpu_system_usec"] is None
    assert data["limits"]["io"] == [
        {"device": "/dev/vda", "read_bps": 10 << 20, "write_bps": None, "read_iops": None,
         "write_iops": None},
    ]  # fmt: skip


def test_status_text_says_how_the_job_ended():
    text = render.status_text(oom_killed_job())
    assert "state:      exited (killed by SIGKILL, by the OOM killer)\n" in text
    assert "oom_killed: true\n" in text
    assert "command:    sh -c 'echo hi; sleep 60'\n" in text
    assert "user:       nobody (uid 65534, gid 65534)\n" in text
    assert "limits:     cpu 0.5 cores, memory 64 MiB, io /dev/vda read_bps=10 MiB/s\n" in text
    assert "namespaces: pid mount uts ipc\n" in text
    assert "usage:      cpu 1.20s user 0.00s system, memory peak 64 MiB\n" in text
    running = render.status_text(running_job())
    assert "state:      running\n" in running
    assert "usage:      known once the job has ended\n" in running


def test_endings():
    job = pb.Job(state=pb.JOB_STATE_EXITED, exit_code=3)
    assert render.ending(job) == "exited (exit code 3)"
    job = pb.Job(state=pb.JOB_STATE_STOPPED, signal=15, signal_name="SIGTERM", stopped_by="bob")
    assert render.ending(job) == "stopped by bob (killed by SIGTERM)"
    assert render.ending(pb.Job(state=pb.JOB_STATE_LOST)).startswith("lost: ")


def test_the_table_has_a_header_and_one_aligned_line_per_job():
    old, new = oom_killed_job(), running_job()
    new.id = "ffffffff-6b0b-4c5b-9d3a-3d7b1f2a9c10"
    new.args[:] = ["-c", "x" * 100]
    now = datetime(2025, 1, 31, 14, 0, 30, tzinfo=UTC)
    lines = render.table([old, new], now).splitlines()
    assert lines[0].split() == ["ID", "STATE", "COMMAND", "AGE", "OWNER"]
    assert lines[1].split()[:2] == [old.id, "exited"]
    assert lines[1].split()[-2:] == ["2h", "bob"]
    assert "..." in lines[2]
    assert len({line.index("STATE") for line in lines[:1]} | {lines[1].index("exited")}) == 1


def test_sizes_and_ages_for_people():
    assert render.size_text(512) == "512 B"
    assert render.size_text(64 << 20) == "64 MiB"
    assert render.size_text(3 << 29) == "1.5 GiB"
    job = pb.Job(create_time=stamp("2025-01-31T12:00:00Z"))
    for seconds, text in ((5, "5s"), (200, "3m"), (7300, "2h"), (200000, "2d"), (-3, "0s")):
        now = datetime(2025, 1, 31, 12, tzinfo=UTC).timestamp() + seconds
        assert render.age_text(job, datetime.fromtimestamp(now, UTC)) == text


def test_output_goes_to_the_stream_it_came_from_unchanged():
    responses = [
        pb.StreamJobOutputResponse(
            chunk=pb.OutputChunk(stream=pb.OUTPUT_STREAM_STDOUT, offset=0, data=b"out\xff\n")
        ),
        pb.StreamJobOutputResponse(
            chunk=pb.OutputChunk(stream=pb.OUTPUT_STREAM_STDERR, offset=5, data=b"err\n")
        ),
        pb.StreamJobOutputResponse(capped=pb.OutputCapped(offset=9, cap_bytes=9)),
    ]
    stdout, stderr = io.BytesIO(), io.BytesIO()
    copy_output(responses, stdout, stderr)
    assert stdout.getvalue() == b"out\xff\n"
    assert stderr.getvalue().startswith(b"err\njobworker: the job's output reached its cap of 9 B")


def test_other_users_text_is_printed_with_control_characters_escaped():
    job = running_job()
    job.command = "printf"
    job.args[:] = ["\x1b[2J\x1b]0;owned\x07", "\u202eevil"]
    job.working_directory = "/tmp/\x1b[31mred"
    job.owner = "mallory\r"
    job.note = "line\nbreak"
    text = render.status_text(job)
    listing = render.table([job], datetime(2025, 1, 31, 12, 1, tzinfo=UTC))
    for shown in (text, listing):
        assert "\x1b" not in shown
        assert "\u202e" not in shown
        assert "\r" not in shown
    assert "\\x1b[2J\\x1b]0;owned\\x07" in text
    assert "\\u202eevil" in text
    assert "workdir:    /tmp/\\x1b[31mred\n" in text
    assert "note:       line\\x0abreak\n" in text
    assert "mallory\\x0d" in listing
    # JSON escapes them by itself (ensure_ascii), so scripts get the exact text back.
    assert json.loads(json.dumps(render.job_json(job)))["owner"] == "mallory\r"


def test_a_job_from_before_ids_were_kept_shows_its_user_alone():
    job = running_job()
    job.ClearField("uid")
    job.ClearField("gid")
    assert "user:       nobody\n" in render.status_text(job)
    assert render.job_json(job)["uid"] is None


def test_throttling_limits_and_their_counts_are_shown():
    job = oom_killed_job()
    job.limits.MergeFrom(
        pb.Limits(memory_high_bytes=48 << 20, memory_swap_bytes=0, cpuset="0-1,3", cpu_weight=50)
    )
    job.usage.memory_high_events = 12
    job.usage.memory_max_events = 3
    data = render.job_json(job)
    assert (data["limits"]["memory_swap_bytes"], data["limits"]["cpuset"]) == (0, "0-1,3")
    assert (data["usage"]["memory_high_events"], data["usage"]["memory_max_events"]) == (12, 3)
    text = render.status_text(job)
    assert "memory high 48 MiB, swap 0 B, cpus 0-1,3, cpu weight 50" in text
    assert "over memory high 12 times, at memory limit 3 times" in text
