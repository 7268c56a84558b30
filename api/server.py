"""The gRPC server: mutual TLS only, the JobService, health checking and reflection.

There is no plaintext port and no option for one. The server presents its
certificate, requires a client certificate signed by the configured CA, and
gRPC's TLS stack accepts TLS 1.2 and 1.3 only, with ECDHE key exchange and
AEAD ciphers for TLS 1.2 (see the TLS probe test). Health checking and
reflection are served on the same port, under the same authentication, so
stock tools such as grpcurl work with a client certificate.

The server refuses to start when the CA's private key is among its own files
(any job running as root could read it and issue itself certificates), and
when its revocation list is unreadable, malformed or not signed by its CA.
SIGHUP reloads the revocation list; a list that cannot be used then is logged
and the one in force stays.

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
from cryptography import x509
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from jobworker.api._interceptor import AuthInterceptor
from jobworker.api._keyscan import find_private_key
from jobworker.api._revocation import CRL_NAME, read_revocation_list, revoked_serials
from jobworker.api._service import JobService
from jobworker.api.errors import CaKeyExposed, RevocationListError, ServerConfigError
from jobworker.api.streams import DEFAULT_MAX_STREAMS, DEFAULT_MAX_STREAMS_PER_USER, StreamSlots
from jobworker.runner.runner import Runner, RunnerConfig
from jobworker.v1 import jobworker_pb2, jobworker_pb2_grpc

log = logging.getLogger("jobworker.api")

SERVICE_NAME = jobworker_pb2.DESCRIPTOR.services_by_name["JobService"].full_name
GRPC_OPTIONS = (
    # gRPC cancels a call that has waited 30 s for the server to take it up, and the
    # caller sees a bare CANCELLED. The asyncio server takes up one call per turn of
    # its event loop, so a busy loop (64 followers of a fast job in the test VM)
    # left later calls waiting that long. How long a caller is prepared to wait is
    # for its own deadline to say; the hour is only a backstop.
    ("grpc.server_max_unrequested_time_in_server", 3600),
)

REQUEST_ROOM_BYTES = 1 << 20
"""A StartJob message's room besides its standard input: argv and environment are capped
at 128 KiB (``MAX_ARGV_BYTES``), and the rest is small."""


def grpc_options(runner: RunnerConfig) -> tuple[tuple[str, int], ...]:
    """The server's gRPC options: a StartJob may carry as much standard input as allowed.

    gRPC's own default (4 MiB) would refuse a larger one with a message about sizes
    that names nothing the caller set; the runner's check names ``stdin`` instead.
    """
    receive = max(runner.max_stdin_bytes + REQUEST_ROOM_BYTES, 4 << 20)
    return (*GRPC_OPTIONS, ("grpc.max_receive_message_length", receive))


@dataclass(frozen=True)
class TlsFiles:
    """The server's certificate and key, and the CA that client certificates must chain to.

    ``crl`` lists client certificates that are refused although they chain to the CA.
    """

    certificate: Path
    key: Path
    ca: Path
    crl: Path | None = None
    """Read if it exists: until the first ``jobworker certs revoke`` there is none."""

    @classmethod
    def in_directory(cls, directory: Path) -> TlsFiles:
        """The layout ``jobworker certs init`` and ``jobworker certs revoke`` write."""
        return cls(
            directory / "server.crt",
            directory / "server.key",
            directory / "ca.crt",
            directory / CRL_NAME,
        )

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that require and verify a client certificate."""
        pem = {name: _read(path, name) for name, path in self._files().items()}
        return grpc.ssl_server_credentials(
            [(pem["key"], pem["certificate"])],
            root_certificates=pem["CA certificate"],
            require_client_auth=True,
        )

    def authorities(self) -> list[x509.Certificate]:
        """The certificates in the CA file."""
        try:
            authorities = x509.load_pem_x509_certificates(_read(self.ca, "CA certificate"))
        except ValueError:
            raise ServerConfigError(f"{self.ca} is not a PEM CA certificate") from None
        return authorities

    def refuse_exposed_ca_key(self, authorities: list[x509.Certificate]) -> None:
        """Raise ``CaKeyExposed`` if a CA key is in a directory of the server's files."""
        directories = [path.parent for path in (self.certificate, self.key, self.ca)]
        exposed = find_private_key(directories, authorities)
        if exposed is not None:
            raise CaKeyExposed(exposed)

    def revoked(self, authorities: list[x509.Certificate]) -> frozenset[int] | None:
        """The serial numbers the revocation list revokes; None if there is no list."""
        if self.crl is None:
            return None
        try:
            crl = read_revocation_list(self.crl, authorities)
        except RevocationListError as error:
            raise ServerConfigError(str(error)) from None
        return None if crl is None else revoked_serials(crl)

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
    listen: str
    """HOST:PORT; port 0 picks a free one."""
    shutdown_grace_seconds: float = 5.0
    max_streams: int = DEFAULT_MAX_STREAMS
    """Output streams open at once, of all callers together (see ``streams``)."""
    max_streams_per_user: int = DEFAULT_MAX_STREAMS_PER_USER


class Server:
    """A started server: its runner, the bound port, and how to stop both."""

    def __init__(
        self,
        config: ServerConfig,
        runner: Runner,
        server: aio.Server,
        port: int,
        revocation: _Revocation,
    ) -> None:
        self.config = config
        self.runner = runner
        self.port = port
        self._server = server
        self._revocation = revocation
        # The asyncio health servicer; grpc-stubs predates it, hence Any.
        self._health: Any = health.aio.HealthServicer()  # type: ignore[attr-defined]

    @classmethod
    async def start(cls, config: ServerConfig) -> Server:
        """Check the TLS files, open the runner and listen; the caller must ``stop`` it."""
        credentials = config.tls.credentials()
        authorities = config.tls.authorities()
        config.tls.refuse_exposed_ca_key(authorities)
        revoked = config.tls.revoked(authorities)
        interceptor = AuthInterceptor(revoked or frozenset())
        revocation = _Revocation(config.tls, authorities, interceptor, loaded=revoked is not None)
        runner = await Runner.open(config.runner)
        # Only now: a server that refuses to start says so in one line, and nothing before it.
        if revoked is not None:
            log.info("revocation list %s; revoked serial numbers: %d", config.tls.crl, len(revoked))
        server = aio.server(interceptors=[interceptor], options=grpc_options(config.runner))
        streams = StreamSlots(config.max_streams, config.max_streams_per_user)
        jobworker_pb2_grpc.add_JobServiceServicer_to_server(JobService(runner, streams), server)
        try:
            port = server.add_secure_port(config.listen, credentials)
        except RuntimeError as error:
            await runner.close()
            raise ServerConfigError(f"cannot listen on {config.listen}: {error}") from None
        started = cls(config, runner, server, port, revocation)
        health_pb2_grpc.add_HealthServicer_to_server(started._health, server)
        reflection.enable_server_reflection(
            [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        await server.start()
        await started._health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        await started._health.set("", health_pb2.HealthCheckResponse.SERVING)
        return started

    def reload_revocation_list(self) -> bool:
        """Read the revocation list again (SIGHUP); False if it was refused.

        A list that cannot be used is logged as an error and the one in force stays,
        so that a mistake while revoking never stops the server or lets a revoked
        certificate back in. It runs on the event loop: a list is one small file.
        """
        return self._revocation.reload()

    async def stop(self) -> None:
        """Graceful shutdown, as described in the module documentation."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(self.config.shutdown_grace_seconds)
        await self.runner.close()


class _Revocation:
    """The revocation list in force, and how to replace it with the file's."""

    def __init__(
        self,
        tls: TlsFiles,
        authorities: list[x509.Certificate],
        interceptor: AuthInterceptor,
        *,
        loaded: bool,
    ) -> None:
        self._tls = tls
        self._authorities = authorities
        self._interceptor = interceptor
        self._loaded = loaded
        """Whether a list from the file is in force: once one is, a missing file is an error."""

    def reload(self) -> bool:
        try:
            revoked = self._tls.revoked(self._authorities)
        except ServerConfigError as error:
            problem = str(error)
        else:
            if revoked is not None:
                self._interceptor.revoked = revoked
                self._loaded = True
                log.info(
                    "revocation list %s reloaded; revoked serial numbers: %d",
                    self._tls.crl,
                    len(revoked),
                )
                return True
            if not self._loaded:
                log.info("no revocation list %s to reload; nothing is revoked", self._tls.crl)
                return True
            problem = f"the revocation list {self._tls.crl} has disappeared"
        log.error("revocation list not reloaded; the previous one stays in force: %s", problem)
        return False


async def serve(config: ServerConfig, on_ready: Callable[[Server], None]) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully; reload on SIGHUP.

    SIGHUP is caught from the start: by default it would end the process, and a
    reload asked for while the server starts (it may have read the list already)
    is done once it has started.
    """
    loop = asyncio.get_running_loop()
    early_reload = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, early_reload.set)
    server = await Server.start(config)
    loop.add_signal_handler(signal.SIGHUP, server.reload_revocation_list)
    if early_reload.is_set():
        server.reload_revocation_list()
    stop = asyncio.Event()
    for signo in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signo, stop.set)
    on_ready(server)
    await stop.wait()
    log.info("shutting down")
    await server.stop()
