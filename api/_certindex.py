"""The CA directory's record of every certificate it issued: what revoking by name reads.

A certificate carries its user, but once handed over the CA no longer has it; so
``init_authority`` and ``issue_client`` record each one in ``index.json`` in the CA
directory, written whole and renamed into place::

    {"version": 1, "certificates": [
        {"serial": "1a2b...", "user": "bob", "role": "writer",
         "not_after": "2026-01-31T12:00:00Z", "issued_at": "2025-01-31T12:00:00Z"}, ...]}

``serial`` is lower-case hex (``openssl x509 -serial`` prints the same digits in upper
case); ``user`` is the subject's common name; ``role`` is null for the server's own
certificate. What is revoked is not recorded here but in the revocation list, which is
what the server reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from jobworker.api._identity import parse_serial, serial_text
from jobworker.api.errors import CertificateError
from jobworker.api.roles import Role

__all__ = ["INDEX_NAME", "IssuedCertificate", "index_json", "read_index"]

INDEX_NAME = "index.json"
_VERSION = 1


@dataclass(frozen=True)
class IssuedCertificate:
    """One certificate the CA issued."""

    serial: int
    user: str
    role: Role | None
    """None for the server's certificate."""
    not_after: datetime
    issued_at: datetime

    @classmethod
    def of(
        cls, certificate: x509.Certificate, role: Role | None, now: datetime
    ) -> IssuedCertificate:
        """The record of ``certificate``, issued ``now`` for ``role``."""
        (common_name,) = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return cls(
            serial=certificate.serial_number,
            user=str(common_name.value),
            role=role,
            not_after=certificate.not_valid_after_utc,
            issued_at=now,
        )

    def describe(self) -> str:
        """One line for people: serial, user, role, end of validity."""
        role = "the server" if self.role is None else self.role.value
        until = _timestamp(self.not_after)
        return f"{serial_text(self.serial)} {self.user} ({role}, valid until {until})"


def read_index(directory: Path) -> list[IssuedCertificate]:
    """Every certificate recorded in ``directory``'s index; none if it has no index."""
    path = directory / INDEX_NAME
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except OSError as error:
        raise CertificateError(f"cannot read {path}: {error.strerror}") from None
    except ValueError:
        raise CertificateError(f"{path} is not JSON; it is the CA's index") from None
    try:
        if data["version"] != _VERSION:
            raise CertificateError(f"{path} has version {data['version']}, not {_VERSION}")
        return [_entry(item) for item in data["certificates"]]
    except (KeyError, TypeError, ValueError):
        raise CertificateError(f"{path} is not a valid index of certificates") from None


def index_json(entries: Sequence[IssuedCertificate]) -> bytes:
    """The content of an index holding ``entries``, in order."""
    certificates = [
        {
            "serial": serial_text(entry.serial),
            "user": entry.user,
            "role": None if entry.role is None else entry.role.value,
            "not_after": _timestamp(entry.not_after),
            "issued_at": _timestamp(entry.issued_at),
        }
        for entry in entries
    ]
    return (
        json.dumps({"version": _VERSION, "certificates": certificates}, indent=1) + "\n"
    ).encode()


def _entry(item: dict[str, Any]) -> IssuedCertificate:
    serial = parse_serial(item["serial"])
    if serial is None:
        raise ValueError(item["serial"])
    return IssuedCertificate(
        serial=serial,
        user=str(item["user"]),
        role=None if item["role"] is None else Role(item["role"]),
        not_after=datetime.fromisoformat(item["not_after"]),
        issued_at=datetime.fromisoformat(item["issued_at"]),
    )


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
