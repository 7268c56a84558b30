"""``main``: the CLI's error boundary, run in-process with real certificates."""

from __future__ import annotations

import stat

import pytest

from jobworker.cli.main import main

JOB = "0b6e1c5c-6b0b-4c5b-9d3a-3d7b1f2a9c10"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_certs_init_and_issue_write_private_keys_and_refuse_to_overwrite(capsys, tmp_path):
    tls = tmp_path / "tls"
    code, out, _ = run(capsys, "certs", "init", "--dir", str(tls), "--san", "worker.example")
    assert code == 0
    names = ["ca.crt", "ca.key", "server.crt", "server.key", "admin.crt", "admin.key"]
    assert out.splitlines() == [str(tls / name) for name in names]
    for name in names:
        mode = stat.S_IMODE((tls / name).stat().st_mode)
        assert mode == (0o600 if name.endswith(".key") else 0o644), name

    code, out, err = run(capsys, "certs", "init", "--dir", str(tls))
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert "already exist; use --force to replace" in err

    assert run(capsys, "certs", "init", "--dir", str(tls), "--force")[0] == 0
    code, out, _ = run(capsys, "certs", "issue", "--user", "bob", "--role", "reader", "--dir",
                       str(tls))  # fmt: skip
    assert (code, out) == (0, f"{tls / 'bob.crt'}\n{tls / 'bob.key'}\n")
    assert stat.S_IMODE((tls / "bob.key").stat().st_mode) == 0o600
    code, _, err = run(capsys, "certs", "issue", "--user", "bob", "--role", "reader", "--dir",
                       str(tls))  # fmt: skip
    assert code == 1
    assert "bob.crt" in err


def test_certs_errors(capsys, tmp_path):
    code, _, err = run(capsys, "certs", "issue", "--user", "bob", "--role", "writer", "--dir",
                       str(tmp_path))  # fmt: skip
    assert code == 1
    assert err.startswith("jobworker: no usable certificate authority in ")
    code, _, err = run(capsys, "certs", "init", "--dir", str(tmp_path), "--san", "bad name")
    assert code == 2
    assert "invalid server name 'bad name'" in err


@pytest.mark.parametrize(
    ("argv", "code", "start"),
    [
        (["run", "--memory", "lots", "true"], 2, "jobworker run: argument --memory"),
        (["status", "nope"], 2, "jobworker status: argument ID"),
        (["ls", "--server", "nohost"], 2, "jobworker: server address 'nohost'"),
        (["ls", "--server", "127.0.0.1:1"], 1, "jobworker: cannot reach server at 127.0.0.1:1"),
        (["logs", JOB, "--server", "127.0.0.1:1"], 1, "jobworker: cannot reach server"),
    ],
)
def test_errors_are_one_line_with_their_exit_status(capsys, tmp_path, argv, code, start):
    assert run(capsys, "certs", "init", "--dir", str(tmp_path))[0] == 0
    result, out, err = run(capsys, *argv, "--tls-dir", str(tmp_path))
    assert (result, out) == (code, "")
    assert err.startswith(start), err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_help_exits_0_with_an_example(capsys):
    for argv in (["--help"], ["run", "--help"], ["certs", "issue", "--help"]):
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == 0
        assert "example: " in capsys.readouterr().out
