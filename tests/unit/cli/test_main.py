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
    tls, ca = tmp_path / "tls", tmp_path / "ca"
    dirs = ("--dir", str(tls), "--ca-dir", str(ca))
    code, out, _ = run(capsys, "certs", "init", *dirs, "--san", "worker.example")
    assert code == 0
    written = [ca / "ca.crt", ca / "ca.key", ca / "index.json"]
    written += [tls / name for name in ("ca.crt", "server.crt", "server.key", "admin.crt",
                                        "admin.key")]  # fmt: skip
    assert out.splitlines() == [str(path) for path in written]
    for path in written:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o600 if path.suffix == ".key" else 0o644), path
    assert not (tls / "ca.key").exists()

    code, out, err = run(capsys, "certs", "init", *dirs)
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert "already exist; use --force to replace" in err

    assert run(capsys, "certs", "init", *dirs, "--force")[0] == 0
    code, out, _ = run(capsys, "certs", "issue", "--user", "bob", "--role", "reader", *dirs)
    assert (code, out) == (0, f"{tls / 'bob.crt'}\n{tls / 'bob.key'}\n")
    assert stat.S_IMODE((tls / "bob.key").stat().st_mode) == 0o600
    code, _, err = run(capsys, "certs", "issue", "--user", "bob", "--role", "reader", *dirs)
    assert code == 1
    assert "bob.crt" in err


def test_certs_use_the_ca_directory_of_the_environment(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("JOBWORKER_TLS_DIR", str(tmp_path / "tls"))
    monkeypatch.setenv("JOBWORKER_CA_DIR", str(tmp_path / "ca"))
    assert run(capsys, "certs", "init")[0] == 0
    assert run(capsys, "certs", "issue", "--user", "bob", "--role", "writer")[0] == 0
    assert (tmp_path / "ca" / "ca.key").exists()
    assert (tmp_path / "tls" / "bob.key").exists()
    assert "bob" in (tmp_path / "ca" / "index.json").read_text()


def test_certs_revoke_prints_what_it_revoked_and_how_to_reload(capsys, tmp_path):
    dirs = ("--dir", str(tmp_path / "tls"), "--ca-dir", str(tmp_path / "ca"))
    assert run(capsys, "certs", "init", *dirs)[0] == 0
    assert run(capsys, "certs", "issue", "--user", "bob", "--role", "writer", *dirs)[0] == 0
    code, out, err = run(capsys, "certs", "revoke", "bob", *dirs)
    assert code == 0
    (line,) = out.splitlines()
    assert line.startswith("revoked ")
    assert line.endswith(" bob (writer, valid until " + line.rsplit("until ", 1)[1])
    serial = line.split()[1]
    assert err.count("\n") == 1
    assert f"wrote {tmp_path / 'ca' / 'crl.pem'} and {tmp_path / 'tls' / 'crl.pem'}" in err
    assert "systemctl reload jobworker" in err
    assert "kill -HUP" in err

    for which, message in (
        ("bob", "jobworker: every certificate of bob is revoked already: "),
        (serial.upper(), f"jobworker: certificate {serial} bob (writer, valid until "),
        ("mallory", "jobworker: no certificate in "),
    ):
        before = (tmp_path / "tls" / "crl.pem").read_bytes()
        code, out, err = run(capsys, "certs", "revoke", which, *dirs)
        assert (code, out) == (1, ""), err
        assert err.startswith(message), err
        assert err.count("\n") == 1
        assert (tmp_path / "tls" / "crl.pem").read_bytes() == before


def test_certs_errors(capsys, tmp_path):
    code, _, err = run(capsys, "certs", "issue", "--user", "bob", "--role", "writer", "--dir",
                       str(tmp_path), "--ca-dir", str(tmp_path / "ca"))  # fmt: skip
    assert code == 1
    assert err.startswith("jobworker: no usable certificate authority in ")
    code, _, err = run(capsys, "certs", "init", "--dir", str(tmp_path), "--ca-dir",
                       str(tmp_path / "ca"), "--san", "bad name")  # fmt: skip
    assert code == 2
    assert "invalid server name 'bad name'" in err
    code, _, err = run(capsys, "certs", "init", "--dir", str(tmp_path), "--ca-dir",
                       str(tmp_path))  # fmt: skip
    assert code == 1
    assert "the CA directory must not be the TLS directory" in err


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
    assert run(capsys, "certs", "init", "--dir", str(tmp_path), "--ca-dir",
               str(tmp_path / "ca"))[0] == 0  # fmt: skip
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
