"""How a client reaches the server: address and certificates, and what its errors mean.

Flags win over environment variables, which win over the defaults in ``_defaults``.
Every gRPC error becomes a ``CliError`` here, the one place that knows status codes
on the client side.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from jobworker.cli import _defaults as defaults
from jobworker.cli._errors import CliError, UsageError
from jobworker.v1 import jobworker_pb2_grpc as pb_grpc

_ADDRESS = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[^:\[\]\s]+):[0-9]{1,5}")


@dataclass(frozen=True)
class Connection:
    """A server address and the client's certificate, key and CA, all resolved."""

    server: str
    certificate: Path
    key: Path
    ca: Path

    @classmethod
    def resolve(
        cls,
        *,
        server: str | None,
        tls_dir: Path | None,
        cert: Path | None,
        key: Path | None,
        ca: Path | None,
        environ: Mapping[str, str],
        euid: int | None = None,
    ) -> Connection:
        """The connection the flags, then the environment, then the defaults ask for."""
        address = server or environ.get(defaults.SERVER_ENV) or defaults.DEFAULT_SERVER
        if not _ADDRESS.fullmatch(address):
            raise UsageError(f"server address {address!r} is not HOST:PORT (e.g. localhost:50051)")
        if (cert is None) != (key is None):
            raise UsageError("--cert and --key go together: give both or neither")
        directory = defaults.tls_dir(tls_dir, environ, euid)
        return cls(
            server=address,
            certificate=cert or directory / f"{defaults.DEFAULT_CLIENT}.crt",
            key=key or directory / f"{defaults.DEFAULT_CLIENT}.key",
            ca=ca or directory / "ca.crt",
        )

    def credentials(self) -> grpc.ChannelCredentials:
        """Mutual TLS credentials from the files; an unreadable file is one clear error."""
        files = {"client certificate": self.certificate, "client key": self.key, "CA": self.ca}
        pem = {}
        for what, path in files.items():
            try:
                pem[what] = path.read_bytes()
            except OSError as error:
                raise CliError(
                    f"cannot read the {what} {path}: {error.strerror}; create certificates "
                    "with `jobworker certs init`, or point --tls-dir (or "
                    f"{defaults.TLS_DIR_ENV}), --cert, --key and --ca at them"
                ) from None
        return grpc.ssl_channel_credentials(
            root_certificates=pem["CA"],
            private_key=pem["client key"],
            certificate_chain=pem["client certificate"],
        )

    @contextmanager
    def stub(self) -> Iterator[pb_grpc.JobServiceStub]:
        """A JobService stub on a fresh channel, closed afterwards."""
        with grpc.secure_channel(self.server, self.credentials()) as channel:
            yield pb_grpc.JobServiceStub(channel)


_MESSAGES = {
    grpc.StatusCode.UNAVAILABLE: "cannot reach server at {server}: {details} "
    "(is `jobworker server` running there, with the same CA?)",
    grpc.StatusCode.UNAUTHENTICATED: "the server refused the client certificate: {details}",
    grpc.StatusCode.PERMISSION_DENIED: "permission denied: {details}",
    grpc.StatusCode.NOT_FOUND: "{details}",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid request: {details}",
    grpc.StatusCode.FAILED_PRECONDITION: "{details}",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "the server is at capacity: {details}",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the server at {server} did not answer in time",
    grpc.StatusCode.CANCELLED: "the call was cancelled ({details}); the server may be "
    "shutting down",
}


def translate(error: grpc.RpcError, server: str) -> CliError:
    """The one-line error for a failed call to ``server``."""
    code: grpc.StatusCode = error.code()
    details = (error.details() or code.name.lower()).strip()
    template = _MESSAGES.get(code, "the server failed ({code}): {details}")
    return CliError(template.format(server=server, details=details, code=code.name))
