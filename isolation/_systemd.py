"""Under systemd, jobs live in a scope of their own, so that the service can restart.

Why: a service that lays its jobs' groups out inside its own unit group must enable
controllers in that group's ``cgroup.subtree_control``. systemd then cannot put the next
main process into the unit group (the kernel's no-internal-processes rule: EBUSY), so
``systemctl restart`` with jobs running fails with status 219/CGROUP. systemd 254 added
``DelegateSubgroup=`` for this; Debian 12 ships 252. So when jobworker is the main
process of a systemd service, its fork server, the shims and the jobs live in a
transient scope unit, ``<service>-jobs.scope`` in the service's slice, made with
``Delegate=yes``; the service's own group holds only the service and is never divided::

    <slice>/<name>.service                  the service alone
    <slice>/<name>-jobs.scope/supervisor/   the fork server and the job shims
    <slice>/<name>-jobs.scope/jobs/<id>/    one job

systemd keeps a scope while anything runs in it and removes it once it is empty, so the
scope outlives the service exactly as long as jobs (or their shims) do. A service that
starts while the scope is there moves its new fork server into it (as root it may move
any process into any group) and asks systemd whether the scope is still active, since
systemd may be dropping it at that very moment; otherwise ``systemd-run --scope`` makes a
new one, with itself as its first process, and then execs the fork server (same PID,
same descriptors). Both tools talk to systemd over its private socket as root, so no
D-Bus daemon is needed.

This module only names things and spells the commands; the launcher runs them. It is
imported (through ``cgroups``) by the fork server, which must stay small.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

_SUFFIX = "-jobs.scope"


@dataclass(frozen=True)
class Scope:
    """The transient scope unit that holds a service's fork server, shims and jobs."""

    unit: str
    """Its name, e.g. ``jobworker-jobs.scope``."""
    service: str
    """The service it belongs to, e.g. ``jobworker.service``."""
    slice: str
    """The slice both are in, e.g. ``system.slice``."""
    cgroup: str
    """Its group, relative to the cgroup2 mount: ``/system.slice/jobworker-jobs.scope``."""

    @classmethod
    def for_service(cls, own: str, environ: Mapping[str, str], pid: int) -> Scope | None:
        """The scope for the service we are the main process of; None if we are not one.

        systemd gives every process of a service ``INVOCATION_ID``, and (since 248) the
        one it started ``SYSTEMD_EXEC_PID``, which tells the service itself from its
        children; ``MANAGERPID`` means a user's manager, whose units ``systemd-run``
        (the system manager's) cannot reach. ``own`` is our group: ``<slice>/<name>.service``.
        """
        exec_pid = environ.get("SYSTEMD_EXEC_PID")
        if (
            not environ.get("INVOCATION_ID")
            or "MANAGERPID" in environ
            or exec_pid not in (None, str(pid))
        ):
            return None
        parent, _, leaf = own.rpartition("/")
        service = _unescape(leaf)
        slice_unit = _unescape(parent.rpartition("/")[2]) if parent else "-.slice"
        if not service.endswith(".service") or not slice_unit.endswith(".slice"):
            return None
        unit = service.removesuffix(".service") + _SUFFIX
        return cls(unit=unit, service=service, slice=slice_unit, cgroup=f"{parent}/{_escape(unit)}")

    def systemd_run(self) -> list[str]:
        """The command line that runs what follows it as the first process of a new scope.

        systemd-run registers the scope with itself in it, waits until systemd has made
        it, then execs the rest of its command line; it fails if the scope exists.
        ``--collect`` has systemd forget a scope that failed, so that its name is free.
        """
        return [
            "systemd-run",
            "--scope",
            f"--unit={self.unit}",
            f"--slice={self.slice}",
            f"--description=jobworker jobs of {self.service}",
            "--property=Delegate=yes",
            "--collect",
            "--quiet",
            "--",
        ]

    def state_command(self) -> list[str]:
        """What prints the scope's state: ``active`` while systemd runs it.

        Asked of systemd rather than read from cgroupfs: a group can outlive its unit.
        """
        return ["systemctl", "show", "--property=ActiveState", "--value", self.unit]

    def missing(self, tool: str) -> str:
        """Why we cannot go on without one of systemd's tools, and the fix."""
        return (
            f"jobworker runs as {self.service} and keeps its jobs in the systemd scope "
            f"{self.unit}, which needs {tool} (package systemd): install it, or pass "
            "--cgroup-parent to put jobs elsewhere"
        )


def _unescape(name: str) -> str:
    """A unit's name from its group's: systemd prefixes ``_`` to names that could clash."""
    return name[1:] if name.startswith("_") else name


def _escape(unit: str) -> str:
    """A unit's group name: the reverse of ``_unescape`` (systemd's ``cg_escape``).

    Of its cases, only these can apply to ``<name>-jobs.scope``: the part before the
    last dot never names a controller.
    """
    return "_" + unit if unit.startswith(("_", ".", "cgroup.")) else unit
