"""Entry point of the ``jobworker`` console script."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jobworker.isolation.cgroups import CgroupHost
from jobworker.isolation.errors import HostUnsupported


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run one subcommand; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="jobworker",
        description="Run commands as isolated, resource-limited jobs.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "check-host",
        help="check that this host can isolate and limit jobs",
        description="Check, without changing anything, that this host can run jobs: root, "
        "a pure cgroup v2 hierarchy with the cpu, memory, io and pids controllers.",
        epilog="example: sudo jobworker check-host --cgroup-parent /jobworker",
    )
    check.add_argument("--cgroup-parent", metavar="PATH", help="cgroup under which jobs would go")
    args = parser.parse_args(argv)
    try:
        host = CgroupHost.discover(parent=args.cgroup_parent)
    except HostUnsupported as error:
        print(f"jobworker: this host cannot run jobs: {error}", file=sys.stderr)
        return 1
    print(f"cgroup v2 at {host.mount}; jobs would go under {host.base}/jobs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
