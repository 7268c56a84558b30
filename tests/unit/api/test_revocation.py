"""revoke and the revocation list: what is revoked, the CRL written, and who may have signed it.

Lists are checked with cryptography and with ``openssl verify -crl_check``, which must agree
that a revoked certificate is revoked.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from jobworker.api._identity import parse_serial
from jobworker.api._revocation import read_revocation_list, revoked_serials
from jobworker.api.authority import init_authority, issue_client, revoke
from jobworker.api.errors import (
    CertificateError,
    RevocationListError,
    ServerConfigError,
    UnknownCertificate,
)
from jobworker.api.roles import Role
from jobworker.api.server import TlsFiles


class Dirs:
    """A deployment made by init_authority, with bob (two certificates) and carol."""

    def __init__(self, root: Path) -> None:
        self.tls, self.ca = root / "tls", root / "ca"
        init_authority(self.tls, self.ca)
        issue_client(self.tls, self.ca, "bob", Role.READER)
        self.bob_reader = self.serial("bob")
        issue_client(self.tls, self.ca, "bob", Role.WRITER, force=True)
        self.bob_writer = self.serial("bob")
        issue_client(self.tls, self.ca, "carol", Role.WRITER)
        self.carol = self.serial("carol")

    def serial(self, user: str) -> int:
        return self.certificate(user).serial_number

    def certificate(self, name: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate((self.tls / f"{name}.crt").read_bytes())

    def crl(self, directory: Path | None = None) -> x509.CertificateRevocationList:
        path = (directory or self.ca) / "crl.pem"
        return x509.load_pem_x509_crl(path.read_bytes())

    def revoked(self) -> frozenset[int]:
        ca = self.certificate("ca")
        return revoked_serials(read_revocation_list(self.tls / "crl.pem", [ca]))


@pytest.fixture
def dirs(tmp_path: Path) -> Dirs:
    return Dirs(tmp_path)


def number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


# --- revoke ------------------------------------------------------------------------------


def test_revoking_a_user_revokes_every_certificate_of_theirs(dirs: Dirs) -> None:
    done = revoke(dirs.tls, dirs.ca, "bob")
    assert [entry.serial for entry in done.revoked] == [dirs.bob_reader, dirs.bob_writer]
    assert {entry.user for entry in done.revoked} == {"bob"}
    assert done.written == [dirs.ca / "crl.pem", dirs.tls / "crl.pem"]
    assert dirs.revoked() == {dirs.bob_reader, dirs.bob_writer}
    assert (dirs.tls / "crl.pem").read_bytes() == (dirs.ca / "crl.pem").read_bytes()
    assert (dirs.tls / "crl.pem").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("spelling", ["plain", "upper", "colons"])
def test_revoking_a_serial_revokes_exactly_that_certificate(dirs: Dirs, spelling: str) -> None:
    digits = f"{dirs.bob_reader:x}"
    if len(digits) % 2:
        digits = "0" + digits  # openssl prints whole bytes
    written = {
        "plain": digits,
        "upper": digits.upper(),
        "colons": ":".join(digits[i : i + 2] for i in range(0, len(digits), 2)).upper(),
    }[spelling]
    done = revoke(dirs.tls, dirs.ca, written)
    assert [entry.serial for entry in done.revoked] == [dirs.bob_reader]
    assert dirs.revoked() == {dirs.bob_reader}


def test_the_serial_openssl_prints_is_understood(dirs: Dirs) -> None:
    printed = subprocess.run(
        ["openssl", "x509", "-noout", "-serial", "-in", str(dirs.tls / "carol.crt")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert parse_serial(printed.strip().removeprefix("serial=")) == dirs.carol


def test_revoking_a_name_again_revokes_only_what_is_new(dirs: Dirs) -> None:
    revoke(dirs.tls, dirs.ca, f"{dirs.bob_reader:x}")
    done = revoke(dirs.tls, dirs.ca, "bob")
    assert [entry.serial for entry in done.revoked] == [dirs.bob_writer]
    with pytest.raises(CertificateError, match="every certificate of bob is revoked already"):
        revoke(dirs.tls, dirs.ca, "bob")
    with pytest.raises(CertificateError, match="is revoked already"):
        revoke(dirs.tls, dirs.ca, f"{dirs.bob_writer:x}")


def test_each_list_keeps_the_earlier_entries_and_a_higher_number(dirs: Dirs) -> None:
    revoke(dirs.tls, dirs.ca, "bob")
    first = dirs.crl()
    revoke(dirs.tls, dirs.ca, "carol")
    second = dirs.crl()
    assert (number(first), number(second)) == (1, 2)
    kept = {entry.serial_number: entry.revocation_date_utc for entry in first}
    assert {
        entry.serial_number: entry.revocation_date_utc
        for entry in second
        if entry.serial_number in kept
    } == kept
    assert {entry.serial_number for entry in second} == {
        dirs.bob_reader,
        dirs.bob_writer,
        dirs.carol,
    }
    ca = dirs.certificate("ca")
    assert second.next_update_utc == ca.not_valid_after_utc
    assert second.issuer == ca.subject
    assert second.is_signature_valid(ca.public_key())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("mallory", r"no certificate in .*index\.json was issued to 'mallory'$"),
        ("abc123", "was issued to 'abc123' or has serial abc123"),
        ("server", "was issued to 'server'"),
    ],
)
def test_an_unknown_name_or_serial_changes_nothing(dirs: Dirs, which: str, message: str) -> None:
    revoke(dirs.tls, dirs.ca, "carol")
    before = (dirs.ca / "crl.pem").read_bytes(), (dirs.tls / "crl.pem").read_bytes()
    with pytest.raises(UnknownCertificate, match=message):
        revoke(dirs.tls, dirs.ca, which)
    assert ((dirs.ca / "crl.pem").read_bytes(), (dirs.tls / "crl.pem").read_bytes()) == before


def test_nothing_is_written_before_something_is_revoked(dirs: Dirs) -> None:
    with pytest.raises(UnknownCertificate):
        revoke(dirs.tls, dirs.ca, "mallory")
    assert not (dirs.ca / "crl.pem").exists()
    assert not (dirs.tls / "crl.pem").exists()


def test_the_servers_certificate_is_not_revoked(dirs: Dirs) -> None:
    serial = f"{dirs.serial('server'):x}"
    with pytest.raises(CertificateError, match="is the server's; only client certificates"):
        revoke(dirs.tls, dirs.ca, serial)
    assert not (dirs.ca / "crl.pem").exists()


def test_an_unwritable_tls_directory_changes_nothing(dirs: Dirs, tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="cannot write"):
        revoke(tmp_path / "missing", dirs.ca, "bob")
    assert not (dirs.ca / "crl.pem").exists()
    assert sorted(path.name for path in dirs.ca.iterdir()) == ["ca.crt", "ca.key", "index.json"]


def test_revoke_refuses_a_list_in_the_ca_directory_it_did_not_sign(
    dirs: Dirs, tmp_path: Path
) -> None:
    other = Dirs(tmp_path / "other")
    revoke(other.tls, other.ca, "bob")
    (dirs.ca / "crl.pem").write_bytes((other.ca / "crl.pem").read_bytes())
    with pytest.raises(RevocationListError, match="is not signed by the CA"):
        revoke(dirs.tls, dirs.ca, "carol")
    assert not (dirs.tls / "crl.pem").exists()


def test_openssl_agrees_the_revoked_certificates_are_revoked(dirs: Dirs) -> None:
    revoke(dirs.tls, dirs.ca, "carol")
    for name, verdict in (("carol", "certificate revoked"), ("admin", "admin.crt: OK")):
        result = subprocess.run(
            ["openssl", "verify", "-crl_check", "-CAfile", "ca.crt", "-CRLfile", "crl.pem",
             f"{name}.crt"],
            cwd=dirs.tls, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert verdict in result.stdout + result.stderr


# --- reading a list: only one the CA signed ----------------------------------------------


def foreign_list(issuer: x509.Name, serials: list[int]) -> bytes:
    """A list naming our CA as its issuer, but signed with some other key."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer)
        .last_update(now)
        .next_update(now + timedelta(days=1))
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_a_list_signed_by_another_key_is_refused(dirs: Dirs) -> None:
    ca = dirs.certificate("ca")
    (dirs.tls / "crl.pem").write_bytes(foreign_list(ca.subject, [dirs.carol]))
    with pytest.raises(RevocationListError, match=r"crl\.pem is not signed by the CA"):
        read_revocation_list(dirs.tls / "crl.pem", [ca])


def test_a_list_of_another_ca_is_refused(dirs: Dirs, tmp_path: Path) -> None:
    other = Dirs(tmp_path / "other")
    revoke(other.tls, other.ca, "bob")
    with pytest.raises(RevocationListError, match="is not signed by the CA"):
        read_revocation_list(other.tls / "crl.pem", [dirs.certificate("ca")])


@pytest.mark.parametrize("content", [b"", b"garbage", b"-----BEGIN X509 CRL-----\nAAAA\n"])
def test_a_malformed_list_is_refused(dirs: Dirs, content: bytes) -> None:
    (dirs.tls / "crl.pem").write_bytes(content)
    with pytest.raises(RevocationListError, match=r"is not a PEM X\.509 CRL"):
        read_revocation_list(dirs.tls / "crl.pem", [dirs.certificate("ca")])


def test_no_file_is_no_list_but_an_unreadable_one_is_an_error(dirs: Dirs) -> None:
    ca = dirs.certificate("ca")
    assert read_revocation_list(dirs.tls / "crl.pem", [ca]) is None
    assert revoked_serials(None) == frozenset()
    (dirs.tls / "crl.pem").mkdir()
    with pytest.raises(RevocationListError, match=r"cannot read the revocation list .*: Is a dir"):
        read_revocation_list(dirs.tls / "crl.pem", [ca])


def test_the_server_reads_the_list_of_its_tls_directory(dirs: Dirs) -> None:
    files = TlsFiles.in_directory(dirs.tls)
    authorities = files.authorities()
    assert files.revoked(authorities) is None
    revoke(dirs.tls, dirs.ca, "carol")
    assert files.revoked(authorities) == frozenset({dirs.carol})
    (dirs.tls / "crl.pem").write_bytes(foreign_list(authorities[0].subject, []))
    with pytest.raises(ServerConfigError, match="is not signed by the CA"):
        files.revoked(authorities)
