"""find_private_key and the server's refusal: a CA key among the server's files is found by
what it is, whatever its name; nothing else in the directory disturbs the scan."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from jobworker.api._keyscan import find_private_key
from jobworker.api.authority import init_authority
from jobworker.api.errors import CaKeyExposed
from jobworker.api.server import TlsFiles


@pytest.fixture
def tls(tmp_path: Path) -> Path:
    init_authority(tmp_path / "tls", tmp_path / "ca")
    return tmp_path / "tls"


def ca_of(tls: Path) -> list[x509.Certificate]:
    return [x509.load_pem_x509_certificate((tls / "ca.crt").read_bytes())]


def test_a_tls_directory_as_init_leaves_it_has_no_ca_key(tls: Path) -> None:
    assert find_private_key([tls], ca_of(tls)) is None
    TlsFiles.in_directory(tls).refuse_exposed_ca_key(ca_of(tls))


@pytest.mark.parametrize("name", ["ca.key", "backup.pem", "server.crt.old", ".hidden"])
def test_the_ca_key_is_found_whatever_its_name(tls: Path, name: str) -> None:
    shutil.copy(tls.parent / "ca" / "ca.key", tls / name)
    assert find_private_key([tls], ca_of(tls)) == tls / name
    with pytest.raises(CaKeyExposed) as raised:
        TlsFiles.in_directory(tls).refuse_exposed_ca_key(ca_of(tls))
    assert raised.value.path == tls / name
    assert str(raised.value) == (
        f"the CA's private key {tls / name} is in the server's TLS directory, where jobs "
        "running as root could read it and issue themselves certificates; move it to a "
        "directory of its own"
    )


def test_the_ca_key_is_found_in_any_form(tls: Path) -> None:
    key = serialization.load_pem_private_key((tls.parent / "ca" / "ca.key").read_bytes(), None)
    forms = {
        "traditional.pem": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
        "bundle.pem": (tls / "server.crt").read_bytes()
        + (tls / "server.key").read_bytes()
        + (tls.parent / "ca" / "ca.key").read_bytes(),
        "ca.der": key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    }
    for name, data in forms.items():
        (tls / name).write_bytes(data)
        assert find_private_key([tls], ca_of(tls)) == tls / name, name
        (tls / name).unlink()


def test_a_symlink_to_the_key_exposes_it_too(tls: Path) -> None:
    (tls / "ca.key").symlink_to(tls.parent / "ca" / "ca.key")
    assert find_private_key([tls], ca_of(tls)) == tls / "ca.key"


def test_every_directory_of_the_servers_files_is_searched(tls: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    shutil.move(tls / "server.key", keys / "server.key")
    shutil.copy(tls.parent / "ca" / "ca.key", keys / "ca.key")
    files = TlsFiles(tls / "server.crt", keys / "server.key", tls / "ca.crt")
    with pytest.raises(CaKeyExposed, match=str(keys / "ca.key")):
        files.refuse_exposed_ca_key(ca_of(tls))


def test_other_files_are_skipped_quietly(tls: Path) -> None:
    # Keys of other CAs, encrypted keys, garbage, big files, FIFOs,
    # subdirectories and dangling links are none of the scan's business.
    other = tls.parent / "other"
    init_authority(other / "tls", other / "ca")
    shutil.copy(other / "ca" / "ca.key", tls / "other-ca.key")
    key = serialization.load_pem_private_key((tls.parent / "ca" / "ca.key").read_bytes(), None)
    (tls / "encrypted.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    (tls / "garbage.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n")
    (tls / "big.log").write_bytes(
        b"x" * (64 * 1024 + 1) + (tls.parent / "ca" / "ca.key").read_bytes()
    )
    os.mkfifo(tls / "fifo")
    (tls / "subdir").mkdir()
    shutil.copy(tls.parent / "ca" / "ca.key", tls / "subdir" / "ca.key")
    (tls / "dangling").symlink_to(tls / "nowhere")
    assert find_private_key([tls, tls.parent / "missing"], ca_of(tls)) is None
