"""``jobworker check-host``: can this host isolate and limit jobs? Changes nothing."""

from __future__ import annotations

import argparse

from jobworker.cli.errors import CliError
from jobworker.isolation.cgroups import CgroupHost
from jobworker.isolation.errors import HostUnsupported


def check_host(args: argparse.Namespace) -> int:
    """Print where jobs would go, or why they cannot."""
    try:
        host = CgroupHost.discover(parent=args.cgroup_parent)
    except HostUnsupported as error:
        raise CliError(f"this host cannot run jobs: {error}") from None
    scope = f" (systemd scope {host.scope.unit}, made by the server)" if host.scope else ""
    print(f"cgroup v2 at {host.mount}; jobs would go under {host.base}/jobs{scope}")
    return 0
