"""What every section shares: the settings, the report, certificates, and fresh servers."""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from bench import profiling
from bench.processes import ServiceProcess, remove_cgroup_tree, service
from bench.report import Report
from bench.settings import Settings


@dataclass
class Harness:
    """Handed to each section's ``run``."""

    settings: Settings
    report: Report
    tls_dir: Path

    @property
    def work_dir(self) -> Path:
        """Scratch space for this run (state directories, files to stream)."""
        return self.settings.work_dir

    @contextlib.asynccontextmanager
    async def product(self, name: str, max_running_jobs: int = 1000) -> AsyncIterator[Product]:
        """A fresh jobworker server (own state directory and cgroup parent) for one section."""
        state = self.work_dir / f"state-{name}"
        shutil.rmtree(state, ignore_errors=True)
        parent = f"/jobworker-bench-{uuid.uuid4().hex[:8]}"
        arguments = [
            "--state-dir", str(state),
            "--tls-dir", str(self.tls_dir),
            "--cgroup-parent", parent,
            "--max-running-jobs", str(max_running_jobs),
        ]  # fmt: skip
        try:
            async with service(
                "bench.server", arguments, self.work_dir / f"{name}.ready"
            ) as server:
                yield Product(server, state)
        finally:
            remove_cgroup_tree(parent)
            shutil.rmtree(state, ignore_errors=True)

    @contextlib.asynccontextmanager
    async def raw(self) -> AsyncIterator[ServiceProcess]:
        """The minimal grpc.aio mTLS file-streaming server (the baseline)."""
        arguments = ["--tls-dir", str(self.tls_dir)]
        async with service("bench.raw_server", arguments, self.work_dir / "raw.ready") as server:
            yield server

    def profiled(
        self, item: str, server: ServiceProcess
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """py-spy on ``server`` during the block, if ``--profile`` names ``item``."""
        if self.settings.profile != item:
            return contextlib.nullcontext()
        return profiling.py_spy(server.pid, self.settings.profile_dir / f"profile-{item}")


@dataclass(frozen=True)
class Product:
    """A running jobworker server and its state directory."""

    server: ServiceProcess
    state_dir: Path

    def output_log(self, job_id: str) -> Path:
        """Where the job's output is kept (the benchmark deletes it once measured)."""
        return self.state_dir / "jobs" / job_id / "output.log"
