"""Where the client connects with which certificates, and what gRPC errors become."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from jobworker.api.authority import init_authority
from jobworker.cli import _defaults as defaults
from jobworker.cli._connection import Connection, translate
from jobworker.cli._errors import CliError, UsageError
from jobworker.v1 import jobworker_pb2 as pb

NO_FLAGS = {"server": None, "tls_dir": None, "cert": None, "key": None, "ca": None}


def resolve(environ, euid=1000, **flags):
    return Connection.resolve(**{**NO_FLAGS, **flags}, environ=environ, euid=euid)


def test_defaults_need_no_flags(tmp_path):
    root = resolve({}, euid=0)
    assert root.server == "localhost:50051"
    assert root.certificate == Path("/etc/jobworker/tls/admin.crt")
    assert root.key == Path("/etc/jobworker/tls/admin.key")
    assert root.ca == Path("/etc/jobworker/tls/ca.crt")
    user = resolve({"HOME": str(tmp_path)})
    assert user.ca == tmp_path / ".config/jobworker/tls/ca.crt"
    xdg = resolve({"HOME": "/h", "XDG_CONFIG_HOME": str(tmp_path)})
    assert xdg.ca == tmp_path / "jobworker/tls/ca.crt"


def test_flags_win_over_the_environment():
    environ = {defaults.SERVER_ENV: "env-host:1", defaults.TLS_DIR_ENV: "/env"}
    from_env = resolve(environ)
    assert (from_env.server, from_env.certificate) == ("env-host:1", Path("/env/admin.crt"))
    flags = resolve(environ, server="flag:2", tls_dir=Path("/flag"))
    assert (flags.server, flags.ca) == ("flag:2", Path("/flag/ca.crt"))
    own = resolve(environ, cert=Path("u.crt"), key=Path("u.key"), ca=Path("c.crt"))
    assert (own.certificate, own.key, own.ca) == (Path("u.crt"), Path("u.key"), Path("c.crt"))


@pytest.mark.parametrize("address", ["[::1]:50051", "10.0.0.1:1", "host.example:65535"])
def test_server_addresses(address):
    assert resolve({}, server=address).server == address


@pytest.mark.parametrize("address", ["localhost", "host:", ":50051", "a b:1", "host:port"])
def test_bad_server_addresses_are_usage_errors(address):
    with pytest.raises(UsageError, match="is not HOST:PORT"):
        resolve({}, server=address)


def test_cert_without_key_is_a_usage_error():
    with pytest.raises(UsageError, match="--cert and --key go together"):
        resolve({}, cert=Path("u.crt"))


def test_missing_certificates_say_how_to_make_them(tmp_path):
    with pytest.raises(CliError, match=r"cannot read the client certificate .*certs init"):
        resolve({}, tls_dir=tmp_path).credentials()


def test_an_unreachable_server_is_one_line_naming_it(tmp_path):
    init_authority(tmp_path, tmp_path / "ca")
    connection = resolve({}, tls_dir=tmp_path, server="127.0.0.1:1")
    with connection.stub() as stub, pytest.raises(grpc.RpcError) as caught:
        stub.GetJob(pb.GetJobRequest(id="x"), timeout=30)
    error = translate(caught.value, connection.server)
    assert str(error).startswith("cannot reach server at 127.0.0.1:1: ")
    assert "\n" not in str(error)
    assert error.exit_code == 1


class StatusError(grpc.RpcError):
    """What a failed call raises: an RpcError that is also a Call with code and details."""

    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


@pytest.mark.parametrize(
    ("code", "details", "message"),
    [
        (grpc.StatusCode.NOT_FOUND, "no job 0b6e", "no job 0b6e"),
        (grpc.StatusCode.PERMISSION_DENIED, "role reader of alice may not call StartJob",
         "permission denied: role reader of alice may not call StartJob"),
        (grpc.StatusCode.UNAUTHENTICATED, "no role", "the server refused the client certificate"),
        (grpc.StatusCode.INVALID_ARGUMENT, "memory_bytes: too small",
         "invalid request: memory_bytes: too small"),
        (grpc.StatusCode.FAILED_PRECONDITION, "command not found: nope",
         "command not found: nope"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "1000 jobs running", "the server is at capacity"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "", "did not answer in time"),
        (grpc.StatusCode.INTERNAL, "internal error", "the server failed (INTERNAL)"),
    ],
)  # fmt: skip
def test_status_codes_become_one_line_messages(code, details, message):
    error = translate(StatusError(code, details), "h:1")
    assert message in str(error)
    assert error.exit_code == 1
