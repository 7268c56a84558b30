"""The command line: what each command accepts, and the request ``run`` makes of it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from jobworker.cli._errors import CliError, UsageError
from jobworker.cli._parser import build
from jobworker.cli._request import start_request
from jobworker.cli._serve import tls_files
from jobworker.runner.runner import RunnerConfig
from jobworker.v1 import jobworker_pb2 as pb

JOB = "0b6e1c5c-6b0b-4c5b-9d3a-3d7b1f2a9c10"


def parse(*argv):
    return build().parse_args(list(argv))


def test_run_takes_everything_after_the_separator_as_the_command():
    args = parse("run", "--cpu", "0.5", "--", "sh", "-c", "echo --follow --", "--memory", "1")
    assert args.command == ["sh", "-c", "echo --follow --", "--memory", "1"]
    assert args.cpu == 0.5
    assert args.memory is None
    assert not args.follow


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--server", "h:1", "--memory", "64M", "--", "true"],
        ["run", "--memory", "64M", "--server", "h:1", "--", "true"],
        ["run", "--memory", "64M", "--", "true"],
    ],
)
def test_client_flags_go_before_or_after_other_options(argv):
    args = parse(*argv)
    assert args.memory == 64 << 20
    assert args.command == ["true"]
    assert args.server in (None, "h:1")


def test_client_flags_are_accepted_after_the_positional_id():
    args = parse("status", JOB, "--server", "h:1", "--ca", "ca.crt", "--cert", "u.crt",
                 "--key", "u.key", "--json")  # fmt: skip
    assert (args.id, args.server, args.json) == (JOB, "h:1", True)
    assert (args.ca, args.cert, args.key) == (Path("ca.crt"), Path("u.crt"), Path("u.key"))


def test_every_client_command_takes_the_connection_flags():
    for argv in (
        ["logs", "-f", JOB],
        ["stop", "--grace", "500ms", JOB],
        ["ls", "--all"],
        ["rm", JOB],
    ):
        args = parse(*argv, "--tls-dir", "/t", "--server", "h:2")
        assert (args.tls_dir, args.server) == (Path("/t"), "h:2")
    assert parse("stop", "--grace", "500ms", JOB).grace == 0.5


def test_run_builds_the_whole_request(tmp_path):
    stdin = tmp_path / "input"
    stdin.write_bytes(b"\x00binary\nlines\n")
    args = parse(
        "run", "--cpu", "0.25", "--memory", "1.5G", "--pids", "10",
        "--io-read-bps", "/dev/vda=10M", "--io-write-iops", "/dev/vda=100",
        "--io-write-bps", "8:16=1M", "--no-isolate", "net,uts",
        "--workdir", "/tmp", "--env", "A=1", "--env", "B=x=y", "--follow",
        "--user", "nobody:nogroup", "--memory-high", "1G", "--memory-swap", "0",
        "--cpuset", "0-1,3", "--cpu-weight", "50", "--stdin", str(stdin), "--", "make", "test",
    )  # fmt: skip
    request = start_request(args)
    assert args.follow
    assert request.command == "make"
    assert list(request.args) == ["test"]
    assert request.limits.cpu_cores == 0.25
    assert request.limits.memory_bytes == 3 << 29
    assert request.limits.pids == 10
    assert list(request.limits.io) == [
        pb.IoLimit(device="/dev/vda", read_bps=10 << 20, write_iops=100),
        pb.IoLimit(device="8:16", write_bps=1 << 20),
    ]
    assert dict(request.namespaces) == {
        "pid": True, "mount": True, "net": False, "uts": False, "ipc": True,
    }  # fmt: skip
    assert request.working_directory == "/tmp"
    assert dict(request.environment) == {"A": "1", "B": "x=y"}
    assert request.user == "nobody:nogroup"
    assert request.limits.memory_high_bytes == 1 << 30
    assert request.limits.HasField("memory_swap_bytes")
    assert request.limits.memory_swap_bytes == 0
    assert (request.limits.cpuset, request.limits.cpu_weight) == ("0-1,3", 50)
    assert request.stdin == b"\x00binary\nlines\n"


def test_stdin_dash_reads_the_commands_own(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"piped\n")))
    assert start_request(parse("run", "--stdin", "-", "--", "cat")).stdin == b"piped\n"


def test_stdin_that_cannot_be_read_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match=f"--stdin {tmp_path}/missing: No such file or directory"):
        start_request(parse("run", "--stdin", str(tmp_path / "missing"), "--", "cat"))


def test_run_without_options_leaves_everything_to_the_server_defaults():
    request = start_request(parse("run", "--", "true"))
    assert request == pb.StartJobRequest(command="true", limits=pb.Limits())


def test_the_server_keeps_ended_jobs_as_long_as_the_runner_does_by_default():
    assert parse("server").keep_ended == RunnerConfig(state_dir=Path("/s")).keep_ended_seconds
    assert parse("server", "--keep-ended", "forever").keep_ended is None
    assert parse("server", "--keep-ended", "12h").keep_ended == 43200.0


def test_the_servers_default_user_is_the_runners_transient_one():
    default = RunnerConfig(state_dir=Path("/s")).default_user
    assert parse("server").default_user is default is None
    assert parse("server", "--default-user", "nobody").default_user == "nobody"


def test_the_server_allows_named_users_and_takes_a_transient_id_range():
    args = parse("server", "--allow-user", "nobody", "--allow-user", "backup:backup")
    assert args.allow_user == ["nobody", "backup:backup"]
    assert parse("server").allow_user == []
    assert parse("server").transient_ids is None  # the runner's default
    assert parse("server", "--transient-ids", "70000-70999").transient_ids == (70000, 70999)


@pytest.mark.parametrize("bad", ["70000", "7-x", "9-8", "0-10", "1-4294967295"])
def test_a_bad_transient_id_range_is_a_usage_error(bad):
    with pytest.raises(UsageError, match="--transient-ids"):
        parse("server", "--transient-ids", bad)


def test_isolate_names_exactly_the_namespaces_a_job_gets():
    request = start_request(parse("run", "--isolate", "pid,mount", "--", "true"))
    assert dict(request.namespaces) == {
        "pid": True, "mount": True, "net": False, "uts": False, "ipc": False,
    }  # fmt: skip
    none = start_request(parse("run", "--isolate", "none", "--", "true"))
    assert not any(dict(none.namespaces).values())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--memory", "12X", "--", "true"], "argument --memory: '12X' is not a size"),
        (["run", "--cpu", "zero", "--", "true"], "argument --cpu: 'zero' is not a number"),
        (["run", "--pids", "0", "--", "true"], "argument --pids"),
        (["run", "--io-read-bps", "10M", "--", "true"], "is not DEV=RATE"),
        (["run", "--isolate", "pid,cgroup", "--", "true"], "unknown namespace cgroup"),
        (["run", "--isolate", "net", "--no-isolate", "pid", "--", "true"], "not allowed with"),
        (["run", "--env", "NOVALUE", "--", "true"], "is not KEY=VALUE"),
        (["run", "--cpu", "1"], "the following arguments are required: CMD"),
        (["run", "--bogus", "--", "true"], "unrecognized arguments: --bogus"),
        (["status", "not-a-uuid"], "'not-a-uuid' is not a job id"),
        (["stop", "--grace", "5x", JOB], "argument --grace: '5x' is not a duration"),
        (["rm", "not-a-uuid"], "'not-a-uuid' is not a job id"),
        (["server", "--keep-ended", "never"], "argument --keep-ended: 'never' is not a duration"),
        (["certs", "issue", "--user", "x", "--role", "root"], "invalid choice: 'root'"),
        (["certs"], "the following arguments are required: ACTION"),
        ([], "the following arguments are required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_usage_errors_are_one_line_naming_the_problem(argv, message):
    with pytest.raises(UsageError) as caught:
        parse(*argv)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text
    assert caught.value.exit_code == 2
    assert caught.value.program.startswith("jobworker")
    assert "--help" in text


def test_request_level_usage_errors():
    for argv, message in (
        (["run", "--isolate", "pid", "--", "true"], "pid namespace needs the mount namespace"),
        (["run", "--no-isolate", "mount", "--", "true"], "pid namespace needs the mount"),
        (["run", "--io-read-bps", "/dev/vda=1M", "--io-read-bps", "/dev/vda=2M", "--", "true"],
         "--io-read-bps is given twice for /dev/vda"),
    ):  # fmt: skip
        with pytest.raises(UsageError, match=message):
            start_request(parse(*argv))


def test_certs_take_a_ca_directory_and_revoke_takes_a_name_or_serial():
    for action in (["init"], ["issue", "--user", "bob", "--role", "reader"], ["revoke", "bob"]):
        args = parse("certs", *action, "--ca-dir", "/ca", "--dir", "/tls")
        assert (args.ca_dir, args.dir) == (Path("/ca"), Path("/tls"))
    args = parse("certs", "revoke", "1A:2B")
    assert (args.which, args.ca_dir, args.dir) == ("1A:2B", None, None)
    assert args.handler == "jobworker.cli._certs:revoke_certificates"


def test_the_server_reads_the_revocation_list_of_its_tls_directory_or_crl(tmp_path):
    for name in ("server.crt", "server.key", "ca.crt", "other.pem"):
        (tmp_path / name).write_bytes(b"")
    files = tls_files(parse("server", "--tls-dir", str(tmp_path)))
    assert files.crl == tmp_path / "crl.pem"  # read if it exists: none until a revocation
    files = tls_files(
        parse("server", "--tls-dir", str(tmp_path), "--crl", str(tmp_path / "other.pem"))
    )
    assert files.crl == tmp_path / "other.pem"
    explicit = [f"--{flag}={tmp_path / name}" for flag, name in
                (("cert", "server.crt"), ("key", "server.key"), ("ca", "ca.crt"))]  # fmt: skip
    assert tls_files(parse("server", *explicit)).crl is None
    files = tls_files(parse("server", *explicit, "--crl", str(tmp_path / "other.pem")))
    assert files.crl == tmp_path / "other.pem"
    with pytest.raises(CliError, match=r"cannot read .*missing\.pem; check --cert, --key, --ca"):
        tls_files(parse("server", *explicit, "--crl", str(tmp_path / "missing.pem")))
