"""A real jobworker server over real mutual TLS, for tests that talk to it as clients do."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from jobworker.api.certs import Role, init_authority, issue_client
from jobworker.api.server import Server, ServerConfig, TlsFiles
from jobworker.runner.runner import RunnerConfig
from jobworker.v1 import jobworker_pb2_grpc as pb_grpc
from tests.privileged.runner_helpers import remove_cgroup_tree

USERS = {"alice": Role.READER, "bob": Role.WRITER, "carol": Role.WRITER, "dave": Role.WRITER}
"""Clients issued by ``certs``; ``admin`` comes from init_authority, and ``dave-reader`` is
the same user ``dave`` with a second certificate, for the role reader."""


@dataclass(frozen=True)
class Pki:
    """Certificates made by our own tool: a CA, the server, and one client per user."""

    directory: Path

    @classmethod
    def create(cls, directory: Path) -> Pki:
        init_authority(directory)
        for user, role in USERS.items():
            issue_client(directory, user, role)
        second = directory / "dave-reader"
        second.mkdir()
        for name in ("ca.crt", "ca.key"):
            (second / name).write_bytes((directory / name).read_bytes())
        issue_client(second, "dave", Role.READER)
        return cls(directory)

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


class ServerThread:
    """The server on its own event loop in a thread, as long as a test module needs it."""

    def __init__(self, config: ServerConfig) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        start = asyncio.run_coroutine_threadsafe(Server.start(config), self._loop)
        self.server = start.result(timeout=600)
        self.address = f"localhost:{self.server.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=600)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


@contextmanager
def running_server(pki: Pki, state_dir: Path, **runner_options: object) -> Iterator[ServerThread]:
    """A server on an ephemeral loopback port with its own cgroup parent, removed afterwards."""
    parent = f"/jobworker-test-{uuid.uuid4().hex[:8]}"
    config = ServerConfig(
        runner=RunnerConfig(state_dir=state_dir, cgroup_parent=parent, **runner_options),  # type: ignore[arg-type]
        tls=TlsFiles.in_directory(pki.directory),
        listen="localhost:0",
    )
    server = ServerThread(config)
    try:
        yield server
    finally:
        server.stop()
        remove_cgroup_tree(parent)


@contextmanager
def client(server: ServerThread, pki: Pki, name: str | None) -> Iterator[pb_grpc.JobServiceStub]:
    """A JobService stub over mutual TLS as ``name`` (or with no client certificate)."""
    with grpc.secure_channel(server.address, pki.credentials(name)) as channel:
        yield pb_grpc.JobServiceStub(channel)
