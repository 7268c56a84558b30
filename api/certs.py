"""The errors of everything that handles certificates.

The deployment's certificates are made by ``authority`` (a private CA, the server, its
clients), kept track of in ``_certindex`` and written by ``_certfiles``, revoked through
``_revocation``, and read on every call by ``_identity``.

Errors of ``_identity``, ``authority``, ``_certindex``, ``_certfiles`` and ``_revocation``,
each with a one-line message naming the problem::

    CertificateError             the CA or a file of it is unusable, or a peer certificate
    │                            is not a valid client certificate (``read_identity``)
    ├── CertificateFileExists    refusing to overwrite; ``paths`` names the files
    ├── InvalidName              a user name or server name is invalid (also a ValueError)
    ├── UnknownCertificate       nothing to revoke by that name or serial (also a LookupError)
    └── RevocationListError      a revocation list is unreadable, malformed, or not signed
                                 by the CA
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class CertificateError(Exception):
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
