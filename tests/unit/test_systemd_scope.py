"""systemd: which service we are, and the name and group of its jobs' scope."""

from __future__ import annotations

import pytest

from jobworker.isolation._systemd import Scope

PID = 4242
SERVICE = {"INVOCATION_ID": "0123456789abcdef0123456789abcdef", "SYSTEMD_EXEC_PID": str(PID)}


def scope(own: str, **environ: str) -> Scope | None:
    return Scope.for_service(own, {**SERVICE, **environ}, PID)


def test_the_main_process_of_a_system_service():
    assert scope("/system.slice/jobworker.service") == Scope(
        unit="jobworker-jobs.scope",
        service="jobworker.service",
        slice="system.slice",
        cgroup="/system.slice/jobworker-jobs.scope",
    )


@pytest.mark.parametrize(
    ("own", "unit", "slice_unit", "cgroup"),
    [
        (
            "/system.slice/system-jobworker.slice/jobworker@a.service",
            "jobworker@a-jobs.scope",
            "system-jobworker.slice",
            "/system.slice/system-jobworker.slice/jobworker@a-jobs.scope",
        ),
        ("/jobworker.service", "jobworker-jobs.scope", "-.slice", "/jobworker-jobs.scope"),
        # systemd prefixes "_" to group names that could clash with the kernel's files.
        ("/s.slice/_cpu.service", "cpu-jobs.scope", "s.slice", "/s.slice/cpu-jobs.scope"),
        ("/s.slice/__x.service", "_x-jobs.scope", "s.slice", "/s.slice/__x-jobs.scope"),
    ],
)
def test_names_and_groups(own, unit, slice_unit, cgroup):
    found = scope(own)
    assert found is not None
    assert (found.unit, found.slice, found.cgroup) == (unit, slice_unit, cgroup)


def test_older_systemd_without_exec_pid():
    found = Scope.for_service("/system.slice/jobworker.service", {"INVOCATION_ID": "x"}, PID)
    assert found is not None
    assert found.unit == "jobworker-jobs.scope"


@pytest.mark.parametrize(
    ("own", "environ"),
    [
        # a child of the service's main process: it inherits INVOCATION_ID only
        ("/system.slice/jobworker.service", {"SYSTEMD_EXEC_PID": str(PID + 1)}),
        ("/system.slice/jobworker.service", {"INVOCATION_ID": ""}),
        # a service of a user's manager
        ("/user.slice/user-0.slice/user@0.service/app.slice/x.service", {"MANAGERPID": "9"}),
        # not a service's group: a login session, a scope, the root
        ("/user.slice/user-0.slice/session-1.scope", {}),
        ("/system.slice/jobworker-jobs.scope", {}),
        ("/", {}),
        ("/machine/jobworker.service", {}),
    ],
)
def test_not_the_main_process_of_a_system_service(own, environ):
    assert scope(own, **environ) is None


def test_outside_systemd():
    assert Scope.for_service("/system.slice/jobworker.service", {}, PID) is None


def test_commands():
    found = scope("/system.slice/jobworker.service")
    assert found is not None
    assert found.systemd_run() == [
        "systemd-run",
        "--scope",
        "--unit=jobworker-jobs.scope",
        "--slice=system.slice",
        "--description=jobworker jobs of jobworker.service",
        "--property=Delegate=yes",
        "--collect",
        "--quiet",
        "--",
    ]
    assert found.state_command() == [
        "systemctl", "show", "--property=ActiveState", "--value", "jobworker-jobs.scope"
    ]  # fmt: skip
    assert "install it, or pass --cgroup-parent" in found.missing("systemd-run")
