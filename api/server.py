"""The gRPC server: mutual TLS only, the JobService, health checking and reflection.

There is no plaintext port and no option for one. The server presents its
certificate, requires a client certificate signed by the configured CA, and
gRPC's TLS stack accepts TLS 1.2 and 1.3 only, with ECDHE key exchange and
AEAD ciphers for TLS 1.2 (see the TLS probe test). Health checking and
reflection are served on the same port, under the same authentication, so
stock tools such as grpcurl work with a client certificate.

Shutdown on SIGTERM or SIGINT: the health status turns NOT_SERVING, the server
stops accepting calls, calls in flight get a grace period (streams following a
job that keeps running are then cancelled, and clients may reconnect later),
and the runner closes, leaving jobs running for the next start by default.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from jobworker.api.interceptor import AuthInterceptor
from jobworker.api.service import JobService
from jobworker.api.streams import DEFAULT_MAX_STREAMS, DEFAULT_MAX_STREAMS_PER_USER, StreamSlots
from jobworker.runner.runner import Runner, RunnerConfig
from jobworker.v1 import jobworker_pb2, jobworker_pb2_grpc

log = logging.getLogger("jobworker.api")

DEFAULT_LISTEN = "localhost:50051"
SERVICE_NAME = jobworker_pb2.DESCRIPTOR.services_by_name["JobService"].full_name
GRPC_OPTIONS = (
    # gRPC cancels a call that has waited 30 s for the server to take it up, and the
    # caller sees a bare CANCELLED. The asyncio server takes up one call per turn of
    # its event loop, so a busy loop (64 followers of a fast job in the test VM,
    # issue 7) left later calls waiting that long. How long a caller is prepared to
    # wait is for its own deadline to say; the hour is only a backstop.
    ("grpc.server_max_unrequested_time_in_server", 3600),
)


class ServerConfigError(Exception):
    """The server cannot start with this configuration; the message says why."""


@dataclass(frozen=True)
class TlsFiles:
    """The server's certificate and key, and the CA that client certificates must chain to."""

    certificate: Path
    key: Path
    ca: Path

    @classmethod
    def in_directory(cls, directory: Path) -> TlsFiles:
        """The layout ``jobworker certs init`` writes."""
        return cls(directory / "server.crt", directory / "server.key", directory / "ca.crt")

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that require and verify a client certificate."""
        pem = {name: _read(path, name) for name, path in self._files().items()}
        return grpc.ssl_server_credentials(
            [(pem["key"], pem["certificate"])],
            root_certificates=pem["CA certificate"],
            require_client_auth=True,
        )

    def _files(self) -> dict[str, Path]:
        return {"certificate": self.certificate, "key": self.key, "CA certificate": self.ca}


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ServerConfigError(
            f"cannot read the server's TLS {what} {path}: {error.strerror}"
        ) from None


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``serve`` needs."""

    runner: RunnerConfig
    tls: TlsFiles
    listen: str = DEFAULT_LISTEN
    shutdown_grace_seconds: float = 5.0
    max_streams: int = DEFAULT_MAX_STREAMS
    """Output streams open at once, of all callers together (see ``streams``)."""
    max_streams_per_user: int = DEFAULT_MAX_STREAMS_PER_USER


class Server:
    """A started server: its runner, the bound port, and how to stop both."""

    def __init__(self, config: ServerConfig, runner: Runner, server: aio.Server, port: int) -> None:
        self.config = config
        self.runner = runner
        self.port = port
        self._server = server
        # The asyncio health servicer; grpc-stubs predates it, hence Any.
        self._health: Any = health.aio.HealthServicer()  # type: ignore[attr-defined]

    @classmethod
    async def start(cls, config: ServerConfig) -> Server:
        """Open the runner and start listening; the caller must ``stop`` it."""
        credentials = config.tls.credentials()
        runner = await Runner.open(config.runner)
        server = aio.server(interceptors=[AuthInterceptor()], options=GRPC_OPTIONS)
        streams = StreamSlots(config.max_streams, config.max_streams_per_user)
        jobworker_pb2_grpc.add_JobServiceServicer_to_server(JobService(runner, streams), server)
        try:
            port = server.add_secure_port(config.listen, credentials)
        except RuntimeError as error:
            await runner.close()
            raise ServerConfigError(f"cannot listen on {config.listen}: {error}") from None
        started = cls(config, runner, server, port)
        health_pb2_grpc.add_HealthServicer_to_server(started._health, server)
        reflection.enable_server_reflection(
            [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        await server.start()
        await started._health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        await started._health.set("", health_pb2.HealthCheckResponse.SERVING)
        return started

    async def stop(self) -> None:
        """Graceful shutdown, as described in the module documentation."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(self.config.shutdown_grace_seconds)
        await self.runner.close()


async def serve(config: ServerConfig, on_ready: Callable[[Server], None]) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    server = await Server.start(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signo in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signo, stop.set)
    on_ready(server)
    await stop.wait()
    log.info("shutting down")
    await server.stop()
