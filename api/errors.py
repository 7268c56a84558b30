"""Every error the API layer raises, each with a one-line message naming the problem.

Certificates are made by ``authority`` (a private CA, the server, its clients), kept track of
in ``_certindex`` and written by ``_certfiles``, revoked through ``_revocation``, and read on
every call by ``_identity``; the server is configured by ``server`` and bounds streams in
``streams``::

    ApiError
    ├── CertificateError             the CA or a file of it is unusable, or a peer certificate
    │   │                            is not a valid client certificate (``read_identity``)
    │   ├── CertificateFileExists    refusing to overwrite; ``paths`` names the files
    │   ├── InvalidName              a user name or server name is invalid (also a ValueError)
    │   ├── UnknownCertificate       nothing to revoke by that name or serial (also a LookupError)
    │   └── RevocationListError      a revocation list is unreadable, malformed, or not signed
    │                                by the CA
    ├── ServerConfigError            the server cannot start with this configuration
    │   └── CaKeyExposed             the CA's private key is among the server's TLS files
    └── TooManyStreams               a caller, or everyone together, holds every stream allowed
                                     (becomes RESOURCE_EXHAUSTED)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class ApiError(Exception):
    """Base of every error of the API layer."""


class CertificateError(ApiError):
    """Base of every certificate error; the message names the file or field at fault."""


class CertificateFileExists(CertificateError):
    """Files that would be written exist already; nothing was written."""

    def __init__(self, paths: Sequence[Path]) -> None:
        names = ", ".join(str(path) for path in paths)
        verb = "exists" if len(paths) == 1 else "exist"
        super().__init__(f"{names} already {verb}; use --force to replace")
        self.paths = tuple(paths)


class InvalidName(CertificateError, ValueError):
    """A user name or server name cannot go into a certificate."""


class UnknownCertificate(CertificateError, LookupError):
    """No certificate issued by the CA has that user name or serial number."""


class RevocationListError(CertificateError):
    """A revocation list cannot be read, is not a CRL, or was not signed by the CA."""


class ServerConfigError(ApiError):
    """The server cannot start with this configuration; the message says why."""


class CaKeyExposed(ServerConfigError):
    """The CA's private key is in a directory the server reads its own files from."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problem = (
            f"the CA's private key {path} is in the server's TLS directory, where jobs "
            "running as root could read it and issue themselves certificates"
        )
        super().__init__(f"{self.problem}; move it to a directory of its own")


class TooManyStreams(ApiError):
    """The caller, or everyone together, already holds as many streams as allowed."""
