"""Whether this host can run jobs, and where they go: what the runner found, for people.

The runner discovers the cgroup hierarchy once, when it opens; the server's start-up
line reports what it found, and ``jobworker check-host`` asks the same question without
starting anything, so neither looks at the kernel on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jobworker.isolation import errors as isolation
from jobworker.isolation.cgroups import REQUIRED_CONTROLLERS, CgroupHost
from jobworker.runner.errors import HostUnsupported


@dataclass(frozen=True)
class JobPlacement:
    """Where jobs go on this host, and which of their limits the kernel enforces."""

    cgroup_mount: Path
    """Where the cgroup v2 hierarchy is mounted, e.g. /sys/fs/cgroup."""
    jobs_cgroup: str
    """The group under which every job gets its own, as a path in the hierarchy."""
    scope: str | None
    """The systemd scope that holds the jobs, when the server runs as a systemd service."""
    controllers: tuple[str, ...]
    """The cgroup controllers that enforce jobs' limits."""

    @classmethod
    def of(cls, host: CgroupHost) -> JobPlacement:
        """The placement of jobs on a discovered hierarchy."""
        return cls(
            cgroup_mount=host.mount,
            jobs_cgroup=f"{host.base.rstrip('/')}/jobs",
            scope=host.scope.unit if host.scope else None,
            controllers=REQUIRED_CONTROLLERS,
        )


def discover(cgroup_parent: str | None) -> CgroupHost:
    """The host's cgroup v2 hierarchy, checked without changing anything.

    Raises ``HostUnsupported`` naming every problem and how to fix each.
    """
    try:
        return CgroupHost.discover(parent=cgroup_parent)
    except isolation.HostUnsupported as error:
        raise HostUnsupported(str(error)) from None


def check_host(cgroup_parent: str | None) -> JobPlacement:
    """Where jobs would go under ``cgroup_parent`` (None: the default); changes nothing."""
    return JobPlacement.of(discover(cgroup_parent))
