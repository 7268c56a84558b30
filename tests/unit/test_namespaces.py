"""namespaces: which namespaces a job gets, and the unshare flags for them."""

from __future__ import annotations

import itertools

import pytest

from jobworker.isolation.errors import InvalidSpec
from jobworker.isolation.namespaces import Namespaces

# From linux/sched.h; spelled out so a wrong constant in the module is caught.
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

ALL = ("pid", "mount", "net", "uts", "ipc")


def every_combination() -> list[Namespaces]:
    return [
        Namespaces(**dict(zip(ALL, flags, strict=True)))
        for flags in itertools.product((False, True), repeat=len(ALL))
    ]


def test_names_in_stable_order():
    assert Namespaces.names() == ALL


def test_default_isolates_everything():
    namespaces = Namespaces()
    assert all(getattr(namespaces, name) for name in ALL)
    assert namespaces.enabled() == ALL
    namespaces.validate()


def test_none_shares_everything():
    namespaces = Namespaces.none()
    assert not any(getattr(namespaces, name) for name in ALL)
    assert namespaces.enabled() == ()
    assert namespaces.unshare_flags() == 0
    namespaces.validate()


@pytest.mark.parametrize(
    ("namespaces", "enabled"),
    [
        (Namespaces(net=False), ("pid", "mount", "uts", "ipc")),
        (Namespaces(pid=False, ipc=False), ("mount", "net", "uts")),
        (Namespaces(pid=False, mount=False, net=False, uts=False), ("ipc",)),
    ],
)
def test_enabled(namespaces, enabled):
    assert namespaces.enabled() == enabled


def test_pid_namespace_needs_mount_namespace():
    for namespaces in (Namespaces(mount=False), Namespaces(mount=False, net=False, uts=False)):
        with pytest.raises(InvalidSpec, match="mount") as caught:
            namespaces.validate()
        assert caught.value.field == "namespaces"


def test_validate_accepts_everything_else():
    accepted = [ns for ns in every_combination() if not (ns.pid and not ns.mount)]
    assert len(accepted) == 24
    for namespaces in accepted:
        namespaces.validate()


def test_default_unshare_flags():
    assert Namespaces().unshare_flags() == CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC


@pytest.mark.parametrize(
    ("name", "flag"), [("mount", CLONE_NEWNS), ("uts", CLONE_NEWUTS), ("ipc", CLONE_NEWIPC)]
)
def test_unshare_flag_follows_its_namespace(name, flag):
    for namespaces in every_combination():
        assert bool(namespaces.unshare_flags() & flag) == getattr(namespaces, name), namespaces


def test_unshare_flags_never_include_pid_or_net():
    # pid is unshared by the job's parent (so the job is PID 1 in it) and net is a
    # prepared namespace joined with setns: neither belongs in unshare(2)'s flags.
    for namespaces in every_combination():
        flags = namespaces.unshare_flags()
        assert flags & (CLONE_NEWPID | CLONE_NEWNET) == 0, namespaces
        assert flags & ~(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC) == 0, namespaces
