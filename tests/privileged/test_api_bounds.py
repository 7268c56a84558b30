"""What one API caller can pin in the service is bounded: output streams, per user and in all.

Before the bounds, each follower held a descriptor until the service ran out of
them, and then every start failed for everyone.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from jobworker.v1 import jobworker_pb2 as pb
from jobworker.v1 import jobworker_pb2_grpc as pb_grpc
from tests.privileged.api_helpers import Pki, client, running_server

pytestmark = pytest.mark.privileged


def follow(stub: pb_grpc.JobServiceStub, job_id: str) -> Any:
    """A follower that has received the job's first output, so the server holds its stream."""
    stream: Any = stub.StreamJobOutput(pb.StreamJobOutputRequest(id=job_id, follow=True))
    assert next(stream).chunk.data == b"hi\n"
    return stream


def follow_when_a_slot_is_free(stub: pb_grpc.JobServiceStub, job_id: str) -> Any:
    """The server learns of a cancelled stream a little after the client cancels it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            return follow(stub, job_id)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
        time.sleep(0.2)
    raise AssertionError("a cancelled stream kept its slot")


def refused(stub: pb_grpc.JobServiceStub, job_id: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        follow(stub, job_id)
    return caught.value


def test_output_streams_are_bounded_per_user_and_in_total(tmp_path: Path) -> None:
    pki = Pki.create(tmp_path / "pki")
    bounds: dict[str, object] = {"max_streams": 3, "max_streams_per_user": 2}
    with (
        running_server(pki, tmp_path / "state", server_options=bounds) as server,
        client(server, pki, "bob") as bob,
        client(server, pki, "carol") as carol,
    ):
        request = pb.StartJobRequest(command="sh", args=["-c", "echo hi; exec sleep 600"])
        bobs, carols = bob.StartJob(request), carol.StartJob(request)
        first, second = follow(bob, bobs.id), follow(bob, bobs.id)
        error = refused(bob, bobs.id)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "bob already has 2 output streams open, the limit per user" in str(error.details())
        third = follow(carol, carols.id)
        error = refused(carol, carols.id)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "the server already has 3 output streams open" in str(error.details())
        first.cancel()
        fourth = follow_when_a_slot_is_free(carol, carols.id)
        for stream in (second, third, fourth):
            stream.cancel()
        for stub, job in ((bob, bobs), (carol, carols)):
            stub.StopJob(pb.StopJobRequest(id=job.id))
