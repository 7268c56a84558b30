"""privileges, _seccomp: capability names and sets, the filter's table, and the filter at work."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import pytest

from jobworker.isolation import _seccomp as seccomp
from jobworker.isolation import _syscalls as syscalls
from jobworker.isolation._protocol import ProcessSetup, Request
from jobworker.isolation.credentials import Credentials
from jobworker.isolation.errors import InvalidSpec, MalformedMessage
from jobworker.isolation.privileges import (
    CAPABILITIES,
    DEFAULT_CAPABILITIES,
    Privileges,
    capability_name,
)
from jobworker.isolation.rundir import RunDir
from jobworker.isolation.spec import JobSpec


def numbers(*names: str) -> frozenset[int]:
    return frozenset(CAPABILITIES[name] for name in names)


@pytest.mark.parametrize("text", ["CAP_NET_ADMIN", "net_admin", " Net_Admin ", "cap_net_admin"])
def test_a_capability_is_named_as_the_kernel_or_docker_writes_it(text: str) -> None:
    assert capability_name(text, "cap_add") == "NET_ADMIN"


def test_the_kernels_numbering_is_kept() -> None:
    assert (CAPABILITIES["CHOWN"], CAPABILITIES["SYS_ADMIN"], CAPABILITIES["BPF"]) == (0, 21, 39)
    assert len(CAPABILITIES) == 41


@pytest.mark.parametrize("field", ["cap_add", "cap_drop"])
@pytest.mark.parametrize("text", ["CAP_WHATEVER", "", "CAP_", "net admin", "0"])
def test_an_unknown_capability_is_refused_naming_the_field(field: str, text: str) -> None:
    with pytest.raises(InvalidSpec) as refused:
        Privileges(**{field: (text,)}).validate()  # type: ignore[arg-type]
    assert refused.value.field == field
    assert "unknown capability" in str(refused.value)


def test_a_root_job_keeps_dockers_default_set_and_others_nothing() -> None:
    assert Privileges().capabilities(root=True) == numbers(*DEFAULT_CAPABILITIES)
    assert Privileges().capabilities(root=False) == frozenset()
    assert Privileges(cap_drop=("ALL",)).capabilities(root=False) == frozenset()
    assert "SYS_ADMIN" not in DEFAULT_CAPABILITIES
    assert {"CHOWN", "SETUID", "NET_BIND_SERVICE"} <= DEFAULT_CAPABILITIES


@pytest.mark.parametrize(
    ("add", "drop", "expected"),
    [
        ((), ("chown",), DEFAULT_CAPABILITIES - {"CHOWN"}),
        (("NET_ADMIN",), (), DEFAULT_CAPABILITIES | {"NET_ADMIN"}),
        (("NET_RAW",), ("ALL",), {"NET_RAW"}),
        (("ALL",), ("SYS_ADMIN",), set(CAPABILITIES) - {"SYS_ADMIN"}),
        (("SYS_ADMIN",), ("SYS_ADMIN",), DEFAULT_CAPABILITIES),
        ((), ("ALL",), set()),
    ],
)
def test_adding_and_dropping_read_as_docker_reads_them(
    add: tuple[str, ...], drop: tuple[str, ...], expected: set[str]
) -> None:
    assert Privileges(cap_add=add, cap_drop=drop).capabilities(root=True) == numbers(*expected)


def test_only_more_than_the_defaults_is_widening() -> None:
    assert not Privileges(cap_drop=("ALL",), no_new_privs=True).widened
    assert Privileges(cap_add=("KILL",)).widened
    assert Privileges(seccomp=False).widened


def test_capabilities_are_added_only_to_a_root_job(tmp_path: Path) -> None:
    added = Privileges(cap_add=("NET_ADMIN",))
    added.check_user(root=True)
    with pytest.raises(InvalidSpec) as refused:
        added.check_user(root=False)
    assert refused.value.field == "cap_add"
    spec = JobSpec("j", ("true",), tmp_path, privileges=added, user=Credentials.resolve("nobody"))
    with pytest.raises(InvalidSpec, match="only to a job run as root"):
        spec.validate()


def test_privileges_reach_the_first_process_through_the_protocol() -> None:
    setup = ProcessSetup(argv=("true",), env={}, capabilities=(0, 5, 21), seccomp=True)
    request = Request("j", Path("/c"), RunDir(Path("/r")), setup)
    assert Request.decode(request.encode()).process == setup
    damaged = request.encode().replace(b'"capabilities": [0, 5, 21]', b'"capabilities": ["0"]')
    with pytest.raises(MalformedMessage, match="capabilities"):
        Request.decode(damaged)


def test_every_denied_call_is_one_libseccomp_knows() -> None:
    import pyseccomp

    native = pyseccomp.system_arch()
    names = [name for denied in seccomp.DENIED for name in denied.syscalls]
    names += [*seccomp.REACHING_OTHER_PROCESSES, "clone", "clone3"]
    unknown = [name for name in names if pyseccomp.resolve_syscall(native, name) < 0]
    assert unknown == []
    assert {d.unless_capability for d in seccomp.DENIED} - {None} <= set(CAPABILITIES)


def test_the_filter_depends_on_what_the_job_holds() -> None:
    plain = seccomp.program(frozenset(), pid_namespace=False)
    assert len(plain) % 8 == 0
    assert seccomp.program(frozenset(), pid_namespace=False) is plain  # compiled once
    assert seccomp.program(frozenset(), pid_namespace=True) != plain
    assert seccomp.program(numbers("SYS_ADMIN"), pid_namespace=False) != plain


def test_a_loaded_filter_answers_eperm_and_lets_the_rest_through() -> None:
    """The kernel applies the compiled filter (no_new_privs lets anyone load one)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        syscalls.set_no_new_privs()
        seccomp.load(seccomp.program(frozenset(), pid_namespace=False))
        results = []
        for call in (lambda: libc.syscall(250, 0, -3, 0), lambda: libc.unshare(0x10000000)):
            results.append(ctypes.get_errno() if call() < 0 else 0)
        results.append(os.getpid() > 0)
        os.write(write_end, repr(results).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        reported = pipe.read()
    os.waitpid(pid, 0)
    assert reported == repr([errno.EPERM, errno.EPERM, True])
