"""A job's view of the filesystem, as the kernel enforces it: read-only, tmpfs, binds, rootfs.

Through the gRPC API, so authorization and the errors a client sees are tested too.
Jobs that must show EROFS (rather than EACCES) run as root, which an admin may ask for.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from jobworker.v1 import jobworker_pb2 as pb
from jobworker.v1 import jobworker_pb2_grpc as pb_grpc
from tests.privileged.api_helpers import Pki, client, running_server
from tests.privileged.runner_helpers import home_root
from tests.privileged.test_cli import Cli, one_line_error, serve_cli

pytestmark = pytest.mark.privileged

MiB = 1024 * 1024
BUSYBOX = Path("/bin/busybox")


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, pb_grpc.JobServiceStub]]:
    """A writer's and an admin's client of one server, shared by the module's tests."""
    base = tmp_path_factory.mktemp("filesystem")
    pki = Pki.create(base / "pki")
    with (
        running_server(pki, base / "state") as server,
        client(server, pki, "bob") as writer,
        client(server, pki, "admin") as admin,
    ):
        yield {"writer": writer, "admin": admin}


def start(stub: pb_grpc.JobServiceStub, script: str, **options: object) -> pb.Job:
    request = pb.StartJobRequest(command="sh", args=["-c", script], **options)  # type: ignore[arg-type]
    return stub.StartJob(request)


def finish(stub: pb_grpc.JobServiceStub, job: pb.Job) -> tuple[pb.Job, str]:
    """The job once ended, and its whole output."""
    request = pb.StreamJobOutputRequest(id=job.id, follow=True)
    output = b"".join(response.chunk.data for response in stub.StreamJobOutput(request))
    return stub.GetJob(pb.GetJobRequest(id=job.id)), output.decode(errors="replace")


def refused(stub: pb_grpc.JobServiceStub, **options: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        start(stub, "true", **options)
    return error.value


def test_read_only_root_with_a_private_tmp(stubs: dict[str, pb_grpc.JobServiceStub]) -> None:
    admin, tag = stubs["admin"], uuid.uuid4().hex
    script = (
        f"touch /etc/jobworker-{tag} 2>&1; touch /usr/jobworker-{tag} 2>&1; "
        f"echo private > /tmp/{tag} && cat /tmp/{tag}"
    )
    job = start(admin, script, user="0", filesystem=pb.Filesystem(read_only=True))
    ended, output = finish(admin, job)
    assert ended.exit_code == 0, output
    # Root may write anywhere, so only the read-only mounts stop it: EROFS, not EACCES.
    assert output.count("Read-only file system") == 2, output
    assert output.endswith("private\n"), output
    assert not Path(f"/etc/jobworker-{tag}").exists()
    assert not Path(f"/tmp/{tag}").exists()  # the job's /tmp is its own
    assert ended.filesystem.read_only


def test_tmpfs_is_writable_and_full_at_its_size(stubs: dict[str, pb_grpc.JobServiceStub]) -> None:
    writer = stubs["writer"]  # tmpfs only takes away: anyone may ask for one
    view = pb.Filesystem(tmpfs=[pb.Tmpfs(path="/mnt", size_bytes=MiB)])
    job = start(writer, "head -c 2097152 /dev/zero 2>&1 >/mnt/f; wc -c < /mnt/f", filesystem=view)
    ended, output = finish(writer, job)
    assert "No space left on device" in output, output
    written = int(output.split()[-1])
    assert MiB - 64 * 1024 <= written <= MiB, output
    assert list(ended.filesystem.tmpfs) == [pb.Tmpfs(path="/mnt", size_bytes=MiB)]


def test_tmpfs_pages_count_in_the_jobs_memory(stubs: dict[str, pb_grpc.JobServiceStub]) -> None:
    """A tmpfs far bigger than the memory limit: filling it runs the job out of memory."""
    writer = stubs["writer"]
    view = pb.Filesystem(tmpfs=[pb.Tmpfs(path="/mnt", size_bytes=512 * MiB)])
    limits = pb.Limits(memory_bytes=32 * MiB)
    job = start(writer, "head -c 134217728 /dev/zero > /mnt/f", filesystem=view, limits=limits)
    ended, output = finish(writer, job)
    assert ended.oom_killed, (ended, output)


def test_binds_read_only_and_read_write(
    stubs: dict[str, pb_grpc.JobServiceStub], tmp_path: Path
) -> None:
    admin = stubs["admin"]
    shown, shared = tmp_path / "shown", tmp_path / "shared"
    shown.mkdir()
    shared.mkdir()
    (shown / "seen").write_text("hello\n")
    view = pb.Filesystem(
        read_only=True,
        binds=[  # their mount points are made inside the job's own /tmp
            pb.Bind(source=str(shown), destination="/tmp/in/shown", read_only=True),
            pb.Bind(source=str(shared), destination="/tmp/in/shared"),
        ],
    )
    script = (
        "cat /tmp/in/shown/seen; echo no > /tmp/in/shown/new 2>&1; "
        "echo through > /tmp/in/shared/new"
    )
    ended, output = finish(admin, start(admin, script, user="0", filesystem=view))
    assert ended.exit_code == 0, output
    assert output.startswith("hello\n"), output
    assert "Read-only file system" in output, output
    assert not (shown / "new").exists()
    assert (shared / "new").read_text() == "through\n"  # written through to the host


def test_a_bind_at_its_own_path_on_the_host(
    stubs: dict[str, pb_grpc.JobServiceStub], tmp_path: Path
) -> None:
    admin = stubs["admin"]
    (tmp_path / "file").write_text("one\n")
    view = pb.Filesystem(read_only=True, binds=[pb.Bind(source=str(tmp_path))])
    ended, output = finish(
        admin,
        start(admin, f"cat {tmp_path}/file; echo two > {tmp_path}/file", user="0", filesystem=view),
    )
    assert ended.exit_code == 0, output
    assert (tmp_path / "file").read_text() == "two\n"  # writable, though the root is not


@pytest.mark.parametrize(
    ("view", "message"),
    [
        (pb.Filesystem(binds=[pb.Bind(source="/no/such/dir")]), "binds[0]: /no/such/dir: No such"),
        (pb.Filesystem(binds=[pb.Bind(source="etc")]), "must be an absolute path"),
        (
            pb.Filesystem(binds=[pb.Bind(source="/etc", destination="/tmp/../root")]),
            "without '.', '..'",
        ),
        (
            pb.Filesystem(binds=[pb.Bind(source="/etc", destination="/no/such/place")]),
            "/no/such/place does not exist on the host",
        ),
        (
            pb.Filesystem(binds=[pb.Bind(source="/etc/hostname", destination="/tmp")]),
            "/tmp on the host is not a file",
        ),
        (
            pb.Filesystem(tmpfs=[pb.Tmpfs(path="/proc/sys")]),
            "tmpfs[0]: /proc/sys is in the job's own /proc",
        ),
        (pb.Filesystem(rootfs="/"), "rootfs: / is the host's root"),
        (pb.Filesystem(rootfs="/etc"), "/etc has no directory proc"),
    ],
)
def test_bad_paths_are_invalid_arguments(
    stubs: dict[str, pb_grpc.JobServiceStub], view: pb.Filesystem, message: str
) -> None:
    error = refused(stubs["admin"], filesystem=view)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert message in (error.details() or ""), error.details()


def test_a_source_through_a_symbolic_link_is_refused(
    stubs: dict[str, pb_grpc.JobServiceStub], tmp_path: Path
) -> None:
    (tmp_path / "link").symlink_to("/root")
    error = refused(
        stubs["admin"], filesystem=pb.Filesystem(binds=[pb.Bind(source=f"{tmp_path}/link")])
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "passes through a symbolic link; name its real path /root" in (error.details() or "")


def test_only_admins_bind_host_paths_or_choose_a_root(
    stubs: dict[str, pb_grpc.JobServiceStub],
) -> None:
    for view in (pb.Filesystem(binds=[pb.Bind(source="/etc")]), pb.Filesystem(rootfs="/srv")):
        error = refused(stubs["writer"], filesystem=view)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
        assert "only admins may" in (error.details() or "")


def test_refused_without_the_mount_namespace(stubs: dict[str, pb_grpc.JobServiceStub]) -> None:
    error = refused(
        stubs["writer"],
        namespaces={"mount": False, "pid": False},
        filesystem=pb.Filesystem(read_only=True),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "filesystem.read_only: needs the mount namespace" in (error.details() or "")


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """A tiny root: busybox and its applets, and the directories a root needs."""
    root = tmp_path / "root"
    for directory in ("bin", "proc", "dev", "sys", "tmp", "etc"):
        (root / directory).mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, check=True, text=True)
    for applet in applets.stdout.split():
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    os.chmod(root, 0o755)  # the job's user must be able to reach its own root
    os.chmod(tmp_path, 0o755)
    return root


def test_a_rootfs_job_sees_only_its_root(
    stubs: dict[str, pb_grpc.JobServiceStub], rootfs: Path
) -> None:
    assert Path("/etc/hostname").exists()  # there is something on the host to hide
    admin = stubs["admin"]
    script = (
        "cat /etc/hostname 2>&1; echo /proc/[0-9]*; echo data > /dev/null && echo null works; "
        "head -c 3 /dev/zero | wc -c; echo mounts; cut -d' ' -f5 /proc/self/mountinfo"
    )
    job = start(admin, script, filesystem=pb.Filesystem(rootfs=str(rootfs)))
    ended, output = finish(admin, job)
    assert ended.exit_code == 0, output
    lines = output.splitlines()
    assert "No such file or directory" in lines[0], output
    assert lines[1] == "/proc/1 /proc/2", output  # its init and itself: no host process
    assert lines[2:4] == ["null works", "3"], output
    mounts = set(lines[lines.index("mounts") + 1 :])
    devices = {f"/dev/{name}" for name in ("null", "zero", "full", "random", "urandom", "tty")}
    # Nothing of the host's mounts is left: only the root, /proc, /dev and its nodes, /sys.
    assert mounts == {"/", "/proc", "/dev", "/sys", *devices}, output
    assert ended.filesystem.rootfs == str(rootfs)


def test_a_rootfs_can_be_read_only_with_binds_inside(
    stubs: dict[str, pb_grpc.JobServiceStub], rootfs: Path, tmp_path: Path
) -> None:
    admin = stubs["admin"]
    data = tmp_path / "data"
    data.mkdir()
    (data / "file").write_text("from the host\n")
    view = pb.Filesystem(
        rootfs=str(rootfs),
        read_only=True,
        binds=[pb.Bind(source=str(data), destination="/etc", read_only=True)],
    )
    script = "cat /etc/file; touch /bin/x 2>&1; touch /tmp/x && echo tmp works"
    ended, output = finish(admin, start(admin, script, user="0", filesystem=view))
    assert ended.exit_code == 0, output
    assert output.splitlines()[0] == "from the host", output
    assert "Read-only file system" in output, output
    assert output.endswith("tmp works\n"), output
    assert not (rootfs / "bin/x").exists()


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """The real ``jobworker`` against a server of its own, as an admin."""
    with home_root() as homes:
        yield from serve_cli(tmp_path_factory.mktemp("cli"), homes)


def test_the_cli_asks_for_a_view_and_shows_it(cli: Cli, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "file").write_text("bound\n")
    started = cli(
        "run", "--read-only", "--tmpfs", "/mnt:1M", "--bind", f"{data}:/tmp/data:ro",
        "--user", "0", "--", "sh", "-c", "cat /tmp/data/file; touch /etc/x /tmp/data/x",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    job_id = started.stdout.strip()
    logs = cli("logs", "-f", job_id)
    assert logs.stdout == "bound\n", logs
    assert logs.stderr.count("Read-only file system") == 2, logs.stderr
    assert cli.status(job_id)["filesystem"] == {
        "read_only": True,
        "tmpfs": [{"path": "/mnt", "size_bytes": MiB}],
        "binds": [{"source": str(data), "destination": "/tmp/data", "read_only": True}],
        "rootfs": None,
    }


def test_the_cli_refuses_what_the_server_refuses_in_one_line(cli: Cli) -> None:
    one_line_error(cli("run", "--bind", "data", "--", "true"), 2, "SRC must be an absolute path")
    refused = cli("run", "--isolate", "none", "--read-only", "--", "true")
    one_line_error(refused, 1, "filesystem.read_only: needs the mount namespace")
