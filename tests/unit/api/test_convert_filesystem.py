"""_convert: a job's filesystem view, from a StartJobRequest and back into a Job."""

from __future__ import annotations

from jobworker.api import _convert as convert
from jobworker.runner.records import (
    Bind,
    Filesystem,
    Tmpfs,
)
from jobworker.v1 import jobworker_pb2 as pb
from tests.records import a_record

MESSAGE = pb.Filesystem(
    read_only=True,
    tmpfs=[pb.Tmpfs(path="/work", size_bytes=1 << 20), pb.Tmpfs(path="/cache")],
    binds=[pb.Bind(source="/srv", destination="/data", read_only=True), pb.Bind(source="/x")],
    rootfs="/srv/root",
)
VIEW = Filesystem(
    read_only=True,
    tmpfs=(Tmpfs("/work", 1 << 20), Tmpfs("/cache", None)),
    binds=(Bind("/srv", "/data", read_only=True), Bind("/x", "", read_only=False)),
    rootfs="/srv/root",
)


def test_a_requested_view_reaches_the_runner_with_who_asked() -> None:
    request = pb.StartJobRequest(command="true", filesystem=MESSAGE)
    started = convert.start_request(request, by_admin=False)
    assert started.filesystem == VIEW
    assert not started.by_admin
    assert convert.start_request(request, by_admin=True).by_admin


def test_no_view_is_the_hosts() -> None:
    started = convert.start_request(pb.StartJobRequest(command="true"), by_admin=True)
    assert started.filesystem == Filesystem()


def test_a_job_shows_its_view_as_requested() -> None:
    record = a_record(filesystem=VIEW)
    assert convert.job(record).filesystem == MESSAGE
