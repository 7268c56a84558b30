"""Resolving USER[:GROUP] from this machine's passwd and group databases.

Uses the accounts every Debian-like system has: root (0) and nobody (65534,
group nogroup); 4242 stands for a uid that has no passwd entry.
"""

from __future__ import annotations

import os
import pwd

import pytest

from jobworker.isolation.credentials import Credentials
from jobworker.isolation.errors import InvalidSpec

UNKNOWN_UID = 4242


@pytest.fixture(autouse=True)
def _the_accounts_exist() -> None:
    assert pwd.getpwnam("nobody").pw_uid == 65534, "this host's passwd lacks nobody (65534)"
    with pytest.raises(KeyError):
        pwd.getpwuid(UNKNOWN_UID)


def test_a_name_gets_its_uid_primary_group_groups_and_home() -> None:
    nobody = Credentials.resolve("nobody")
    assert nobody == Credentials(
        name="nobody",
        uid=65534,
        gid=65534,
        groups=tuple(os.getgrouplist("nobody", 65534)),
        home="/nonexistent",
    )
    assert not nobody.is_root


def test_a_number_with_a_passwd_entry_is_that_user() -> None:
    assert Credentials.resolve("65534") == Credentials.resolve("nobody")
    assert Credentials.resolve("0").name == "root"
    assert Credentials.resolve("0").is_root


def test_leading_zeros_do_not_count_towards_an_ids_length() -> None:
    assert Credentials.resolve("nobody:" + "0" * 5000 + "65534").gid == 65534


def test_a_group_can_be_given_by_name_or_number() -> None:
    assert Credentials.resolve("nobody:root").gid == 0
    assert Credentials.resolve("nobody:0").gid == 0
    assert Credentials.resolve("root:nogroup").gid == 65534
    assert Credentials.resolve("root:nogroup").is_root


def test_a_number_without_a_passwd_entry_needs_its_group() -> None:
    with pytest.raises(
        InvalidSpec, match=f"uid {UNKNOWN_UID} has no passwd entry.*{UNKNOWN_UID}:GID"
    ):
        Credentials.resolve(str(UNKNOWN_UID))
    assert Credentials.resolve(f"{UNKNOWN_UID}:{UNKNOWN_UID}") == Credentials(
        name=str(UNKNOWN_UID), uid=UNKNOWN_UID, gid=UNKNOWN_UID, groups=(UNKNOWN_UID,), home="/"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not USER or USER:GROUP"),
        (":root", "is not USER or USER:GROUP"),
        ("nobody:", "is not USER or USER:GROUP"),
        ("no-such-user-here", "no such user: no-such-user-here"),
        ("nobody:no-such-group-here", "no such group: no-such-group-here"),
        ("4294967295:0", "uid 4294967295 is out of range"),
        ("\u0661\u0662:0", "no such user: \u0661\u0662"),  # digits, but not ASCII ones
        ("nobody:99999999999", "gid 99999999999 is out of range"),
        ("nobody:" + "9" * 4300, "gid 9999.* is out of range"),  # int() refuses 4,300 digits
        ("9" * 5000 + ":0", "uid 9999.* is out of range"),
        ("nobody:" + "0" * 5000 + "1x", "no such group"),
        ("no\0body", "is not USER or USER:GROUP"),  # the C library would cut it at the NUL
        ("nobody:no\0group", "is not USER or USER:GROUP"),
    ],
)
def test_bad_users_are_refused_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message) as caught:
        Credentials.resolve(text)
    assert caught.value.field == "user"
