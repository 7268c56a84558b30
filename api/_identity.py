"""Who a client certificate stands for: what the API reads from every call's peer.

The user is the certificate subject's common name; the role is a URI subject
alternative name, ``urn:jobworker:role:<role>``. A SAN URI rather than an overloaded OU
or CN, because it is unambiguous (one typed entry that means exactly this, which nobody
else issues or parses), leaves the CN free to follow whatever naming convention users
already have, and shows up as-is in ``openssl x509 -text`` and every other X.509 tool.
A private extension would need an OID arc we do not own. The serial number says which
of a user's certificates it is, for revocation.

The issuing side (``authority``) writes certificates by these same rules; this module
only reads them, and the interceptor needs nothing else. Errors are those of ``errors``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jobworker.api.errors import CertificateError, InvalidName
from jobworker.api.roles import Role

ROLE_URI_PREFIX = "urn:jobworker:role:"

_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
_SERIAL = re.compile(r"[0-9A-Fa-f]+")


@dataclass(frozen=True)
class Identity:
    """Who a client certificate stands for, and which of their certificates it is."""

    user: str
    role: Role
    serial: int


def read_identity(certificate_pem: bytes) -> Identity:
    """The user, role and serial number of a client certificate.

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
    return Identity(user, role, certificate.serial_number)


def check_user(user: str) -> None:
    """Refuse a user name that could not be a certificate's common name or a file name."""
    if not _USER.fullmatch(user):
        raise InvalidName(
            f"invalid user name {user!r}: use 1 to 64 letters, digits, '.', '_' or '-', "
            "not starting with '.' or '-'"
        )


def serial_text(serial: int) -> str:
    """A serial number as every message and the index write it: lower-case hex."""
    return f"{serial:x}"


def parse_serial(text: str) -> int | None:
    """A serial number written in hex, as ``openssl x509 -serial`` prints it, or None.

    Case does not matter and colons between bytes are allowed (``1A:2B``), as other
    tools print them.
    """
    digits = text.replace(":", "")
    return int(digits, 16) if _SERIAL.fullmatch(digits) else None
