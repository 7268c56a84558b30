"""The certificates of a jobworker deployment: one private CA, the server, and its clients.

``init_authority`` makes a directory holding everything a first deployment needs::

    ca.crt  ca.key          the CA, self-signed; clients and server trust only it
    server.crt server.key   the server's certificate, for localhost and this host's names
    admin.crt admin.key     a first client, user ``admin`` with the admin role

and ``issue_client`` adds ``<user>.crt`` and ``<user>.key`` for each further user.
``read_identity`` is what the API layer calls on every connection's peer certificate.

**Who a client is.** The user is the certificate subject's common name; the role is a URI
subject alternative name, ``urn:jobworker:role:<role>``. A SAN URI rather than an
overloaded OU or CN, because it is unambiguous (one typed entry that means exactly this,
which nobody else issues or parses), leaves the CN free to follow whatever naming
convention users already have, and shows up as-is in ``openssl x509 -text`` and every
other X.509 tool. A private extension would need an OID arc we do not own.

**Why the certificates look the way they do.**

- ECDSA P-256 with SHA-256: small, fast handshakes, and supported by every TLS stack we
  talk to (OpenSSL, BoringSSL inside gRPC).
- The CA may sign leaf certificates only (``path_length=0``), so a leaked client key
  cannot mint further certificates.
- The server's certificate allows server authentication only, and clients' only client
  authentication: a stolen server key cannot log in as a client, nor a client key
  impersonate the server. ``read_identity`` enforces the client side again itself,
  because it must not depend on how the TLS stack was configured.
- Every certificate starts 5 minutes in the past, so a peer whose clock is a little
  behind does not reject a certificate that was just issued.
- Keys are written mode 0600 from their first byte (never chmod-ed afterwards, which
  would leave a window); replacing files (``force``) goes through a temporary file and a
  rename, so a reader sees either the old file or the new one.

Errors, each with a one-line message naming the problem::

    CertificateError             the CA in a directory is unusable, or a peer certificate
    │                            is not a valid client certificate (``read_identity``)
    ├── CertificateFileExists    refusing to overwrite; ``paths`` names the files
    └── InvalidName              a user name or server name is invalid (also a ValueError)
"""

from __future__ import annotations

import enum
import ipaddress
import os
import re
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "ROLE_URI_PREFIX",
    "CertificateError",
    "CertificateFileExists",
    "InvalidName",
    "Role",
    "init_authority",
    "issue_client",
    "read_identity",
]

ROLE_URI_PREFIX = "urn:jobworker:role:"


class Role(enum.Enum):
    """What a client may do; carried in its certificate as ``urn:jobworker:role:<value>``."""

    READER = "reader"
    WRITER = "writer"
    ADMIN = "admin"


class CertificateError(Exception):
    """Base of every error raised here; the message names the file or field at fault."""


class CertificateFileExists(CertificateError):
    """Files that would be written exist already; nothing was written."""

    def __init__(self, paths: Sequence[Path]) -> None:
        names = ", ".join(str(path) for path in paths)
        verb = "exists" if len(paths) == 1 else "exist"
        super().__init__(f"{names} already {verb}; use --force to replace")
        self.paths = tuple(paths)


class InvalidName(CertificateError, ValueError):
    """A user name or server name cannot go into a certificate."""


_CA_NAME = "jobworker CA"
_SERVER_NAME = "jobworker server"
_ADMIN_USER = "admin"
# issue_client writes <user>.crt: these users would overwrite the authority's own files.
_RESERVED_USERS = frozenset({"ca", "server"})

_CLOCK_SKEW = timedelta(minutes=5)
_CA_VALIDITY = timedelta(days=5 * 365)
_LEAF_VALIDITY = timedelta(days=365)

_KEY_MODE = 0o600
_CERT_MODE = 0o644
_DIRECTORY_MODE = 0o700

_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
_DNS_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_DNS_NAME_MAX = 253


def init_authority(
    directory: Path, *, extra_server_names: Sequence[str] = (), force: bool = False
) -> list[Path]:
    """Create a new CA in ``directory`` with a server and an ``admin`` client certificate.

    Every name is validated and every existing file refused before anything is written,
    so a refused call leaves the directory as it was. Returns the files written.
    """
    server_names = _server_names(extra_server_names)
    names = ("ca", "server", _ADMIN_USER)
    paths = [directory / f"{name}{suffix}" for name in names for suffix in (".crt", ".key")]
    if not force:
        _refuse_existing(paths)
    _make_directory(directory)

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
        subject=_ADMIN_USER,
        alternative_names=[_role_name(Role.ADMIN)],
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    contents = [
        _certificate_pem(ca.certificate),
        _key_pem(ca.key),
        _certificate_pem(server),
        _key_pem(server_key),
        _certificate_pem(admin),
        _key_pem(admin_key),
    ]
    _write_files(list(zip(paths, contents, strict=True)), force=force)
    return paths


def issue_client(directory: Path, user: str, role: Role, *, force: bool = False) -> list[Path]:
    """Issue ``<user>.crt`` and ``<user>.key`` from the CA in ``directory``.

    Returns the files written. The CA must have been made by ``init_authority``.
    """
    _check_user(user)
    if user in _RESERVED_USERS:
        raise InvalidName(f"user name {user!r} is reserved: {user}.crt is the authority's own")
    paths = [directory / f"{user}.crt", directory / f"{user}.key"]
    if not force:
        _refuse_existing(paths)
    now = datetime.now(UTC)
    ca = _load_authority(directory, now)
    key = _new_key()
    certificate = _issue(
        ca,
        key,
        now,
        subject=user,
        alternative_names=[_role_name(role)],
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    _write_files(
        list(zip(paths, [_certificate_pem(certificate), _key_pem(key)], strict=True)),
        force=force,
    )
    return paths


def read_identity(certificate_pem: bytes) -> tuple[str, Role]:
    """The user and role a client certificate stands for.

    The TLS layer has already checked that the certificate chains to our CA; this
    checks that it is a client certificate at all and carries exactly one identity,
    so that a server certificate, or one from a misconfigured issuer, never passes as
    a client.
    """
    if not certificate_pem.strip():
        raise CertificateError("no client certificate")
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem)
        extensions = certificate.extensions
    except ValueError as error:
        raise CertificateError(f"not a valid PEM certificate: {error}") from None

    try:
        usages = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise CertificateError("not a client certificate: it has no extended key usage") from None
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        raise CertificateError("not a client certificate: its extended key usage lacks clientAuth")

    common_names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not common_names:
        raise CertificateError("the certificate has no common name (the user name)")
    if len(common_names) > 1:
        raise CertificateError("the certificate has several common names; expected one user")
    user = common_names[0].value
    if not isinstance(user, str) or not _USER.fullmatch(user):
        raise CertificateError(f"the common name {user!r} is not a valid user name")

    try:
        alternative_names = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = alternative_names.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    roles = [uri.removeprefix(ROLE_URI_PREFIX) for uri in uris if uri.startswith(ROLE_URI_PREFIX)]
    if not roles:
        raise CertificateError(f"the certificate has no role (a {ROLE_URI_PREFIX}<role> URI)")
    if len(roles) > 1:
        raise CertificateError(f"the certificate has several roles: {', '.join(roles)}")
    try:
        role = Role(roles[0])
    except ValueError:
        known = ", ".join(known_role.value for known_role in Role)
        raise CertificateError(f"unknown role {roles[0]!r}; known roles: {known}") from None
    return user, role


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
    """The CA in ``directory``, checked enough that what it signs will verify."""
    certificate_path, key_path = directory / "ca.crt", directory / "ca.key"
    try:
        certificate_pem = certificate_path.read_bytes()
        key_pem = key_path.read_bytes()
    except OSError as error:
        raise CertificateError(
            f"no usable certificate authority in {directory}: cannot read {error.filename}: "
            f"{error.strerror}; create one with `jobworker certs init --dir {directory}`"
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


def _check_user(user: str) -> None:
    if not _USER.fullmatch(user):
        raise InvalidName(
            f"invalid user name {user!r}: use 1 to 64 letters, digits, '.', '_' or '-', "
            "not starting with '.' or '-'"
        )


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


def _refuse_existing(paths: Sequence[Path]) -> None:
    existing = [path for path in paths if os.path.lexists(path)]
    if existing:
        raise CertificateFileExists(existing)


def _make_directory(directory: Path) -> None:
    """Create ``directory`` private to its owner; an existing one is left as it is."""
    try:
        directory.mkdir(mode=_DIRECTORY_MODE, parents=True)
    except FileExistsError:
        return
    except OSError as error:
        raise CertificateError(f"cannot create {directory}: {error.strerror}") from None
    # mkdir's mode is reduced by the umask; make it exactly owner-only.
    directory.chmod(_DIRECTORY_MODE)


def _write_files(files: Sequence[tuple[Path, bytes]], *, force: bool) -> None:
    """Write ``files`` so that a failure leaves no half-made set behind.

    Without ``force``, each file is created exclusively, so one that appeared since
    ``_refuse_existing`` is not overwritten either, and what this call had created is
    removed again. With ``force``, every file is first written in full beside its
    destination and only then are all renamed into place, so running out of space or
    permissions replaces nothing.
    """
    try:
        if force:
            _replace_all(files)
        else:
            _create_all(files)
    except FileExistsError as error:
        raise CertificateFileExists([Path(error.filename)]) from None
    except OSError as error:
        # A failed rename reports the temporary file first; name the destination.
        path = error.filename2 or error.filename
        raise CertificateError(f"cannot write {path}: {error.strerror}") from None


def _create_all(files: Sequence[tuple[Path, bytes]]) -> None:
    created: list[Path] = []
    try:
        for path, data in files:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            fd = os.open(path, flags, _mode(path))
            created.append(path)
            _fill(fd, path, data)
    except BaseException:
        for path in created:
            path.unlink(missing_ok=True)
        raise


def _replace_all(files: Sequence[tuple[Path, bytes]]) -> None:
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in files:
            # mkstemp creates the file exclusively with mode 0600.
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            staged.append((Path(name), path))
            _fill(fd, path, data)
        for temporary, path in staged:
            os.replace(temporary, path)
    finally:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)


def _fill(fd: int, path: Path, data: bytes) -> None:
    """Write ``data`` to the new file ``fd`` and make it durable, closing ``fd``."""
    with open(fd, "wb") as file:
        # The mode given at creation is reduced by the umask; set it exactly.
        os.fchmod(fd, _mode(path))
        file.write(data)
        file.flush()
        os.fsync(fd)


def _mode(path: Path) -> int:
    return _KEY_MODE if path.suffix == ".key" else _CERT_MODE


def _certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
