"""The deployment's private CA: it issues the server's and clients' certificates, and revokes them.

The server needs the CA's certificate but must never see its key: every job running as
root can read the server's files, and the CA key would let it issue itself an admin
certificate. So there are two directories::

    CA directory (certs --ca-dir)        TLS directory (certs --dir; what the server reads)
      ca.crt ca.key   the CA               ca.crt                 the CA certificate
      index.json      what it issued       server.crt server.key  the server
      crl.pem         what it revoked      admin.crt admin.key    the first client, an admin
                                           <user>.crt <user>.key  each further user
                                           crl.pem                a copy of the revocation list

``init_authority`` makes both, ``issue_client`` adds a user's certificate to the TLS
directory and records it in the index, ``revoke`` revokes by user name (every
certificate of theirs) or serial number and writes the revocation list to both. The CA
directory can live on another machine: the server needs only the TLS directory.

**Why the certificates look the way they do.**

- ECDSA P-256 with SHA-256: small, fast handshakes, and supported by every TLS stack we
  talk to (OpenSSL, BoringSSL inside gRPC).
- The CA may sign leaf certificates only (``path_length=0``), so a leaked client key
  cannot mint further certificates.
- The server's certificate allows server authentication only, and clients' only client
  authentication: a stolen server key cannot log in as a client, nor a client key
  impersonate the server. ``identity.read_identity`` enforces the client side again itself,
  because it must not depend on how the TLS stack was configured.
- Every certificate starts 5 minutes in the past, so a peer whose clock is a little
  behind does not reject a certificate that was just issued.

Errors are those of ``jobworker.api.errors``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jobworker.api._certfiles import locked, make_private_directory, refuse_existing, write_files
from jobworker.api._certindex import INDEX_NAME, IssuedCertificate, index_json, read_index
from jobworker.api._identity import ROLE_URI_PREFIX, check_user, parse_serial, serial_text
from jobworker.api._revocation import (
    CRL_NAME,
    read_revocation_list,
    revoked_serials,
    sign_revocation_list,
)
from jobworker.api.errors import CertificateError, InvalidName, UnknownCertificate
from jobworker.api.roles import FIRST_ADMIN, Role

__all__ = ["Revocation", "init_authority", "issue_client", "revoke"]

_CA_NAME = "jobworker CA"
_SERVER_NAME = "jobworker server"
# issue_client writes <user>.crt: these users would overwrite the authority's own files.
_RESERVED_USERS = frozenset({"ca", "server"})

_CLOCK_SKEW = timedelta(minutes=5)
_CA_VALIDITY = timedelta(days=5 * 365)
_LEAF_VALIDITY = timedelta(days=365)

_DNS_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_DNS_NAME_MAX = 253


def init_authority(
    tls_dir: Path,
    ca_dir: Path,
    *,
    extra_server_names: Sequence[str] = (),
    force: bool = False,
) -> list[Path]:
    """Create a new CA in ``ca_dir``, and in ``tls_dir`` a server and an ``admin`` client.

    Every name is validated and every existing file refused before anything is written,
    so a refused call leaves both directories as they were. With ``force`` the old
    files are replaced, and revocation lists of the old CA removed (the server would
    refuse them). Returns the files written.
    """
    server_names = _server_names(extra_server_names)
    if os.path.abspath(tls_dir) == os.path.abspath(ca_dir):
        raise CertificateError(
            f"the CA directory must not be the TLS directory {tls_dir}: the server reads "
            "that one, and must not find the CA's key there"
        )
    paths = [ca_dir / "ca.crt", ca_dir / "ca.key", ca_dir / INDEX_NAME, tls_dir / "ca.crt"]
    paths += [
        tls_dir / f"{name}{suffix}"
        for name in ("server", FIRST_ADMIN)
        for suffix in (".crt", ".key")
    ]
    stale = [ca_dir / CRL_NAME, tls_dir / CRL_NAME]
    if not force:
        refuse_existing([*paths, *stale])
    make_private_directory(ca_dir)
    make_private_directory(tls_dir)

    now = datetime.now(UTC)
    ca = _new_authority(now)
    server_key = _new_key()
    server = _issue(
        ca,
        server_key,
        now,
        subject=_SERVER_NAME,
        alternative_names=server_names,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )
    admin_key = _new_key()
    admin = _issue(
        ca,
        admin_key,
        now,
        subject=FIRST_ADMIN,
        alternative_names=[_role_name(Role.ADMIN)],
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    index = [IssuedCertificate.of(server, None, now), IssuedCertificate.of(admin, Role.ADMIN, now)]
    contents = [
        _certificate_pem(ca.certificate),
        _key_pem(ca.key),
        index_json(index),
        _certificate_pem(ca.certificate),
        _certificate_pem(server),
        _key_pem(server_key),
        _certificate_pem(admin),
        _key_pem(admin_key),
    ]
    with locked(ca_dir):
        write_files(list(zip(paths, contents, strict=True)), force=force)
        for path in stale:
            _remove(path)
    return paths


def issue_client(
    tls_dir: Path, ca_dir: Path, user: str, role: Role, *, force: bool = False
) -> list[Path]:
    """Issue ``<user>.crt`` and ``<user>.key`` into ``tls_dir`` from the CA in ``ca_dir``.

    The certificate is recorded in the CA's index before its files are written: should
    writing them fail, the index names a certificate nobody holds, which is harmless,
    whereas a certificate missing from the index could not be revoked by name. Returns
    the files written. The CA must have been made by ``init_authority``.
    """
    check_user(user)
    if user in _RESERVED_USERS:
        raise InvalidName(f"user name {user!r} is reserved: {user}.crt is the authority's own")
    paths = [tls_dir / f"{user}.crt", tls_dir / f"{user}.key"]
    if not force:
        refuse_existing(paths)
    now = datetime.now(UTC)
    ca = _load_authority(ca_dir, now)
    key = _new_key()
    certificate = _issue(
        ca,
        key,
        now,
        subject=user,
        alternative_names=[_role_name(role)],
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    with locked(ca_dir):
        index = [*read_index(ca_dir), IssuedCertificate.of(certificate, role, now)]
        write_files([(ca_dir / INDEX_NAME, index_json(index))], force=True)
        write_files(
            list(zip(paths, [_certificate_pem(certificate), _key_pem(key)], strict=True)),
            force=force,
        )
    return paths


@dataclass(frozen=True)
class Revocation:
    """What ``revoke`` did: the certificates it revoked, and the lists it wrote."""

    revoked: list[IssuedCertificate]
    written: list[Path]


def revoke(tls_dir: Path, ca_dir: Path, which: str) -> Revocation:
    """Revoke every unrevoked certificate of user ``which``, or the one with serial ``which``.

    ``which`` is a user name if the index has certificates issued to that name, else a
    serial number in hex. The new list, signed by the CA, keeps every earlier entry and
    goes to ``crl.pem`` in both directories; it takes effect when the server reloads it.
    An unknown name or serial, or one revoked already, changes nothing.
    """
    now = datetime.now(UTC)
    ca = _load_authority(ca_dir, now)
    with locked(ca_dir):
        previous = read_revocation_list(ca_dir / CRL_NAME, [ca.certificate])
        chosen = _choose(read_index(ca_dir), revoked_serials(previous), which, ca_dir)
        serials = [entry.serial for entry in chosen]
        crl = sign_revocation_list(ca.certificate, ca.key, previous, serials, now)
        written = list(dict.fromkeys([ca_dir / CRL_NAME, tls_dir / CRL_NAME]))
        write_files([(path, crl) for path in written], force=True)
    return Revocation(chosen, written)


def _choose(
    index: Sequence[IssuedCertificate], revoked: frozenset[int], which: str, ca_dir: Path
) -> list[IssuedCertificate]:
    """The certificates ``revoke`` means, as documented there."""
    clients = [entry for entry in index if entry.role is not None]
    by_name = [entry for entry in clients if entry.user == which]
    if by_name:
        chosen = [entry for entry in by_name if entry.serial not in revoked]
        if not chosen:
            serials = ", ".join(serial_text(entry.serial) for entry in by_name)
            raise CertificateError(f"every certificate of {which} is revoked already: {serials}")
        return chosen
    serial = parse_serial(which)
    where = ca_dir / INDEX_NAME
    if serial is None:
        raise UnknownCertificate(f"no certificate in {where} was issued to {which!r}")
    by_serial = [entry for entry in index if entry.serial == serial]
    if not by_serial:
        raise UnknownCertificate(
            f"no certificate in {where} was issued to {which!r} or has serial {serial_text(serial)}"
        )
    (entry,) = by_serial
    if entry.role is None:
        raise CertificateError(
            f"certificate {serial_text(serial)} is the server's; only client certificates "
            "can be revoked"
        )
    if serial in revoked:
        raise CertificateError(f"certificate {entry.describe()} is revoked already")
    return [entry]


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as error:
        raise CertificateError(f"cannot remove {path}: {error.strerror}") from None


@dataclass(frozen=True)
class _Authority:
    """A CA certificate with its key: what signing needs."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _new_authority(now: datetime) -> _Authority:
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _CA_NAME)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + _CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _Authority(certificate, key)


def _issue(
    ca: _Authority,
    key: ec.EllipticCurvePrivateKey,
    now: datetime,
    *,
    subject: str,
    alternative_names: Sequence[x509.GeneralName],
    usage: x509.ObjectIdentifier,
) -> x509.Certificate:
    """A leaf certificate: it may sign handshakes for one purpose (``usage``), nothing else.

    It ends when the CA ends if that comes first: a certificate outliving its issuer
    would only fail verification later, far from the cause.
    """
    not_after = min(now + _LEAF_VALIDITY, ca.certificate.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )


def _load_authority(directory: Path, now: datetime) -> _Authority:
    """The CA in ``directory`` (a CA directory), checked enough that what it signs will verify."""
    certificate_path, key_path = directory / "ca.crt", directory / "ca.key"
    try:
        certificate_pem = certificate_path.read_bytes()
        key_pem = key_path.read_bytes()
    except OSError as error:
        raise CertificateError(
            f"no usable certificate authority in {directory}: cannot read {error.filename}: "
            f"{error.strerror}; create one with `jobworker certs init --ca-dir {directory}`, "
            "or name the right directory with --ca-dir"
        ) from None
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem)
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (ValueError, x509.ExtensionNotFound):
        raise CertificateError(f"{certificate_path} is not a CA certificate") from None
    if not constraints.ca:
        raise CertificateError(f"{certificate_path} is not a CA certificate")
    if certificate.not_valid_after_utc <= now:
        expired = certificate.not_valid_after_utc.isoformat(timespec="seconds")
        raise CertificateError(f"the CA {certificate_path} expired on {expired}")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CertificateError(f"{key_path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or _public_der(key) != _public_der(
        certificate
    ):
        raise CertificateError(f"{key_path} is not the key of {certificate_path}")
    return _Authority(certificate, key)


def _public_der(owner: ec.EllipticCurvePrivateKey | x509.Certificate) -> bytes:
    return owner.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _role_name(role: Role) -> x509.GeneralName:
    return x509.UniformResourceIdentifier(ROLE_URI_PREFIX + role.value)


def _server_names(extra: Sequence[str]) -> list[x509.GeneralName]:
    """The names clients may reach the server by: loopback, this host's names, ``extra``.

    This host's names are skipped when they cannot be DNS names (a hostname such as
    ``(none)``): they are a convenience; names the caller asked for are never skipped.
    """
    host_names = ["localhost", socket.gethostname(), socket.getfqdn()]
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    for name in host_names:
        try:
            general_name = _server_name(name)
        except InvalidName:
            continue
        if general_name not in names:
            names.append(general_name)
    for name in extra:
        general_name = _server_name(name)
        if general_name not in names:
            names.append(general_name)
    return names


def _server_name(name: str) -> x509.GeneralName:
    """``name`` as an IP address or DNS name SAN, refused if it is neither."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    problem = _dns_name_problem(name)
    if problem:
        raise InvalidName(f"invalid server name {name!r}: {problem}")
    return x509.DNSName(name.lower())


def _dns_name_problem(name: str) -> str | None:
    labels = name.removeprefix("*.").split(".")
    checks = (
        (not name, "it is empty"),
        (any(character.isspace() for character in name), "it contains white space"),
        (not name.isascii(), "it is not ASCII; give the IDNA form (xn--...)"),
        (len(name) > _DNS_NAME_MAX, f"it is longer than {_DNS_NAME_MAX} characters"),
        (any("*" in label for label in labels), "a wildcard may only be a leading '*.'"),
        (
            not all(_DNS_LABEL.fullmatch(label) for label in labels),
            "expected an IP address, or dot-separated labels of letters, digits and '-'",
        ),
    )
    return next((problem for failed, problem in checks if failed), None)


def _certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
