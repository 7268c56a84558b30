"""A jobworker client over mutual TLS, as the benchmark drives it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import grpc
from grpc import aio

from jobworker.api.authority import init_authority
from jobworker.v1 import jobworker_pb2 as pb
from jobworker.v1 import jobworker_pb2_grpc as pb_grpc

Stub: TypeAlias = "pb_grpc.JobServiceAsyncStub"
"""What ``JobServiceStub`` gives on an asyncio channel (a name for type checking only)."""

USER = "admin"
"""The client certificate ``init_authority`` issues; an admin may start, stop and list."""

ALL_NAMESPACES_OFF = {name: False for name in ("pid", "mount", "net", "uts", "ipc")}


def make_certificates(directory: Path) -> None:
    """A CA, the server's certificate and the ``admin`` client's, made by jobworker's tool.

    The CA, with its key, goes beside ``directory``: the server refuses to start next to it.
    """
    init_authority(directory, directory.with_name(directory.name + "-ca"))


def credentials(directory: Path) -> grpc.ChannelCredentials:
    """Client credentials: the ``admin`` certificate, trusting only the deployment's CA."""
    return grpc.ssl_channel_credentials(
        root_certificates=(directory / "ca.crt").read_bytes(),
        private_key=(directory / f"{USER}.key").read_bytes(),
        certificate_chain=(directory / f"{USER}.crt").read_bytes(),
    )


def stub(chan: aio.Channel) -> Stub:
    """The JobService stub on ``chan``."""
    return pb_grpc.JobServiceStub(chan)


def channel(address: str, tls_dir: Path) -> aio.Channel:
    """A channel with its own connection (no subchannel shared with other channels)."""
    return aio.secure_channel(
        address, credentials(tls_dir), options=[("grpc.use_local_subchannel_pool", 1)]
    )


@dataclass(frozen=True)
class StreamStats:
    """What one follower received."""

    data_bytes: int
    messages: int
    seconds: float
    began_at: float
    """``time.perf_counter()`` when the call was made."""
    last_data_at: float
    """``time.perf_counter()`` when the last output byte arrived: a live stream ends only
    later, once the job's final record is stored, and the gap is worth seeing apart."""


async def read_stream(stub: Stub, request: pb.StreamJobOutputRequest) -> StreamStats:
    """Receive a whole output stream, counting bytes and messages, keeping nothing."""
    began = last_data_at = time.perf_counter()
    data_bytes = messages = 0
    call = stub.StreamJobOutput(request)
    async for response in call:
        data_bytes += len(response.chunk.data)
        messages += 1
        last_data_at = time.perf_counter()
    return StreamStats(data_bytes, messages, time.perf_counter() - began, began, last_data_at)


async def wait_ended(stub: Stub, job_id: str, poll: float = 0.05) -> pb.Job:
    """Poll GetJob until the job is no longer running; returns its final record."""
    while True:
        job = await stub.GetJob(pb.GetJobRequest(id=job_id))
        if job.state != pb.JOB_STATE_RUNNING:
            return job
        await asyncio.sleep(poll)


def job_seconds(job: pb.Job) -> float:
    """How long an ended job ran, by its own record (start to end as its shim saw them)."""
    return (job.end_time.ToDatetime() - job.start_time.ToDatetime()).total_seconds()
