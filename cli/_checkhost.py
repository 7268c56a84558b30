"""``jobworker check-host``: can this host isolate and limit jobs? Changes nothing.

It asks the runner, which answers from the same discovery it runs when the server starts.
"""

from __future__ import annotations

import argparse

from jobworker.cli._errors import CliError
from jobworker.runner import host
from jobworker.runner.errors import HostUnsupported


def check_host(args: argparse.Namespace) -> int:
    """Print where jobs would go, or why they cannot."""
    try:
        jobs = host.check_host(args.cgroup_parent)
    except HostUnsupported as error:
        raise CliError(f"this host cannot run jobs: {error}") from None
    scope = f" (systemd scope {jobs.scope}, made by the server)" if jobs.scope else ""
    print(f"cgroup v2 at {jobs.cgroup_mount}; jobs would go under {jobs.jobs_cgroup}{scope}")
    return 0
