"""The API's error boundary: whatever a handler raises reaches the client as a status.

A real grpc.aio server over mutual TLS with the real interceptor; the service
behind it is a stand-in whose methods fail on purpose, since what is under test
is the boundary, not the service. Before the boundary existed, an ``OSError``
reached the client as UNKNOWN with its text (a path on the server).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from jobworker.api._interceptor import AuthInterceptor
from jobworker.api.authority import init_authority
from jobworker.api.server import TlsFiles
from jobworker.runner.errors import JobNotFound
from jobworker.v1 import jobworker_pb2 as pb
from jobworker.v1 import jobworker_pb2_grpc as pb_grpc

SECRET_PATH = "/var/lib/jobworker/jobs/0b6e1c5c/output.log"
JOB = "0b6e1c5c-6b0b-4c5b-9d3a-3d7b1f2a9c10"


class FailingService(pb_grpc.JobServiceServicer):
    """Each method fails the way a bug or the disk would."""

    async def GetJob(self, request: pb.GetJobRequest, context: Any) -> pb.Job:  # noqa: N802
        raise FileExistsError(17, "File exists", SECRET_PATH)

    async def StopJob(self, request: pb.StopJobRequest, context: Any) -> pb.Job:  # noqa: N802
        raise JobNotFound(f"no job {request.id}")

    async def StreamJobOutput(  # noqa: N802
        self, request: pb.StreamJobOutputRequest, context: Any
    ) -> AsyncIterator[pb.StreamJobOutputResponse]:
        yield pb.StreamJobOutputResponse(chunk=pb.OutputChunk(data=b"first", offset=0))
        raise OSError(5, "Input/output error", SECRET_PATH)


async def read_stream(stub: pb_grpc.JobServiceStub, received: list[bytes]) -> None:
    request = pb.StreamJobOutputRequest(id=JOB)
    async for response in stub.StreamJobOutput(request):  # type: ignore[attr-defined]
        received.append(response.chunk.data)


async def call_failing_service(
    tls: Path,
) -> tuple[grpc.aio.AioRpcError, grpc.aio.AioRpcError, list[bytes], grpc.aio.AioRpcError]:
    server = aio.server(interceptors=[AuthInterceptor()])
    pb_grpc.add_JobServiceServicer_to_server(FailingService(), server)  # type: ignore[abstract]
    port = server.add_secure_port("localhost:0", TlsFiles.in_directory(tls).credentials())
    await server.start()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(tls / "ca.crt").read_bytes(),
        private_key=(tls / "admin.key").read_bytes(),
        certificate_chain=(tls / "admin.crt").read_bytes(),
    )
    try:
        async with aio.secure_channel(f"localhost:{port}", credentials) as channel:
            stub = pb_grpc.JobServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as got:
                await stub.GetJob(pb.GetJobRequest(id=JOB))
            with pytest.raises(grpc.aio.AioRpcError) as stopped:
                await stub.StopJob(pb.StopJobRequest(id=JOB))
            received: list[bytes] = []
            with pytest.raises(grpc.aio.AioRpcError) as streamed:
                await read_stream(stub, received)
        return got.value, stopped.value, received, streamed.value
    finally:
        await server.stop(None)


def test_every_error_becomes_a_status_and_internal_details_stay_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    init_authority(tmp_path, tmp_path / "ca")
    with caplog.at_level(logging.ERROR, logger="jobworker.api"):
        got, stopped, received, streamed = asyncio.run(call_failing_service(tmp_path))
    assert got.code() == grpc.StatusCode.INTERNAL
    assert got.details() == "internal error in the jobworker service; see its log"
    assert stopped.code() == grpc.StatusCode.NOT_FOUND
    assert stopped.details() == f"no job {JOB}"
    assert received == [b"first"]  # what was sent before the failure arrives
    assert streamed.code() == grpc.StatusCode.INTERNAL
    assert SECRET_PATH not in (streamed.details() or "")
    logged = [record for record in caplog.records if record.exc_info]
    assert [type(record.exc_info[1]) for record in logged] == [FileExistsError, OSError]  # type: ignore[index]
    assert SECRET_PATH in caplog.text
