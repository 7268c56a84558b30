"""run's filesystem options: how --read-only, --tmpfs, --bind and --rootfs become a request."""

from __future__ import annotations

import pytest

from jobworker.cli import _render as render
from jobworker.cli._errors import UsageError
from jobworker.cli._parser import build
from jobworker.cli._request import start_request
from jobworker.v1 import jobworker_pb2 as pb


def request(*options: str) -> pb.StartJobRequest:
    return start_request(build().parse_args(["run", *options, "--", "true"]))


def test_every_filesystem_option_reaches_the_request() -> None:
    sent = request(
        "--read-only",
        "--tmpfs", "/work:1M",
        "--tmpfs", "/cache",
        "--bind", "/srv/data:/data:ro",
        "--bind", "/srv/out",
        "--bind", "/srv/in:ro",
        "--rootfs", "/srv/root",
    )  # fmt: skip
    assert sent.filesystem == pb.Filesystem(
        read_only=True,
        tmpfs=[pb.Tmpfs(path="/work", size_bytes=1 << 20), pb.Tmpfs(path="/cache")],
        binds=[
            pb.Bind(source="/srv/data", destination="/data", read_only=True),
            pb.Bind(source="/srv/out"),
            pb.Bind(source="/srv/in", read_only=True),
        ],
        rootfs="/srv/root",
    )


def test_without_filesystem_options_the_view_is_left_unset() -> None:
    assert not request().HasField("filesystem")


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--tmpfs", "work:1M", "PATH must be an absolute path"),
        ("--tmpfs", "/work:lots", "is not a size"),
        ("--bind", "data", "SRC must be an absolute path"),
        ("--bind", "/data:data", "DST must be an absolute path"),
        ("--bind", "/a:/b:/c", "is not SRC\\[:DST\\]\\[:ro\\]"),
        ("--bind", "/a:/b:rw", "is not SRC\\[:DST\\]\\[:ro\\]"),
    ],
)
def test_malformed_values_are_usage_errors(option: str, value: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        request(option, value)


def test_status_shows_the_view() -> None:
    job = pb.Job(
        id="j",
        filesystem=pb.Filesystem(
            read_only=True,
            tmpfs=[pb.Tmpfs(path="/work", size_bytes=1 << 20)],
            binds=[
                pb.Bind(source="/srv", destination="/data", read_only=True),
                pb.Bind(source="/x"),
            ],
        ),
    )
    assert render.job_json(job)["filesystem"] == {
        "read_only": True,
        "tmpfs": [{"path": "/work", "size_bytes": 1 << 20}],
        "binds": [
            {"source": "/srv", "destination": "/data", "read_only": True},
            {"source": "/x", "destination": "/x", "read_only": False},
        ],
        "rootfs": None,
    }
    assert "filesystem: read-only, tmpfs /work 1 MiB, bind /srv on /data (ro), bind /x on /x\n" in (
        render.status_text(job)
    )
    assert "filesystem: the host's\n" in render.status_text(pb.Job(id="j"))
