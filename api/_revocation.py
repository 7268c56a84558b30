"""The revocation list: client certificates the server refuses although they chain to its CA.

Without one, a leaked certificate stays valid until it expires. It is a standard X.509
CRL, signed by the CA's key, so that ``openssl crl -text`` and other tools read it:
``jobworker certs revoke`` adds to it (``sign_revocation_list``, keeping every earlier
entry, with a CRL number that grows by one each time) and the server reads it at start
and on SIGHUP (``read_revocation_list``).

gRPC Python's TLS credentials take no revocation list (the C core's CRL support is not
exposed to Python), so the server does not check it in the handshake: the API's
interceptor looks up the serial of every call's verified client certificate instead
(see ``jobworker.api._interceptor``).

A list is believed only if the CA signed it: anyone able to write the server's TLS
directory could otherwise un-revoke certificates, or lock every client out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from jobworker.api.errors import RevocationListError

__all__ = ["CRL_NAME", "read_revocation_list", "revoked_serials", "sign_revocation_list"]

CRL_NAME = "crl.pem"
"""The file name of the list, both in the CA directory and in the server's TLS directory."""

_SIGNING_KEYS = (
    ec.EllipticCurvePublicKey,
    rsa.RSAPublicKey,
    dsa.DSAPublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
)
"""Kinds of CA key that can have signed a list (ours are EC; a CA given with --ca may not be)."""


def read_revocation_list(
    path: Path, authorities: Sequence[x509.Certificate]
) -> x509.CertificateRevocationList | None:
    """The list in ``path``, checked to be signed by one of ``authorities``; None if no file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise RevocationListError(
            f"cannot read the revocation list {path}: {error.strerror}"
        ) from None
    try:
        crl = x509.load_pem_x509_crl(data)
    except ValueError:
        raise RevocationListError(f"the revocation list {path} is not a PEM X.509 CRL") from None
    for authority in authorities:
        if crl.issuer == authority.subject and _signed_by(crl, authority):
            return crl
    raise RevocationListError(f"the revocation list {path} is not signed by the CA")


def revoked_serials(crl: x509.CertificateRevocationList | None) -> frozenset[int]:
    """The serial numbers ``crl`` revokes (none without a list)."""
    return frozenset() if crl is None else frozenset(entry.serial_number for entry in crl)


def sign_revocation_list(
    authority: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    previous: x509.CertificateRevocationList | None,
    serials: Iterable[int],
    now: datetime,
) -> bytes:
    """A new list (PEM): ``previous``'s entries, plus ``serials`` revoked ``now``.

    Its next update is the CA's own end, since a list is only written when something
    is revoked: a sooner date would make strict readers refuse it while nothing changed.
    """
    entries = list(previous or ())
    known = {entry.serial_number for entry in entries}
    for serial in serials:
        if serial not in known:
            entries.append(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
            )
            known.add(serial)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.subject)
        .last_update(now)
        .next_update(authority.not_valid_after_utc)
        .add_extension(x509.CRLNumber(_number(previous) + 1), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
    )
    for entry in entries:
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.PEM)


def _number(crl: x509.CertificateRevocationList | None) -> int:
    """The CRL number of ``crl``; 0 for none, so the first list is number 1."""
    if crl is None:
        return 0
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


def _signed_by(crl: x509.CertificateRevocationList, authority: x509.Certificate) -> bool:
    public_key = authority.public_key()
    return isinstance(public_key, _SIGNING_KEYS) and crl.is_signature_valid(public_key)
