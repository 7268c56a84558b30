"""``jobworker server``: run the service in the foreground until SIGTERM or SIGINT.

What would stop it from working, or make it unsafe, is checked before it listens
(root, a usable cgroup v2 hierarchy, readable certificates, a valid revocation
list, no CA key among its files) and reported as one line with the fix. Its
log goes to stderr (the journal, under systemd); the one line on stdout
says where it listens and what it enforces, for people and for scripts that
start it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys

from jobworker.api.errors import CaKeyExposed, ServerConfigError
from jobworker.api.server import Server, ServerConfig, TlsFiles
from jobworker.api.server import serve as run_server
from jobworker.cli import _defaults as defaults
from jobworker.cli._errors import CliError, UsageError
from jobworker.runner.errors import HostUnsupported, RunnerError
from jobworker.runner.records import Limits
from jobworker.runner.runner import RunnerConfig


def serve(args: argparse.Namespace) -> int:
    """Start the server with the options of ``jobworker server``; return at shutdown."""
    tls = tls_files(args)
    # Options left out keep the runner's own defaults, written there once.
    given = {"transient_ids": args.transient_ids, "home_root": args.home_root}
    config = ServerConfig(
        runner=RunnerConfig(
            state_dir=args.state_dir,
            cgroup_parent=args.cgroup_parent,
            max_running_jobs=args.max_jobs,
            keep_ended_seconds=args.keep_ended,
            default_user=args.default_user,
            allowed_users=tuple(args.allow_user),
            default_limits=_limits(args, "default"),
            max_limits=_limits(args, "max"),
            jobs_memory_bytes=args.jobs_memory,
            jobs_pids=args.jobs_pids,
            output_cap_bytes=args.output_cap,
            output_quota_bytes=args.output_quota,
            min_free_bytes=args.min_free_space,
            max_stdin_bytes=args.max_stdin,
            **{name: value for name, value in given.items() if value is not None},
        ),
        tls=tls,
        listen=args.listen,
        **{
            name: value
            for name, value in (
                ("max_streams", args.max_streams),
                ("max_streams_per_user", args.max_streams_per_user),
            )
            if value is not None
        },
    )

    def ready(server: Server) -> None:
        address = args.listen.rsplit(":", 1)[0]
        jobs = server.runner.placement
        scope = f" (systemd scope {jobs.scope})" if jobs.scope else ""
        print(
            f"jobworker server listening on {address}:{server.port} (mutual TLS, CA {tls.ca}); "
            f"limits enforced: {', '.join(jobs.controllers)}; "
            f"jobs in cgroup {jobs.jobs_cgroup}{scope}; state in {args.state_dir}",
            flush=True,
        )

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(run_server(config, ready))
    except CaKeyExposed as error:
        raise CliError(f"the server cannot start: {error.problem}; {_move(error, tls)}") from None
    except HostUnsupported as error:
        raise CliError(f"this host cannot run jobs: {error}") from None
    except (ServerConfigError, RunnerError) as error:
        raise CliError(f"the server cannot start: {error}") from None
    return 0


def _limits(args: argparse.Namespace, kind: str) -> Limits:
    """The limits of ``--default-*`` or ``--max-*``."""
    return Limits(
        cpu_cores=getattr(args, f"{kind}_cpu"),
        memory_bytes=getattr(args, f"{kind}_memory"),
        pids=getattr(args, f"{kind}_pids"),
    )


def _move(error: CaKeyExposed, tls: TlsFiles) -> str:
    """How to move the exposed key (and copy ca.crt) to the default CA directory."""
    ca_dir = defaults.ca_dir(None)
    return (
        f"move it: install -d -m 700 {ca_dir} && mv {error.path} {ca_dir}/ca.key "
        f"&& cp {tls.ca} {ca_dir}/ca.crt"
    )


def tls_files(args: argparse.Namespace) -> TlsFiles:
    """The server's certificate, key and CA: all three flags, or a TLS directory.

    The revocation list is ``--crl``, which must exist, else ``crl.pem`` in the TLS
    directory if there is one (none before the first ``jobworker certs revoke``).
    """
    explicit = (args.cert, args.key, args.ca)
    if any(path is not None for path in explicit):
        if args.tls_dir is not None or None in explicit:
            raise UsageError("give all of --cert, --key and --ca, or --tls-dir instead")
        files = TlsFiles(args.cert, args.key, args.ca, args.crl)
        hint = "check --cert, --key, --ca and --crl"
    else:
        directory = defaults.tls_dir(args.tls_dir)
        files = TlsFiles.in_directory(directory)
        if args.crl is not None:
            files = dataclasses.replace(files, crl=args.crl)
        hint = f"create them with `jobworker certs init --dir {directory}`"
    paths = (files.certificate, files.key, files.ca, args.crl)
    unreadable = [str(path) for path in paths if path is not None and not os.access(path, os.R_OK)]
    if unreadable:
        raise CliError(f"the server cannot start: cannot read {', '.join(unreadable)}; {hint}")
    return files
