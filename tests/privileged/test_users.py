"""Jobs run as another user: the kernel applies the uid and groups, and holds them there."""

from __future__ import annotations

import grp
import os
from pathlib import Path

import grpc
import pytest

from jobworker.isolation._mountinfo import read_mounts
from jobworker.isolation.credentials import Credentials
from jobworker.isolation.errors import BadWorkingDirectory
from jobworker.isolation.limits import Limits
from jobworker.isolation.namespaces import Namespaces
from jobworker.v1 import jobworker_pb2 as pb
from jobworker.v1 import jobworker_pb2_grpc as pb_grpc
from tests.privileged.api_helpers import Pki, client, running_server
from tests.privileged.helpers import Jobs, run

pytestmark = pytest.mark.privileged

NOBODY = Credentials.resolve("nobody")
WHO = 'id -u; id -g; id -G; echo "$HOME $USER $LOGNAME"'


@pytest.mark.parametrize("namespaces", [Namespaces(), Namespaces.none()], ids=["all", "none"])
def test_the_command_runs_with_the_users_ids_groups_and_home(
    jobs: Jobs, namespaces: Namespaces
) -> None:
    finished = run(jobs.complete("sh", "-c", WHO, namespaces=namespaces, user=NOBODY))
    assert finished.outcome.exit_code == 0, finished.stderr
    groups = " ".join(str(g) for g in NOBODY.groups)
    assert finished.stdout.decode() == f"65534\n65534\n{groups}\n/nonexistent nobody nobody\n"


def test_a_user_cannot_leave_its_cgroup_or_raise_its_limits(jobs: Jobs) -> None:
    cgroup2 = next(
        m.point for m in read_mounts(Path("/proc/self/mountinfo")) if m.fstype == "cgroup2"
    )
    own = f"{cgroup2}$(cut -d: -f3 /proc/self/cgroup)"
    script = (
        f"echo $$ > {cgroup2}/cgroup.procs && echo LEFT; "
        f"echo max > {own}/memory.max && echo RAISED; "
        f"cat {own}/memory.max"
    )
    finished = run(
        jobs.complete("sh", "-c", script, limits=Limits(memory_bytes=64 << 20), user=NOBODY)
    )
    assert finished.stdout.decode() == f"{64 << 20}\n", finished.stderr
    assert finished.stderr.count(b"Permission denied") == 2, finished.stderr


def test_a_working_directory_the_user_may_not_enter_is_refused(jobs: Jobs, tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chmod(tmp_path, 0o755)
    with pytest.raises(BadWorkingDirectory, match="Permission denied"):
        run(jobs.start("true", cwd=str(private), user=NOBODY))
    finished = run(jobs.complete("pwd", cwd=str(private)))  # root may
    assert finished.stdout == f"{private}\n".encode()


def output_of(stub: pb_grpc.JobServiceStub, job_id: str) -> bytes:
    """The job's whole output, once it has ended."""
    request = pb.StreamJobOutputRequest(id=job_id, follow=True)
    return b"".join(response.chunk.data for response in stub.StreamJobOutput(request))


def test_the_servers_default_user_and_who_may_choose_root(tmp_path: Path) -> None:
    pki = Pki.create(tmp_path / "pki")
    with (
        running_server(pki, tmp_path / "state", default_user="nobody") as server,
        client(server, pki, "bob") as writer,
        client(server, pki, "admin") as admin,
    ):
        job = writer.StartJob(pb.StartJobRequest(command="sh", args=["-c", "id -u"]))
        assert job.user == "nobody"
        assert output_of(writer, job.id) == b"65534\n"
        with pytest.raises(grpc.RpcError) as refused:
            writer.StartJob(pb.StartJobRequest(command="true", user="root"))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "only an admin may" in (refused.value.details() or "")
        with pytest.raises(grpc.RpcError) as unknown:
            writer.StartJob(pb.StartJobRequest(command="true", user="no-such-user-here"))
        assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "no such user: no-such-user-here" in (unknown.value.details() or "")
        job = admin.StartJob(pb.StartJobRequest(command="sh", args=["-c", "id -u"], user="0"))
        assert (job.user, job.uid, job.gid) == ("root", 0, 0)
        assert output_of(admin, job.id) == b"0\n"


def test_a_writer_runs_only_as_allowed_users_with_exactly_their_groups(tmp_path: Path) -> None:
    pki = Pki.create(tmp_path / "pki")
    with (
        running_server(pki, tmp_path / "state", allowed_users=("nobody",)) as server,
        client(server, pki, "bob") as writer,
        client(server, pki, "admin") as admin,
    ):
        job = writer.StartJob(pb.StartJobRequest(command="sh", args=["-c", "id -u"]))
        assert job.user == f"job-{job.id[:8]}"
        assert output_of(writer, job.id) == f"{job.uid}\n".encode()
        job = writer.StartJob(pb.StartJobRequest(command="sh", args=["-c", "id -u"], user="nobody"))
        assert output_of(writer, job.id) == b"65534\n"
        for user in ("nobody:0", "nobody:root", "nobody:disk", "nobody:shadow", "root", "0"):
            with pytest.raises(grpc.RpcError) as refused:
                writer.StartJob(pb.StartJobRequest(command="true", user=user))
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, user
            assert f"only an admin may run a job as {user}" in (refused.value.details() or "")
        disk = grp.getgrnam("disk").gr_gid
        job = admin.StartJob(pb.StartJobRequest(command="id", args=["-g"], user="nobody:disk"))
        assert output_of(admin, job.id) == f"{disk}\n".encode()
