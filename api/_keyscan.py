"""Finding a CA's private key among the server's own files, so that the server can refuse to start.

Every job running as root can read what the server reads. A CA key there lets any such
job issue itself an admin certificate and act on every user's jobs, so the server does
not start next to one. The key is recognised by what it is, not by its name: a copy
called ``backup.pem`` is as dangerous as ``ca.key``.

The scan must neither hang nor slow a start down, and must not fail because of files
that are none of its business: it reads only regular files of at most 64 KiB directly
in the given directories (following symbolic links, since a link to the key exposes it
as well), and quietly skips anything it cannot open or parse. An encrypted key is
skipped too: without its passphrase it signs nothing.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

__all__ = ["find_private_key"]

_MAX_BYTES = 64 * 1024
_PEM_KEY = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", re.DOTALL
)


def find_private_key(
    directories: Iterable[Path], certificates: Sequence[x509.Certificate]
) -> Path | None:
    """The first file in ``directories`` holding the private key of one of ``certificates``."""
    wanted = {_public_der(certificate.public_key()) for certificate in certificates}
    for directory in dict.fromkeys(directories):
        try:
            with os.scandir(directory) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError:
            continue
        for entry in entries:
            data = _small_file(entry)
            if data is not None and any(
                _public_der(key.public_key()) in wanted for key in _keys(data)
            ):
                return Path(entry.path)
    return None


def _small_file(entry: os.DirEntry[str]) -> bytes | None:
    """The content of ``entry`` if it is a regular file of at most ``_MAX_BYTES``."""
    try:
        if not entry.is_file():  # a FIFO or device is never opened: that could block
            return None
        fd = os.open(entry.path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    with open(fd, "rb") as file:
        try:
            status = os.fstat(fd)  # what was opened, should it have changed since is_file
            if not stat.S_ISREG(status.st_mode) or status.st_size > _MAX_BYTES:
                return None
            return file.read(_MAX_BYTES)
        except OSError:
            return None


def _keys(data: bytes) -> Iterator[PrivateKeyTypes]:
    """Every unencrypted private key in ``data``: PEM blocks, or the whole file as DER."""
    blocks = [match.group(0) for match in _PEM_KEY.finditer(data)]
    for block in blocks:
        try:
            yield serialization.load_pem_private_key(block, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
    if not blocks and b"-----BEGIN" not in data:
        try:
            yield serialization.load_der_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return


def _public_der(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
