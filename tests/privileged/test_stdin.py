"""Standard input given at start: the job reads exactly those bytes, within the server's bound."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import cast

import grpc
import pytest

from jobworker.v1 import jobworker_pb2 as pb
from jobworker.v1 import jobworker_pb2_grpc as pb_grpc
from tests.privileged.api_helpers import Pki, client, running_server

pytestmark = pytest.mark.privileged


def output_of(stub: pb_grpc.JobServiceStub, job_id: str) -> bytes:
    request = pb.StreamJobOutputRequest(id=job_id, follow=True)
    return b"".join(response.chunk.data for response in stub.StreamJobOutput(request))


def test_a_job_reads_its_stdin_and_nothing_of_the_run_directory(tmp_path: Path) -> None:
    pki = Pki.create(tmp_path / "pki")
    given = os.urandom(3 << 20)
    with running_server(pki, tmp_path / "state") as server, client(server, pki, "bob") as stub:
        # The default: a transient user in its own namespaces, who cannot read the
        # service's state directory; the shim opened the file for it.
        job = stub.StartJob(pb.StartJobRequest(command="sha256sum", stdin=given))
        assert job.stdin_bytes == len(given)
        assert output_of(stub, job.id).split()[0].decode() == hashlib.sha256(given).hexdigest()
        state_dir = tmp_path / "state" / "jobs" / job.id
        assert (state_dir / "stdin").stat().st_mode & 0o777 == 0o600

        plain = stub.StartJob(pb.StartJobRequest(command="cat"))
        assert plain.stdin_bytes == 0
        assert output_of(stub, plain.id) == b""  # /dev/null: at its end at once
        assert stub.GetJob(pb.GetJobRequest(id=plain.id)).exit_code == 0


def test_stdin_up_to_the_servers_bound_beyond_grpcs_default(tmp_path: Path) -> None:
    pki = Pki.create(tmp_path / "pki")
    with (
        running_server(pki, tmp_path / "state", max_stdin_bytes=8 << 20) as server,
        client(server, pki, "bob") as stub,
    ):
        given = b"y" * (8 << 20)  # twice what gRPC accepts unless told otherwise
        job = stub.StartJob(pb.StartJobRequest(command="wc", args=["-c"], stdin=given))
        assert output_of(stub, job.id) == b"8388608\n"

        with pytest.raises(grpc.RpcError) as refused:
            stub.StartJob(pb.StartJobRequest(command="wc", stdin=given + b"y"))
        error = cast(grpc.Call, refused.value)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (
            error.details()
            == "stdin: 8388609 bytes is more than the server's limit of 8388608 bytes"
        )
        listed = stub.ListJobs(pb.ListJobsRequest(include_ended=True))
        assert [listed_job.id for listed_job in listed.jobs] == [job.id], "the refusal left a job"
