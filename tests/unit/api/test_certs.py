"""authority and certs: the files init_authority and issue_client write, what is in them, the
index of what was issued, and read_identity.

Certificates are checked with cryptography and, end to end, with the openssl command and a
real TLS handshake through Python's ssl module.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jobworker.api._certfiles import write_files
from jobworker.api._certindex import IssuedCertificate, read_index
from jobworker.api._identity import ROLE_URI_PREFIX, Identity, read_identity
from jobworker.api.authority import init_authority, issue_client
from jobworker.api.errors import CertificateError, CertificateFileExists, InvalidName
from jobworker.api.roles import Role

CA_FILES = ["ca.crt", "ca.key", "index.json"]
TLS_FILES = ["ca.crt", "server.crt", "server.key", "admin.crt", "admin.key"]
SKEW = timedelta(minutes=5)
E = TypeVar("E", bound=x509.ExtensionType)


@dataclass(frozen=True)
class Dirs:
    """A deployment's two directories: the server's TLS files, and the CA with its key."""

    tls: Path
    ca: Path

    def written(self) -> list[Path]:
        return [self.ca / name for name in CA_FILES] + [self.tls / name for name in TLS_FILES]


def init(tmp_path: Path, **options: object) -> Dirs:
    dirs = Dirs(tmp_path / "tls", tmp_path / "ca")
    init_authority(dirs.tls, dirs.ca, **options)  # type: ignore[arg-type]
    return dirs


@pytest.fixture
def authority(tmp_path: Path) -> Dirs:
    return init(tmp_path / "certs")


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def identity(path: Path) -> tuple[str, Role]:
    found = read_identity(path.read_bytes())
    return found.user, found.role


def snapshot(dirs: Dirs) -> dict[Path, bytes]:
    return {path: path.read_bytes() for d in (dirs.tls, dirs.ca) for path in d.iterdir()}


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def extension(certificate: x509.Certificate, kind: type[E]) -> x509.Extension[E]:
    return certificate.extensions.get_extension_for_class(kind)


def key_usage(certificate: x509.Certificate) -> set[str]:
    usage = extension(certificate, x509.KeyUsage).value
    return {
        name
        for name in ("digital_signature", "key_encipherment", "key_cert_sign", "crl_sign")
        if getattr(usage, name)
    }


def extended_key_usage(certificate: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(extension(certificate, x509.ExtendedKeyUsage).value)


def alternative_names(certificate: x509.Certificate) -> list[x509.GeneralName]:
    return list(extension(certificate, x509.SubjectAlternativeName).value)


def common_name(certificate: x509.Certificate) -> str:
    (attribute,) = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert isinstance(attribute.value, str)
    return attribute.value


def public_der(owner: x509.Certificate | ec.EllipticCurvePrivateKey) -> bytes:
    return owner.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def assert_validity(
    certificate: x509.Certificate, before: datetime, after: datetime, length: timedelta
) -> None:
    """Starts 5 minutes before it was made (to the second) and lasts ``length`` more."""
    start = certificate.not_valid_before_utc
    assert before - SKEW - timedelta(seconds=1) <= start <= after - SKEW
    assert certificate.not_valid_after_utc - start == length + SKEW


# --- init_authority: files ---------------------------------------------------------------


def test_init_writes_the_ca_key_only_into_the_ca_directory(tmp_path: Path) -> None:
    dirs = Dirs(tmp_path / "new" / "tls", tmp_path / "new" / "ca")
    written = init_authority(dirs.tls, dirs.ca)
    assert written == dirs.written()
    assert names(dirs.ca) == sorted(CA_FILES)
    assert names(dirs.tls) == sorted(TLS_FILES)
    assert mode(dirs.tls) == mode(dirs.ca) == 0o700
    for path in written:
        assert mode(path) == (0o600 if path.suffix == ".key" else 0o644), path
    assert (dirs.tls / "ca.crt").read_bytes() == (dirs.ca / "ca.crt").read_bytes()


def test_init_refuses_one_directory_for_both(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="must not be the TLS directory"):
        init_authority(tmp_path / "tls", tmp_path / "tls" / ".." / "tls")
    assert list(tmp_path.iterdir()) == []


def test_init_records_the_server_and_admin_certificates(tmp_path: Path) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    dirs = init(tmp_path)
    after = datetime.now(UTC)
    server, admin = load(dirs.tls / "server.crt"), load(dirs.tls / "admin.crt")
    index = read_index(dirs.ca)
    assert [(entry.serial, entry.user, entry.role) for entry in index] == [
        (server.serial_number, "jobworker server", None),
        (admin.serial_number, "admin", Role.ADMIN),
    ]
    assert index[1].not_after == admin.not_valid_after_utc
    assert before <= index[1].issued_at <= after


def test_file_modes_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        strict = init(tmp_path / "strict")
    finally:
        os.umask(old)
    old = os.umask(0o000)
    try:
        loose = init(tmp_path / "loose")
    finally:
        os.umask(old)
    for path in strict.written() + loose.written():
        assert mode(path) == (0o600 if path.suffix == ".key" else 0o644), path
    for directory in (strict.tls, strict.ca, loose.tls, loose.ca):
        assert mode(directory) == 0o700


def test_init_leaves_the_mode_of_an_existing_directory(tmp_path: Path) -> None:
    tmp_path.chmod(0o750)
    init_authority(tmp_path, tmp_path / "ca")
    assert mode(tmp_path) == 0o750


def test_keys_are_unencrypted_pkcs8_p256_and_match_their_certificates(authority: Dirs) -> None:
    for directory, name in (
        (authority.ca, "ca"),
        (authority.tls, "server"),
        (authority.tls, "admin"),
    ):
        pem = (directory / f"{name}.key").read_bytes()
        assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
        key = load_key(directory / f"{name}.key")
        assert isinstance(key.curve, ec.SECP256R1)
        assert public_der(key) == public_der(load(directory / f"{name}.crt"))


def test_init_refuses_existing_files_before_writing_anything(tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "server.key").write_bytes(b"precious")
    with pytest.raises(CertificateFileExists) as raised:
        init(tmp_path)
    assert str(tmp_path / "tls" / "server.key") in str(raised.value)
    assert "--force" in str(raised.value)
    assert raised.value.paths == (tmp_path / "tls" / "server.key",)
    assert names(tmp_path) == ["tls"]
    assert names(tmp_path / "tls") == ["server.key"]
    assert (tmp_path / "tls" / "server.key").read_bytes() == b"precious"


def test_init_names_every_existing_file(authority: Dirs) -> None:
    with pytest.raises(CertificateFileExists) as raised:
        init_authority(authority.tls, authority.ca)
    assert raised.value.paths == tuple(authority.written())
    assert all(str(path) in str(raised.value) for path in authority.written())


@pytest.mark.parametrize("where", ["tls", "ca"])
def test_init_refuses_a_revocation_list_of_another_ca(authority: Dirs, where: str) -> None:
    # The server would refuse a list that its new CA did not sign.
    fresh = Dirs(authority.tls.parent / "tls2", authority.ca.parent / "ca2")
    getattr(fresh, where).mkdir()
    (getattr(fresh, where) / "crl.pem").write_bytes(b"old")
    with pytest.raises(CertificateFileExists, match=r"crl\.pem"):
        init_authority(fresh.tls, fresh.ca)


def test_init_refuses_a_dangling_symlink(tmp_path: Path) -> None:
    (tmp_path / "ca").mkdir()
    (tmp_path / "ca" / "ca.key").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CertificateFileExists, match=r"ca\.key"):
        init(tmp_path)
    assert not (tmp_path / "elsewhere").exists()


def test_init_with_force_replaces_everything(authority: Dirs) -> None:
    old = {path: path.read_bytes() for path in authority.written()}
    for directory in (authority.tls, authority.ca):
        (directory / "crl.pem").write_bytes(b"a list of the old CA")
    written = init_authority(authority.tls, authority.ca, force=True)
    assert written == authority.written()
    for path in written:
        assert path.read_bytes() != old[path], path
        assert mode(path) == (0o600 if path.suffix == ".key" else 0o644), path
    # Nothing staged is left behind, and the old CA's revocation lists are gone.
    assert names(authority.ca) == sorted(CA_FILES)
    assert names(authority.tls) == sorted(TLS_FILES)
    ca = load(authority.tls / "ca.crt")
    load(authority.tls / "server.crt").verify_directly_issued_by(ca)
    assert [entry.user for entry in read_index(authority.ca)] == ["jobworker server", "admin"]


def test_an_unwritable_directory_is_a_certificate_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(CertificateError, match="cannot write"):
        init_authority(tmp_path / "file", tmp_path / "ca")


def test_a_file_appearing_after_the_check_is_not_overwritten(tmp_path: Path) -> None:
    # The window between init_authority's check and its writes, made deterministic.
    (tmp_path / "b.key").write_bytes(b"precious")
    files = [(tmp_path / "a.crt", b"a"), (tmp_path / "b.key", b"b"), (tmp_path / "c.key", b"c")]
    with pytest.raises(CertificateFileExists, match=r"b\.key"):
        write_files(files, force=False)
    assert [path.name for path in tmp_path.iterdir()] == ["b.key"]
    assert (tmp_path / "b.key").read_bytes() == b"precious"


def test_a_failed_replacement_names_the_file_and_leaves_no_temporary(authority: Dirs) -> None:
    (authority.tls / "alice.crt").mkdir()
    with pytest.raises(
        CertificateError, match=rf"cannot write {authority.tls / 'alice.crt'}: Is a"
    ):
        issue_client(authority.tls, authority.ca, "alice", Role.READER, force=True)
    assert names(authority.tls) == sorted([*TLS_FILES, "alice.crt"])
    assert names(authority.ca) == sorted(CA_FILES)


# --- init_authority: contents ------------------------------------------------------------


def test_ca_certificate(tmp_path: Path) -> None:
    before = datetime.now(UTC)
    dirs = init(tmp_path)
    after = datetime.now(UTC)
    ca = load(dirs.ca / "ca.crt")
    ca.verify_directly_issued_by(ca)
    assert common_name(ca) == "jobworker CA"
    assert ca.issuer == ca.subject
    constraints = extension(ca, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value == x509.BasicConstraints(ca=True, path_length=0)
    assert extension(ca, x509.KeyUsage).critical
    assert key_usage(ca) == {"key_cert_sign", "crl_sign"}
    assert extension(ca, x509.SubjectKeyIdentifier).value == (
        x509.SubjectKeyIdentifier.from_public_key(ca.public_key())
    )
    assert isinstance(ca.signature_hash_algorithm, hashes.SHA256)
    assert_validity(ca, before, after, timedelta(days=5 * 365))


def test_server_certificate(tmp_path: Path) -> None:
    before = datetime.now(UTC)
    dirs = init(tmp_path, extra_server_names=["10.1.2.3", "Jobs.Example.COM", "fd00::7"])
    after = datetime.now(UTC)
    ca, server = load(dirs.tls / "ca.crt"), load(dirs.tls / "server.crt")
    server.verify_directly_issued_by(ca)
    assert common_name(server) == "jobworker server"
    names = alternative_names(server)
    assert names[:3] == [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    assert x509.DNSName(socket.gethostname().lower()) in names
    assert names[-3:] == [
        x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
        x509.DNSName("jobs.example.com"),
        x509.IPAddress(ipaddress.ip_address("fd00::7")),
    ]
    assert len(set(names)) == len(names)
    assert extended_key_usage(server) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert_leaf_extensions(server, ca)
    assert_validity(server, before, after, timedelta(days=365))


def test_extra_server_names_already_present_are_not_repeated(tmp_path: Path) -> None:
    plain = init(tmp_path / "plain")
    duplicates = ["localhost", "127.0.0.1", "0:0::1", "LocalHost", socket.gethostname()]
    extra = init(tmp_path / "extra", extra_server_names=duplicates)
    assert alternative_names(load(extra.tls / "server.crt")) == alternative_names(
        load(plain.tls / "server.crt")
    )


def test_admin_certificate(tmp_path: Path) -> None:
    before = datetime.now(UTC)
    dirs = init(tmp_path)
    after = datetime.now(UTC)
    ca, admin = load(dirs.tls / "ca.crt"), load(dirs.tls / "admin.crt")
    admin.verify_directly_issued_by(ca)
    assert common_name(admin) == "admin"
    assert alternative_names(admin) == [x509.UniformResourceIdentifier("urn:jobworker:role:admin")]
    assert extended_key_usage(admin) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert_leaf_extensions(admin, ca)
    assert_validity(admin, before, after, timedelta(days=365))
    assert read_identity((dirs.tls / "admin.crt").read_bytes()) == Identity(
        "admin", Role.ADMIN, admin.serial_number
    )


def assert_leaf_extensions(leaf: x509.Certificate, ca: x509.Certificate) -> None:
    assert extension(leaf, x509.KeyUsage).critical
    assert key_usage(leaf) == {"digital_signature"}
    constraints = extension(leaf, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value == x509.BasicConstraints(ca=False, path_length=None)
    authority_key = extension(leaf, x509.AuthorityKeyIdentifier).value
    assert authority_key.key_identifier == extension(ca, x509.SubjectKeyIdentifier).value.digest
    assert extension(leaf, x509.SubjectKeyIdentifier).value == (
        x509.SubjectKeyIdentifier.from_public_key(leaf.public_key())
    )
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA256)
    assert leaf.serial_number != ca.serial_number


# --- server names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        ("jobs example.com", "white space"),
        ("jobs.example.com\n", "white space"),
        ("jobs.*.example.com", "wildcard"),
        ("*", "wildcard"),
        ("*jobs.example.com", "wildcard"),
        ("*.*.example.com", "wildcard"),
        ("*.", "labels"),
        ("jobs..example.com", "labels"),
        ("jobs.example.com.", "labels"),
        ("-jobs.example.com", "labels"),
        ("jobs_1.example.com", "labels"),
        ("10.0.0.0/8", "labels"),
        ("a" * 64 + ".example.com", "labels"),
        ("a." * 127, "longer than 253"),
        ("jöbs.example.com", "ASCII"),
    ],
)
def test_invalid_server_names_are_refused_before_anything_is_written(
    tmp_path: Path, name: str, problem: str
) -> None:
    with pytest.raises(InvalidName, match=problem) as raised:
        init(tmp_path, extra_server_names=["10.0.0.1", name])
    assert isinstance(raised.value, ValueError)
    assert repr(name) in str(raised.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("*.jobs.example.com", x509.DNSName("*.jobs.example.com")),
        ("worker-7", x509.DNSName("worker-7")),
        ("xn--jbs-sna.example.com", x509.DNSName("xn--jbs-sna.example.com")),
        ("192.168.10.20", x509.IPAddress(ipaddress.ip_address("192.168.10.20"))),
        ("2001:db8::1", x509.IPAddress(ipaddress.ip_address("2001:db8::1"))),
    ],
)
def test_valid_server_names(tmp_path: Path, name: str, expected: x509.GeneralName) -> None:
    dirs = init(tmp_path, extra_server_names=[name])
    assert alternative_names(load(dirs.tls / "server.crt"))[-1] == expected


# --- issue_client ------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_issue_client_for_each_role(authority: Dirs, role: Role) -> None:
    before = datetime.now(UTC)
    written = issue_client(authority.tls, authority.ca, "alice", role)
    after = datetime.now(UTC)
    assert written == [authority.tls / "alice.crt", authority.tls / "alice.key"]
    assert mode(authority.tls / "alice.crt") == 0o644
    assert mode(authority.tls / "alice.key") == 0o600
    assert names(authority.ca) == sorted(CA_FILES)
    ca, client = load(authority.tls / "ca.crt"), load(authority.tls / "alice.crt")
    client.verify_directly_issued_by(ca)
    assert common_name(client) == "alice"
    assert alternative_names(client) == [
        x509.UniformResourceIdentifier(f"urn:jobworker:role:{role.value}")
    ]
    assert extended_key_usage(client) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert_leaf_extensions(client, ca)
    assert_validity(client, before, after, timedelta(days=365))
    assert public_der(load_key(authority.tls / "alice.key")) == public_der(client)
    assert read_identity((authority.tls / "alice.crt").read_bytes()) == Identity(
        "alice", role, client.serial_number
    )


def test_issue_client_records_each_certificate_in_the_index(authority: Dirs) -> None:
    issue_client(authority.tls, authority.ca, "bob", Role.READER)
    first = load(authority.tls / "bob.crt")
    issue_client(authority.tls, authority.ca, "bob", Role.WRITER, force=True)
    second = load(authority.tls / "bob.crt")
    index = read_index(authority.ca)
    assert [(entry.serial, entry.user, entry.role) for entry in index[2:]] == [
        (first.serial_number, "bob", Role.READER),
        (second.serial_number, "bob", Role.WRITER),
    ]
    assert index[3].not_after == second.not_valid_after_utc
    assert mode(authority.ca / "index.json") == 0o644
    serial = json.loads((authority.ca / "index.json").read_text())["certificates"][3]["serial"]
    assert serial == f"{second.serial_number:x}"


def test_an_unreadable_index_is_refused_before_anything_is_issued(authority: Dirs) -> None:
    (authority.ca / "index.json").write_text('{"version": 1, "certificates": [{"serial": "x"}]}')
    with pytest.raises(CertificateError, match=r"index\.json is not a valid index"):
        issue_client(authority.tls, authority.ca, "bob", Role.READER)
    assert not (authority.tls / "bob.crt").exists()


def test_index_entries_describe_themselves(authority: Dirs) -> None:
    entry = IssuedCertificate.of(load(authority.tls / "admin.crt"), Role.ADMIN, datetime.now(UTC))
    assert entry.describe().startswith(f"{entry.serial:x} admin (admin, valid until 20")
    assert entry.describe().endswith("Z)")


def test_issue_client_refuses_existing_files(authority: Dirs) -> None:
    (authority.tls / "bob.key").write_bytes(b"precious")
    with pytest.raises(CertificateFileExists, match=r"bob\.key") as raised:
        issue_client(authority.tls, authority.ca, "bob", Role.READER)
    assert "--force" in str(raised.value)
    assert not (authority.tls / "bob.crt").exists()
    assert (authority.tls / "bob.key").read_bytes() == b"precious"
    assert len(read_index(authority.ca)) == 2


def test_issue_client_with_force_replaces_the_key(authority: Dirs) -> None:
    tls = authority.tls
    issue_client(tls, authority.ca, "bob", Role.READER)
    old_key = (tls / "bob.key").read_bytes()
    issue_client(tls, authority.ca, "bob", Role.WRITER, force=True)
    assert (tls / "bob.key").read_bytes() != old_key
    assert mode(tls / "bob.key") == 0o600
    assert identity(tls / "bob.crt") == ("bob", Role.WRITER)
    assert public_der(load_key(tls / "bob.key")) == public_der(load(tls / "bob.crt"))


def test_reissuing_admin_needs_force(authority: Dirs) -> None:
    with pytest.raises(CertificateFileExists, match=r"admin\.crt"):
        issue_client(authority.tls, authority.ca, "admin", Role.ADMIN)
    issue_client(authority.tls, authority.ca, "admin", Role.READER, force=True)
    assert identity(authority.tls / "admin.crt") == ("admin", Role.READER)


@pytest.mark.parametrize(
    "user",
    ["", ".hidden", "-rf", "a/b", "../up", "a b", "tab\t", "line\n", "x" * 65, "émile", "a:b"],
)
def test_invalid_user_names(authority: Dirs, user: str) -> None:
    before = snapshot(authority)
    with pytest.raises(InvalidName, match="invalid user name") as raised:
        issue_client(authority.tls, authority.ca, user, Role.READER)
    assert isinstance(raised.value, ValueError)
    assert snapshot(authority) == before


@pytest.mark.parametrize("user", ["ca", "server"])
def test_reserved_user_names(authority: Dirs, user: str) -> None:
    before = snapshot(authority)
    with pytest.raises(InvalidName, match="reserved"):
        issue_client(authority.tls, authority.ca, user, Role.ADMIN, force=True)
    assert snapshot(authority) == before


@pytest.mark.parametrize("user", ["a", "x" * 64, "alice.smith_2-b", "_svc", "Bob", "7"])
def test_valid_user_names(authority: Dirs, user: str) -> None:
    issue_client(authority.tls, authority.ca, user, Role.READER)
    assert identity(authority.tls / f"{user}.crt") == (user, Role.READER)


def test_issue_client_without_a_ca(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match=r"ca\.crt: No such file") as raised:
        issue_client(tmp_path, tmp_path / "ca", "alice", Role.READER)
    assert f"jobworker certs init --ca-dir {tmp_path / 'ca'}" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_issue_client_does_not_sign_with_a_key_in_the_tls_directory(authority: Dirs) -> None:
    (authority.ca / "ca.key").rename(authority.tls / "ca.key")
    with pytest.raises(CertificateError, match=rf"{authority.ca / 'ca.key'}: No such file"):
        issue_client(authority.tls, authority.ca, "alice", Role.READER)
    assert not (authority.tls / "alice.crt").exists()


@pytest.mark.parametrize(
    ("file", "content", "problem"),
    [
        ("ca.crt", b"not a certificate", r"ca\.crt is not a CA certificate"),
        ("ca.crt", b"", r"ca\.crt is not a CA certificate"),
        ("ca.key", b"-----BEGIN PRIVATE KEY-----\ngarbage\n", r"ca\.key is not an unencrypted"),
    ],
)
def test_issue_client_with_a_corrupt_ca(
    authority: Dirs, file: str, content: bytes, problem: str
) -> None:
    (authority.ca / file).write_bytes(content)
    with pytest.raises(CertificateError, match=problem):
        issue_client(authority.tls, authority.ca, "alice", Role.READER)
    assert not (authority.tls / "alice.crt").exists()
    assert not (authority.tls / "alice.key").exists()


def test_issue_client_with_an_encrypted_ca_key(authority: Dirs) -> None:
    key = load_key(authority.ca / "ca.key")
    (authority.ca / "ca.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(CertificateError, match=r"ca\.key is not an unencrypted"):
        issue_client(authority.tls, authority.ca, "alice", Role.READER)


def test_issue_client_with_a_leaf_as_the_ca(authority: Dirs) -> None:
    shutil.copy(authority.tls / "server.crt", authority.ca / "ca.crt")
    shutil.copy(authority.tls / "server.key", authority.ca / "ca.key")
    with pytest.raises(CertificateError, match=r"ca\.crt is not a CA certificate"):
        issue_client(authority.tls, authority.ca, "alice", Role.READER)


def test_issue_client_with_the_key_of_another_ca(authority: Dirs, tmp_path: Path) -> None:
    other = init(tmp_path / "other")
    shutil.copy(other.ca / "ca.key", authority.ca / "ca.key")
    with pytest.raises(CertificateError, match=r"ca\.key is not the key of"):
        issue_client(authority.tls, authority.ca, "alice", Role.READER)


def test_issue_client_with_an_expired_ca(tmp_path: Path) -> None:
    write_ca(tmp_path, not_after=datetime.now(UTC) - timedelta(days=1))
    with pytest.raises(CertificateError, match="expired on"):
        issue_client(tmp_path, tmp_path, "alice", Role.READER)
    assert not (tmp_path / "alice.crt").exists()


def test_a_client_certificate_ends_with_its_ca(tmp_path: Path) -> None:
    ca = write_ca(tmp_path, not_after=datetime.now(UTC) + timedelta(days=30))
    issue_client(tmp_path, tmp_path, "alice", Role.READER)
    assert load(tmp_path / "alice.crt").not_valid_after_utc == ca.not_valid_after_utc


def write_ca(directory: Path, *, not_after: datetime) -> x509.Certificate:
    """A CA like init_authority's, but ending at ``not_after``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - timedelta(days=365))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / "ca.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "ca.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certificate


# --- read_identity -----------------------------------------------------------------------


def client_pem(
    *,
    common_names: Sequence[str] = ("carol",),
    uris: Sequence[str] = (f"{ROLE_URI_PREFIX}writer",),
    usages: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.CLIENT_AUTH,),
) -> bytes:
    """A self-signed certificate with the given identity fields; read_identity checks no issuer."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name) for name in common_names])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone")]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri) for uri in uris]),
            critical=False,
        )
    if usages is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_read_identity_of_a_well_formed_certificate() -> None:
    pem = client_pem()
    assert read_identity(pem) == Identity(
        "carol", Role.WRITER, x509.load_pem_x509_certificate(pem).serial_number
    )


def test_read_identity_ignores_other_uris_and_usages() -> None:
    pem = client_pem(
        uris=["https://example.com/carol", f"{ROLE_URI_PREFIX}reader"],
        usages=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    assert read_identity(pem).role == Role.READER


@pytest.mark.parametrize(
    ("pem", "problem"),
    [
        (b"", "no client certificate"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a valid PEM"),
        (b"hello", "not a valid PEM"),
        (client_pem(usages=None), "no extended key usage"),
        (client_pem(usages=[ExtendedKeyUsageOID.SERVER_AUTH]), "lacks clientAuth"),
        (client_pem(common_names=()), "no common name"),
        (client_pem(common_names=("carol", "dave")), "several common names"),
        (client_pem(common_names=("../carol",)), "not a valid user name"),
        (client_pem(uris=()), "no role"),
        (client_pem(uris=["https://example.com/carol"]), "no role"),
        (
            client_pem(uris=[f"{ROLE_URI_PREFIX}reader", f"{ROLE_URI_PREFIX}admin"]),
            "several roles: reader, admin",
        ),
        (client_pem(uris=[f"{ROLE_URI_PREFIX}root"]), "unknown role 'root'"),
        (client_pem(uris=[f"{ROLE_URI_PREFIX}"]), "unknown role ''"),
    ],
)
def test_read_identity_refuses(pem: bytes, problem: str) -> None:
    with pytest.raises(CertificateError, match=problem):
        read_identity(pem)


def test_read_identity_refuses_the_server_certificate(authority: Dirs) -> None:
    with pytest.raises(CertificateError, match="lacks clientAuth"):
        read_identity((authority.tls / "server.crt").read_bytes())


def test_read_identity_refuses_the_ca_certificate(authority: Dirs) -> None:
    with pytest.raises(CertificateError, match="no extended key usage"):
        read_identity((authority.tls / "ca.crt").read_bytes())


# --- end to end: openssl and a real TLS handshake ----------------------------------------


def openssl_verify(directory: Path, purpose: str, certificate: str, *extra: str) -> str:
    command = ["openssl", "verify", "-x509_strict", "-CAfile", "ca.crt", "-purpose", purpose]
    result = subprocess.run(
        [*command, *extra, certificate],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    assert (result.returncode == 0) == (output.strip() == f"{certificate}: OK"), output
    return output.strip()


def test_openssl_accepts_each_certificate_for_its_purpose_only(authority: Dirs) -> None:
    issue_client(authority.tls, authority.ca, "alice", Role.READER)
    tls = authority.tls
    assert openssl_verify(tls, "sslclient", "admin.crt") == "admin.crt: OK"
    assert openssl_verify(tls, "sslclient", "alice.crt") == "alice.crt: OK"
    assert openssl_verify(tls, "sslserver", "server.crt") == "server.crt: OK"
    for host in ("-verify_hostname", "localhost"), ("-verify_ip", "::1"):
        assert openssl_verify(tls, "sslserver", "server.crt", *host) == "server.crt: OK"
    assert "unsuitable certificate purpose" in openssl_verify(tls, "sslclient", "server.crt")
    assert "unsuitable certificate purpose" in openssl_verify(tls, "sslserver", "admin.crt")


def test_mutual_tls_handshake_identifies_the_client(authority: Dirs) -> None:
    with handshake(authority.tls, client="admin") as peer_pem:
        assert read_identity(peer_pem).user == "admin"


def test_mutual_tls_refuses_the_server_certificate_as_a_client(authority: Dirs) -> None:
    with (
        pytest.raises(ssl.SSLError, match="unsuitable certificate purpose"),
        handshake(authority.tls, client="server"),
    ):
        pass


@contextmanager
def handshake(directory: Path, *, client: str) -> Iterator[bytes]:
    """Connect a TLS client presenting ``<client>.crt`` to a server requiring one.

    Yields the client certificate as the server saw it; raises the server's error if the
    server refused the client.
    """
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(directory / "server.crt", directory / "server.key")
    server_context.load_verify_locations(directory / "ca.crt")
    server_context.verify_mode = ssl.CERT_REQUIRED
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.load_verify_locations(directory / "ca.crt")
    client_context.load_cert_chain(directory / f"{client}.crt", directory / f"{client}.key")

    def serve(sock: socket.socket) -> bytes:
        with server_context.wrap_socket(sock, server_side=True) as tls:
            peer = tls.getpeercert(binary_form=True)
            assert peer is not None
            tls.sendall(b"ok")
            return ssl.DER_cert_to_PEM_cert(peer).encode()

    server_socket, client_socket = socket.socketpair()
    server_socket.settimeout(10)
    client_socket.settimeout(10)
    with ThreadPoolExecutor(max_workers=1) as pool, server_socket, client_socket:
        served = pool.submit(serve, server_socket)
        with client_context.wrap_socket(client_socket, server_hostname="localhost") as tls:
            # With TLS 1.3 the server checks the client's certificate after the client's
            # side of the handshake is done: wait for its verdict. If it refused, its own
            # error (from served.result()) says why.
            with suppress(OSError):
                tls.recv(2)
            peer_pem = served.result()
        yield peer_pem
