"""``jobworker server``: run the service in the foreground until SIGTERM or SIGINT.

What would stop it from working is checked before it listens (root, a usable
cgroup v2 hierarchy, readable certificates) and reported as one line with the
fix. Its log goes to stderr (the journal, under systemd); the one line on stdout
says where it listens and what it enforces, for people and for scripts that
start it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from jobworker.api.server import Server, ServerConfig, ServerConfigError, TlsFiles
from jobworker.api.server import serve as run_server
from jobworker.cli import defaults
from jobworker.cli.errors import CliError, UsageError
from jobworker.isolation.cgroups import REQUIRED_CONTROLLERS, CgroupHost
from jobworker.isolation.errors import HostUnsupported
from jobworker.runner.errors import RunnerError
from jobworker.runner.runner import RunnerConfig


def serve(args: argparse.Namespace) -> int:
    """Start the server with the options of ``jobworker server``; return at shutdown."""
    tls = tls_files(args)
    try:
        host = CgroupHost.discover(parent=args.cgroup_parent)
    except HostUnsupported as error:
        raise CliError(f"this host cannot run jobs: {error}") from None
    config = ServerConfig(
        runner=RunnerConfig(
            state_dir=args.state_dir,
            cgroup_parent=args.cgroup_parent,
            max_running_jobs=args.max_jobs,
            keep_ended_seconds=args.keep_ended,
            default_user=args.default_user,
        ),
        tls=tls,
        listen=args.listen,
    )

    scope = f" (systemd scope {host.scope.unit})" if host.scope else ""

    def ready(server: Server) -> None:
        address = args.listen.rsplit(":", 1)[0]
        print(
            f"jobworker server listening on {address}:{server.port} (mutual TLS, CA {tls.ca}); "
            f"limits enforced: {', '.join(REQUIRED_CONTROLLERS)}; "
            f"jobs in cgroup {host.base}/jobs{scope}; state in {args.state_dir}",
            flush=True,
        )

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(run_server(config, ready))
    except (ServerConfigError, RunnerError) as error:
        raise CliError(f"the server cannot start: {error}") from None
    return 0


def tls_files(args: argparse.Namespace) -> TlsFiles:
    """The server's certificate, key and CA: all three flags, or a TLS directory."""
    explicit = (args.cert, args.key, args.ca)
    if any(path is not None for path in explicit):
        if args.tls_dir is not None or None in explicit:
            raise UsageError("give all of --cert, --key and --ca, or --tls-dir instead")
        files = TlsFiles(args.cert, args.key, args.ca)
        hint = "check --cert, --key and --ca"
    else:
        directory = defaults.tls_dir(args.tls_dir)
        files = TlsFiles.in_directory(directory)
        hint = f"create them with `jobworker certs init --dir {directory}`"
    paths = (files.certificate, files.key, files.ca)
    unreadable = [str(path) for path in paths if not os.access(path, os.R_OK)]
    if unreadable:
        raise CliError(f"the server cannot start: cannot read {', '.join(unreadable)}; {hint}")
    return files
