"""A real jobworker server over real mutual TLS, for tests that talk to it as clients do."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jobworker.api.authority import Revocation, init_authority, issue_client, revoke
from jobworker.api.errors import ServerConfigError
from jobworker.api.roles import Role
from jobworker.api.server import Server, ServerConfig, TlsFiles
from jobworker.runner.runner import RunnerConfig
from jobworker.v1 import jobworker_pb2_grpc as pb_grpc
from tests.privileged.runner_helpers import home_root, remove_cgroup_tree

USERS = {"alice": Role.READER, "bob": Role.WRITER, "carol": Role.WRITER, "dave": Role.WRITER}
"""Clients issued by ``certs``; ``admin`` comes from init_authority, and ``dave-reader`` is
the same user ``dave`` with a second certificate, for the role reader."""


@dataclass(frozen=True)
class Pki:
    """Certificates made by our own tool: a CA, the server, and one client per user.

    ``directory`` is the server's TLS directory; the CA, with its key, is in ``ca_directory``
    beside it, where the server never looks.
    """

    directory: Path

    @property
    def ca_directory(self) -> Path:
        return self.directory.with_name(self.directory.name + "-ca")

    @classmethod
    def create(cls, directory: Path) -> Pki:
        pki = cls(directory)
        init_authority(directory, pki.ca_directory)
        for user, role in USERS.items():
            pki.issue(user, role)
        second = directory / "dave-reader"
        second.mkdir()
        (second / "ca.crt").write_bytes((directory / "ca.crt").read_bytes())
        issue_client(second, pki.ca_directory, "dave", Role.READER)
        return pki

    def issue(self, user: str, role: Role) -> None:
        """A further client certificate, ``<user>.crt``, as ``jobworker certs issue`` makes it."""
        issue_client(self.directory, self.ca_directory, user, role)

    def revoke(self, which: str) -> Revocation:
        """Revoke as ``jobworker certs revoke`` does: the list lands in the TLS directory."""
        return revoke(self.directory, self.ca_directory, which)

    def files(self, name: str) -> tuple[bytes, bytes]:
        """Certificate and key of ``name``: a user, ``admin``, ``server`` or ``dave-reader``."""
        stem = (
            self.directory / "dave-reader" / "dave"
            if name == "dave-reader"
            else self.directory / name
        )
        return stem.with_suffix(".crt").read_bytes(), stem.with_suffix(".key").read_bytes()

    def credentials(self, name: str | None) -> grpc.ChannelCredentials:
        """Client credentials for ``name``'s certificate, or none at all."""
        ca = (self.directory / "ca.crt").read_bytes()
        if name is None:
            return grpc.ssl_channel_credentials(root_certificates=ca)
        certificate, key = self.files(name)
        return grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=certificate
        )

    def forge(
        self,
        name: str,
        *,
        user: str = "mallory",
        role_uris: tuple[str, ...] = ("urn:jobworker:role:admin",),
        valid: tuple[timedelta, timedelta] = (timedelta(hours=-1), timedelta(hours=1)),
        usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.CLIENT_AUTH,
    ) -> None:
        """Sign, with our own CA's key, a client certificate that ``certs`` would never issue.

        ``valid`` is (not before, not after) relative to now, so expired and
        not-yet-valid certificates can be made; the result is usable as ``name``.
        """
        ca_key = serialization.load_pem_private_key(
            (self.ca_directory / "ca.key").read_bytes(), password=None
        )
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca = x509.load_pem_x509_certificate((self.directory / "ca.crt").read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user)]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + valid[0])
            .not_valid_after(now + valid[1])
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if role_uris:
            names = [x509.UniformResourceIdentifier(uri) for uri in role_uris]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(ca_key, hashes.SHA256())
        (self.directory / f"{name}.crt").write_bytes(
            certificate.public_bytes(serialization.Encoding.PEM)
        )
        (self.directory / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


class ServerThread:
    """The server on its own event loop in a thread, as long as a test module needs it."""

    def __init__(self, config: ServerConfig) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        start = asyncio.run_coroutine_threadsafe(Server.start(config), self._loop)
        self.server = start.result(timeout=600)
        self.address = f"localhost:{self.server.port}"

    def stall(self, seconds: float) -> None:
        """Keep the server's event loop busy for ``seconds``, as a swamped server's is.

        Returns once the loop is busy, so calls made after it wait for the loop.
        """
        busy = threading.Event()

        def hog() -> None:
            busy.set()
            time.sleep(seconds)

        self._loop.call_soon_threadsafe(hog)
        busy.wait()

    def reload_revocation_list(self) -> bool:
        """``Server.reload_revocation_list`` on the server's own loop, as SIGHUP runs it."""

        async def reload() -> bool:
            return self.server.reload_revocation_list()

        return asyncio.run_coroutine_threadsafe(reload(), self._loop).result(timeout=60)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=600)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


def server_config(
    pki: Pki,
    state_dir: Path,
    parent: str,
    server_options: dict[str, object] | None = None,
    **runner_options: object,
) -> ServerConfig:
    """A server on an ephemeral loopback port, serving with ``pki``'s TLS directory."""
    runner_options.setdefault("stop_jobs_on_close", True)  # nothing outlives a test module
    return ServerConfig(
        runner=RunnerConfig(state_dir=state_dir, cgroup_parent=parent, **runner_options),  # type: ignore[arg-type]
        tls=TlsFiles.in_directory(pki.directory),
        listen="localhost:0",
        **(server_options or {}),  # type: ignore[arg-type]
    )


@contextmanager
def running_server(
    pki: Pki,
    state_dir: Path,
    server_options: dict[str, object] | None = None,
    **runner_options: object,
) -> Iterator[ServerThread]:
    """A server on an ephemeral loopback port with its own cgroup parent, removed afterwards."""
    parent = f"/jobworker-test-{uuid.uuid4().hex[:8]}"
    with home_root() as homes:
        runner_options.setdefault("home_root", homes)
        server = ServerThread(
            server_config(pki, state_dir, parent, server_options, **runner_options)
        )
        try:
            yield server
        finally:
            server.stop()
            remove_cgroup_tree(parent)


def refused_start(pki: Pki, state_dir: Path) -> ServerConfigError:
    """Why a server with ``pki``'s TLS directory does not start; fails the test if it does."""
    parent = f"/jobworker-test-{uuid.uuid4().hex[:8]}"

    async def start_and_stop() -> None:
        server = await Server.start(server_config(pki, state_dir, parent))
        await server.stop()

    try:
        with pytest.raises(ServerConfigError) as refused:
            asyncio.run(start_and_stop())
    finally:
        remove_cgroup_tree(parent)
    return refused.value


@contextmanager
def client(server: ServerThread, pki: Pki, name: str | None) -> Iterator[pb_grpc.JobServiceStub]:
    """A JobService stub over mutual TLS as ``name`` (or with no client certificate)."""
    with grpc.secure_channel(server.address, pki.credentials(name)) as channel:
        yield pb_grpc.JobServiceStub(channel)
