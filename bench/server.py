"""The jobworker server as its own process, for the benchmark to measure from outside.

    python -m bench.server --state-dir DIR --tls-dir DIR --ready-file FILE [...]

Runs ``jobworker.api.server.serve`` until SIGTERM and writes the bound port to
``--ready-file`` once it serves, so the benchmark can read this process's memory from
``/proc/<pid>/status`` while driving it over mutual TLS like any client.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from jobworker.api.server import Server, ServerConfig, TlsFiles, serve
from jobworker.runner import defaults
from jobworker.runner.runner import RunnerConfig


def _write_ready(path: Path, server: Server) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(str(server.port))
    os.replace(temporary, path)


def main() -> None:
    """Parse the arguments and serve until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m bench.server")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--tls-dir", type=Path, required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--cgroup-parent", default="/jobworker-bench")
    parser.add_argument("--home-root", type=Path, required=True, help="transient users' homes")
    parser.add_argument("--max-running-jobs", type=int, default=defaults.MAX_RUNNING_JOBS)
    parser.add_argument("--output-cap", type=int, default=0, help="bytes per job; 0: no cap")
    args = parser.parse_args()
    config = ServerConfig(
        runner=RunnerConfig(
            state_dir=args.state_dir,
            cgroup_parent=args.cgroup_parent,
            home_root=args.home_root,
            output_cap_bytes=args.output_cap or None,
            max_running_jobs=args.max_running_jobs,
            stop_jobs_on_close=True,
            shutdown_grace_seconds=1.0,
        ),
        tls=TlsFiles.in_directory(args.tls_dir),
        listen="localhost:0",
    )
    asyncio.run(serve(config, lambda server: _write_ready(args.ready_file, server)))


if __name__ == "__main__":
    main()
