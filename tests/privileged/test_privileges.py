"""Capabilities, the syscall filter and no_new_privs: what the kernel lets a job do."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import grpc
import pytest

from jobworker.isolation.credentials import Credentials
from jobworker.isolation.namespaces import Namespaces
from jobworker.isolation.privileges import CAPABILITIES, DEFAULT_CAPABILITIES, Privileges
from jobworker.v1 import jobworker_pb2 as pb
from jobworker.v1 import jobworker_pb2_grpc as pb_grpc
from tests.privileged.api_helpers import Pki, client, running_server
from tests.privileged.helpers import Finished, Jobs, run
from tests.privileged.runner_helpers import home_root

pytestmark = pytest.mark.privileged

NOBODY = Credentials.resolve("nobody")
DEFAULT_MASK = sum(1 << CAPABILITIES[name] for name in DEFAULT_CAPABILITIES)

PROBE = """
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]

def call(result):
    return ctypes.get_errno() if result < 0 else 0

def clone_new_user():
    pid = libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0)  # clone(CLONE_NEWUSER | SIGCHLD)
    if pid == 0:
        os._exit(0)
    if pid > 0:
        os.waitpid(pid, 0)
    return call(pid)

status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines())
print(json.dumps({
    **{key: int(status[key], 16) for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")},
    "NoNewPrivs": int(status["NoNewPrivs"]),
    "Seccomp": int(status["Seccomp"]),
    # keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, create)
    "keyctl": call(libc.syscall(250, 0, -3, 1)),
    "bpf": call(libc.syscall(321, 0, 0, 0)),
    "mount": call(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)),
    "clone": clone_new_user(),  # before unshare: in the new namespace, its uid has no mapping
    "unshare": call(libc.unshare(0x10000000)),
    "ptrace": call(libc.syscall(101, 0, 0, 0, 0)),  # PTRACE_TRACEME
}))
"""

EPERM = 1


def probe(jobs: Jobs, **options: object) -> dict[str, int]:
    finished = run(jobs.complete(sys.executable, "-c", PROBE, **options))
    assert finished.outcome.exit_code == 0, finished.stderr
    result: dict[str, int] = json.loads(finished.stdout)
    return result


def sh(jobs: Jobs, script: str, **options: object) -> Finished:
    return run(jobs.complete("sh", "-c", script, **options))


def test_a_job_of_another_user_has_no_capability_in_any_set(jobs: Jobs) -> None:
    # sh, not python: the interpreter under test lives where nobody may not go.
    finished = sh(jobs, "grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status", user=NOBODY)
    assert finished.outcome.exit_code == 0, finished.stderr
    found = dict(line.split(":\t") for line in finished.stdout.decode().splitlines())
    assert found == {
        **dict.fromkeys(("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"), "0" * 16),
        "NoNewPrivs": "1",
        "Seccomp": "2",
    }


def test_a_transient_user_cannot_chown_its_own_file(jobs: Jobs) -> None:
    user = Credentials.transient("job-chown", 1879048190, "/")
    with home_root() as homes:
        homes.chmod(0o755)
        home = homes / "home"
        home.mkdir(mode=0o700)
        os.chown(home, user.uid, user.gid)
        finished = sh(jobs, "touch mine && chown 65534 mine", cwd=str(home), user=user)
        assert finished.outcome.exit_code != 0
        assert b"Operation not permitted" in finished.stderr, finished.stderr
        assert (home / "mine").stat().st_uid == user.uid


def test_a_root_job_keeps_the_default_set_which_chowns_but_cannot_mount(
    jobs: Jobs, tmp_path: Path
) -> None:
    found = probe(jobs)
    assert (found["CapBnd"], found["CapPrm"], found["CapEff"]) == (DEFAULT_MASK,) * 3
    assert (found["CapInh"], found["CapAmb"], found["NoNewPrivs"]) == (0, 0, 0)
    assert found["mount"] == EPERM
    target = tmp_path / "file"
    target.touch()
    finished = sh(jobs, f"chown 65534 {target}")
    assert finished.outcome.exit_code == 0, finished.stderr
    assert target.stat().st_uid == 65534


def test_a_root_job_without_chown_cannot_chown(jobs: Jobs, tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.touch()
    dropped = Privileges(cap_drop=("CAP_CHOWN",))
    finished = sh(jobs, f"chown 65534 {target}", privileges=dropped)
    assert finished.outcome.exit_code != 0
    assert b"Operation not permitted" in finished.stderr, finished.stderr
    assert target.stat().st_uid == 0
    found = probe(jobs, privileges=dropped)
    assert found["CapEff"] == DEFAULT_MASK & ~(1 << CAPABILITIES["CHOWN"])


def test_an_added_capability_is_held_and_lets_the_filtered_calls_through(jobs: Jobs) -> None:
    found = probe(jobs, privileges=Privileges(cap_add=("sys_admin",)))
    assert found["CapEff"] == DEFAULT_MASK | 1 << CAPABILITIES["SYS_ADMIN"]
    assert found["mount"] == 0


def test_the_default_filter_denies_with_eperm(jobs: Jobs) -> None:
    found = probe(jobs, namespaces=Namespaces.none())
    assert found["Seccomp"] == 2
    denied = ("keyctl", "bpf", "unshare", "clone", "ptrace")
    assert {call: found[call] for call in denied} == dict.fromkeys(denied, EPERM)


def test_unconfined_lets_the_same_calls_through(jobs: Jobs) -> None:
    found = probe(jobs, namespaces=Namespaces.none(), privileges=Privileges(seccomp=False))
    assert found["Seccomp"] == 0
    assert (found["keyctl"], found["unshare"], found["clone"], found["ptrace"]) == (0, 0, 0, 0)


def test_a_job_in_its_own_pid_namespace_may_trace_its_own_processes(jobs: Jobs) -> None:
    assert probe(jobs)["ptrace"] == 0


def test_a_syscall_of_another_architecture_kills_the_process(jobs: Jobs) -> None:
    x32_getpid = "import ctypes; ctypes.CDLL(None).syscall(0x40000000 | 39); print('survived')"
    finished = run(jobs.complete(sys.executable, "-c", x32_getpid))
    assert finished.outcome.signal == signal.SIGSYS, finished
    assert b"survived" not in finished.stdout


def test_no_new_privs_is_set_for_a_root_job_that_asks(jobs: Jobs) -> None:
    assert probe(jobs, privileges=Privileges(no_new_privs=True))["NoNewPrivs"] == 1


def output_of(stub: pb_grpc.JobServiceStub, job_id: str) -> bytes:
    request = pb.StreamJobOutputRequest(id=job_id, follow=True)
    return b"".join(response.chunk.data for response in stub.StreamJobOutput(request))


def test_only_an_admin_widens_privileges_and_only_for_root(tmp_path: Path) -> None:
    pki = Pki.create(tmp_path / "pki")
    cap_eff = ["-c", "grep CapEff /proc/self/status"]
    with (
        running_server(pki, tmp_path / "state") as server,
        client(server, pki, "bob") as writer,
        client(server, pki, "admin") as admin,
    ):
        for privileges in (
            pb.Privileges(cap_add=["NET_ADMIN"]),
            pb.Privileges(seccomp_unconfined=True),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                writer.StartJob(pb.StartJobRequest(command="true", privileges=privileges))
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "only an admin may" in (refused.value.details() or "")
        for user, privileges, words in (
            ("", pb.Privileges(cap_add=["NET_ADMIN"]), "only to a job run as root"),
            ("root", pb.Privileges(cap_add=["CAP_WHATEVER"]), "unknown capability"),
        ):
            with pytest.raises(grpc.RpcError) as invalid:
                admin.StartJob(pb.StartJobRequest(command="true", user=user, privileges=privileges))
            assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert words in (invalid.value.details() or "")
        added = pb.Privileges(cap_add=["net_admin"], no_new_privs=True)
        job = admin.StartJob(
            pb.StartJobRequest(command="sh", args=cap_eff, user="root", privileges=added)
        )
        expected = DEFAULT_MASK | 1 << CAPABILITIES["NET_ADMIN"]
        assert output_of(admin, job.id) == f"CapEff:\t{expected:016x}\n".encode()
        assert admin.GetJob(pb.GetJobRequest(id=job.id)).privileges == added
        dropped = pb.Privileges(cap_drop=["ALL"])  # taking away is for anyone
        job = writer.StartJob(pb.StartJobRequest(command="true", privileges=dropped))
        assert writer.GetJob(pb.GetJobRequest(id=job.id)).privileges == dropped
