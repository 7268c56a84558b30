"""The ``jobworker`` command as people and scripts use it, against a real server.

Everything runs as separate processes: certificates made by ``jobworker certs``, a
server started with ``jobworker server``, and each client call through the installed
console script. One server serves the whole module, and jobs are tiny, because each
process start costs a second or two in the emulated test VM.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from tests import default_signals
from tests.privileged.runner_helpers import CGROUP_ROOT, home_root, remove_cgroup_tree
from tests.status_schema import LIMITS_KEYS, STATUS_KEYS, USAGE_KEYS

pytestmark = pytest.mark.privileged

JOBWORKER = str(Path(sys.executable).parent / "jobworker")


@dataclass(frozen=True)
class Cli:
    """How to call the real ``jobworker`` against the module's server."""

    tls: Path
    ca: Path
    address: str
    server: subprocess.Popen[str]
    log: Path

    @property
    def env(self) -> dict[str, str]:
        """The environment of every call unless a test says otherwise: server, TLS and CA dirs."""
        return {
            **os.environ,
            "JOBWORKER_SERVER": self.address,
            "JOBWORKER_TLS_DIR": str(self.tls),
            "JOBWORKER_CA_DIR": str(self.ca),
        }

    def __call__(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return jobworker(*args, env=self.env if env is None else env)

    def start(self, *args: str) -> subprocess.Popen[str]:
        """Start the CLI as a terminal would, so that a SIGINT sent to it is a Ctrl-C."""
        return subprocess.Popen(
            default_signals.command(JOBWORKER, *args), env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def status(self, job_id: str) -> dict[str, object]:
        result = self("status", job_id, "--json")
        assert result.returncode == 0, result.stderr
        data: dict[str, object] = json.loads(result.stdout)
        return data


def jobworker(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [JOBWORKER, *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def read_line(stream: object, timeout: float = 120.0) -> str:
    """One line from a child's pipe, failing instead of hanging if it never comes."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)  # type: ignore[arg-type]
        assert selector.select(timeout), f"no line within {timeout}s"
    return stream.readline()  # type: ignore[attr-defined, no-any-return]


def one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    """The contract for every failure: exit status, one line naming it, no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert text in result.stderr, result.stderr


def wait_for_log(log: Path, text: str, timeout: float = 120.0) -> None:
    """Wait until the server has logged ``text``."""
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"{text!r} never logged: {log.read_text()}"
        time.sleep(0.1)  # tests may poll; the product must not


def kill_everything_under(parent: str) -> None:
    base = CGROUP_ROOT / parent.lstrip("/")
    if not base.exists():
        return
    (base / "cgroup.kill").write_text("1")
    for _ in range(600):
        if "populated 0" in (base / "cgroup.events").read_text():
            return
        time.sleep(0.1)  # tests may poll; the product must not
    raise AssertionError(f"processes left under {parent}")


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    with home_root() as homes:
        yield from serve_cli(tmp_path_factory.mktemp("cli"), homes)


def serve_cli(root: Path, homes: Path) -> Iterator[Cli]:
    """Certificates, then the server, for as long as the module's tests run."""
    tls, ca = root / "tls", root / "ca"
    dirs = ("--dir", str(tls), "--ca-dir", str(ca))
    made = jobworker("certs", "init", *dirs)
    assert made.returncode == 0, made.stderr
    issued = jobworker("certs", "issue", "--user", "alice", "--role", "reader", *dirs)
    assert issued.returncode == 0, issued.stderr
    parent = f"/jobworker-clitest-{uuid.uuid4().hex[:8]}"
    log = (root / "server.log").open("w")
    server = subprocess.Popen(
        [JOBWORKER, "server", "--listen", "localhost:0", "--tls-dir", str(tls),
         "--state-dir", str(root / "state"), "--cgroup-parent", parent,
         "--home-root", str(homes)],
        stdout=subprocess.PIPE, stderr=log, text=True,
    )  # fmt: skip
    try:
        line = read_line(server.stdout, timeout=300)  # a minute or more in a busy test VM
        assert line.startswith("jobworker server listening on localhost:"), (
            line + (root / "server.log").read_text()
        )
        assert "limits enforced: cpu, memory, io, pids" in line
        port = line.split()[4].rsplit(":", 1)[1]
        yield Cli(tls, ca, f"localhost:{port}", server, root / "server.log")
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=120)
        log.close()
        if server.stdout is not None:
            server.stdout.close()  # else it is garbage-collected unclosed: a ResourceWarning
        kill_everything_under(parent)  # jobs outlive the server; a failed test may leave one
        remove_cgroup_tree(parent)
    assert code == 0, (root / "server.log").read_text()


def test_private_keys_are_mode_0600_and_the_ca_key_is_not_with_the_servers(cli: Cli) -> None:
    for key in ("server.key", "admin.key", "alice.key"):
        assert (cli.tls / key).stat().st_mode & 0o777 == 0o600, key
    assert (cli.ca / "ca.key").stat().st_mode & 0o777 == 0o600
    assert cli.ca.stat().st_mode & 0o777 == cli.tls.stat().st_mode & 0o777 == 0o700
    assert not (cli.tls / "ca.key").exists()


def test_revoke_and_sighup_refuse_the_revoked_certificate(cli: Cli) -> None:
    issued = cli("certs", "issue", "--user", "bob", "--role", "writer")
    assert issued.returncode == 0, issued.stderr
    bob = ("--cert", str(cli.tls / "bob.crt"), "--key", str(cli.tls / "bob.key"))
    listed = cli("ls", *bob)
    assert listed.returncode == 0, listed.stderr

    revoked = cli("certs", "revoke", "bob")
    assert revoked.returncode == 0, revoked.stderr
    (line,) = revoked.stdout.splitlines()
    assert line.startswith("revoked ")
    assert " bob (writer, valid until " in line
    serial = line.split()[1]
    assert "kill -HUP" in revoked.stderr
    cli.server.send_signal(signal.SIGHUP)
    wait_for_log(cli.log, "revocation list ")

    refused = cli("ls", *bob)
    one_line_error(
        refused,
        1,
        "jobworker: the server refused the client certificate: client certificate revoked "
        f"(serial {serial})",
    )
    assert cli("ls").returncode == 0  # admin, and everyone else, carry on
    assert "reloaded; revoked serial numbers: 1\n" in cli.log.read_text()


def test_run_prints_only_the_id_and_logs_keep_the_streams_apart(cli: Cli) -> None:
    started = cli(
        "run", "--memory", "64M", "--cpu", "0.5", "--pids", "20", "--env", "WHO=world",
        "--no-isolate", "net", "--user", "nobody", "--",
        "sh", "-c", "echo hello $WHO; echo oops >&2",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    job_id = started.stdout.removesuffix("\n")
    assert started.stdout == f"{uuid.UUID(job_id)}\n"

    followed = cli("logs", "-f", job_id)  # follows until the end, from the first byte
    assert (followed.returncode, followed.stdout, followed.stderr) == (0, "hello world\n", "oops\n")

    status = cli.status(job_id)
    assert set(status) == STATUS_KEYS
    assert status["id"] == job_id
    assert status["owner"] == "admin"
    assert status["user"] == "nobody"
    assert status["command"] == ["sh", "-c", "echo hello $WHO; echo oops >&2"]
    assert (status["state"], status["exit_code"], status["signal"]) == ("exited", 0, None)
    assert status["oom_killed"] is False
    assert status["limits"] == {
        **dict.fromkeys(LIMITS_KEYS),
        "cpu_cores": 0.5,
        "memory_bytes": 64 << 20,
        "pids": 20,
        "io": [],
    }
    assert status["namespaces"] == {
        "pid": True, "mount": True, "net": False, "uts": True, "ipc": True,
    }  # fmt: skip
    usage = status["usage"]
    assert isinstance(usage, dict)
    assert set(usage) == USAGE_KEYS
    assert isinstance(usage["cpu_user_usec"], int)
    for moment in ("created_at", "started_at", "ended_at"):
        stamp = status[moment]
        assert isinstance(stamp, str)
        assert stamp.endswith("Z")
        datetime.fromisoformat(stamp)


def test_run_follow_exits_as_the_job_did_and_names_the_oom_killer(cli: Cli) -> None:
    # In parallel: each process start is slow in the test VM.
    exit_3 = cli.start("run", "--follow", "--", "sh", "-c", "echo hi; echo ho >&2; exit 3")
    killed = cli.start("run", "-f", "--", "sh", "-c", "echo hi; kill -9 $$")
    # tail keeps every line it reads; /dev/zero has no newline, so it grows until killed.
    hog = cli.start("run", "-f", "--memory", "16M", "--", "tail", "/dev/zero")
    out, err = exit_3.communicate(timeout=300)
    assert (exit_3.returncode, out) == (3, "hi\n"), err
    assert err.startswith("jobworker: started job ")
    assert err.endswith("\nho\n")
    out, err = killed.communicate(timeout=300)
    assert (killed.returncode, out) == (128 + 9, "hi\n"), err
    assert "exited (killed by SIGKILL)" in err
    out, err = hog.communicate(timeout=300)
    assert (hog.returncode, out) == (128 + 9, ""), err
    assert "was killed by the OOM killer" in err


def test_run_stdin_dash_hands_this_commands_input_to_the_job(cli: Cli) -> None:
    result = subprocess.run(
        [JOBWORKER, "run", "--stdin", "-", "--follow", "--", "tr", "a-z", "A-Z"],
        input="piped through\n", capture_output=True, text=True, env=cli.env, timeout=300,
        check=False,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (0, "PIPED THROUGH\n"), result.stderr
    job_id = result.stderr.split()[-1]
    assert cli.status(job_id)["stdin_bytes"] == len("piped through\n")


def test_ls_logs_detach_and_stop_with_grace(cli: Cli) -> None:
    # The job notes when SIGTERM came and carries on, so only the kill after the grace
    # period ends it. Bash's own clock ($EPOCHREALTIME), not date: starting a process
    # under a CPU limit in the emulated VM could take longer than the grace period.
    script = "trap 'echo $EPOCHREALTIME' TERM; echo ready; while :; do :; done"
    started = cli("run", "--cpu", "0.2", "--", "bash", "-c", script)
    job_id = started.stdout.strip()
    first, second = cli.start("logs", "-f", job_id), cli.start("logs", "--follow", job_id)
    try:
        assert read_line(first.stdout) == "ready\n"
        assert read_line(second.stdout) == "ready\n"

        first.send_signal(signal.SIGINT)  # Ctrl-C detaches; the job keeps running
        _, detached = first.communicate(timeout=120)
        assert first.returncode == 130
        assert f"detached; job {job_id} keeps running" in detached
        assert "Traceback" not in detached

        listed = cli("ls")
        assert listed.returncode == 0
        header, *rows = listed.stdout.splitlines()
        assert header.split() == ["ID", "STATE", "COMMAND", "AGE", "OWNER"]
        assert any(row.startswith(job_id) and " running " in row for row in rows), listed.stdout

        stopped = cli("stop", "--grace", "500ms", job_id)
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout == f"{job_id}: stopped by admin (killed by SIGKILL)\n"
        # The other follower saw it to the end ("ready" was read above).
        term, _ = second.communicate(timeout=120)
        assert second.returncode == 0
    finally:
        for follower in (first, second):
            if follower.poll() is None:
                follower.kill()
                follower.communicate()

    everything = json.loads(cli("ls", "--all", "--json").stdout)
    job = next(job for job in everything if job["id"] == job_id)
    assert set(job) == STATUS_KEYS
    assert (job["state"], job["stopped_by"], job["signal"]) == ("stopped", "admin", "SIGKILL")
    # Killed about 0.5 s after SIGTERM, well before the default grace of 10 s.
    ended = datetime.fromisoformat(job["ended_at"]).timestamp()
    assert 0.5 <= ended - float(term) < 5, (term, job["ended_at"])
    hog = next(job for job in everything if job["command"] == ["tail", "/dev/zero"])
    assert (hog["oom_killed"], hog["signal"], hog["state"]) == (True, "SIGKILL", "exited")

    removed = cli("rm", job_id)
    assert (removed.returncode, removed.stdout, removed.stderr) == (0, "", "")
    gone = cli("status", job_id)
    assert (gone.returncode, gone.stderr) == (1, f"jobworker: no job {job_id}\n")


def test_client_flags_go_anywhere_and_win_over_the_environment(cli: Cli) -> None:
    bare = {k: v for k, v in os.environ.items() if not k.startswith("JOBWORKER_")}
    bare["JOBWORKER_SERVER"] = "localhost:1"  # flags must win over this
    started = cli(
        "run", "--server", cli.address, "--memory", "8M", "--tls-dir", str(cli.tls),
        "--follow", "--", "sh", "-c", "echo $JOBWORKER_JOB_ID", env=bare,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    job_id = started.stdout.strip()
    status = cli(
        "status", job_id, "--server", cli.address, "--ca", str(cli.tls / "ca.crt"),
        "--cert", str(cli.tls / "admin.crt"), "--key", str(cli.tls / "admin.key"), "--json",
        env=bare,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["id"] == job_id


def test_errors_are_one_line_with_a_documented_exit_status(cli: Cli, tmp_path: Path) -> None:
    alice = ("--cert", str(cli.tls / "alice.crt"), "--key", str(cli.tls / "alice.key"))
    exposed = tmp_path / "tls"
    shutil.copytree(cli.tls, exposed)
    shutil.copy(cli.ca / "ca.key", exposed / "ca.key")
    default_ca = {**cli.env}
    del default_ca["JOBWORKER_CA_DIR"]
    missing = str(uuid.uuid4())
    down = {**cli.env, "JOBWORKER_SERVER": "localhost:1"}
    state = tempfile.mkdtemp(prefix="jobworker-cli-state-")
    # Without the revocation list an earlier test wrote: the server logs it as it starts,
    # and these cases check that a refused start prints its one line alone.
    unrevoked = tmp_path / "tls-unrevoked"
    shutil.copytree(cli.tls, unrevoked, ignore=shutil.ignore_patterns("crl.pem"))
    server = [
        "server",
        "--tls-dir",
        str(unrevoked),
        "--listen",
        "localhost:0",
        "--state-dir",
        state,
    ]
    cases = [
        (["run", "--memory", "64X", "--", "true"], cli.env, 2, "'64X' is not a size"),
        (["run", "--frobnicate", "--", "true"], cli.env, 2, "unrecognized arguments"),
        (["status", missing], cli.env, 1, f"jobworker: no job {missing}"),
        (["run", *alice, "--", "true"], cli.env, 1, "jobworker: permission denied: "),
        (["run", "--", "no-such-command"], cli.env, 1, "no-such-command"),
        (["ls"], down, 1, "jobworker: cannot reach server at localhost:1: "),
        (["certs", "init", "--dir", str(cli.tls)], cli.env, 1, "already exist; use --force"),
        (
            ["server", "--tls-dir", "/nonexistent", "--listen", "localhost:0"],
            cli.env,
            1,
            "jobworker: the server cannot start: cannot read /nonexistent/server.crt",
        ),
        (
            [*server, "--transient-ids", "65000-66000"],
            cli.env,
            1,
            "the transient user ids 65000-66000 are already in use on this host: user nobody",
        ),
        (
            [*server, "--home-root", str(unrevoked / "homes")],
            cli.env,
            1,
            f"jobs could not reach their home directories under {unrevoked / 'homes'}: ",
        ),
        (
            ["server", "--tls-dir", str(exposed), "--listen", "localhost:0"],
            default_ca,
            1,
            f"jobworker: the server cannot start: the CA's private key {exposed / 'ca.key'} is "
            "in the server's TLS directory, where jobs running as root could read it and issue "
            "themselves certificates; move it: install -d -m 700 /etc/jobworker/ca && "
            f"mv {exposed / 'ca.key'} /etc/jobworker/ca/ca.key && cp {exposed / 'ca.crt'} "
            "/etc/jobworker/ca/ca.crt\n",
        ),
    ]
    # In parallel: each process start is slow in the test VM.
    started = [
        subprocess.Popen([JOBWORKER, *argv], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for argv, env, _, _ in cases
    ]  # fmt: skip
    for process, (argv, _, code, text) in zip(started, cases, strict=True):
        out, err = process.communicate(timeout=300)
        result = subprocess.CompletedProcess(argv, process.returncode, out, err)
        one_line_error(result, code, text)
