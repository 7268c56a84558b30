"""What every section shares: the settings, the report, certificates, and fresh servers."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench import profiling
from bench.processes import ServiceProcess, remove_cgroup_tree, service
from bench.report import Report
from bench.settings import Settings
from jobworker.isolation.rundir import RunDir


class Harness:
    """Handed to each section's ``run``: settings, report, and the servers, started once.

    One jobworker server and one baseline server serve the whole run: starting a Python
    gRPC server takes long in an emulated VM, and every section takes its own idle
    figures before it measures.
    """

    def __init__(self, settings: Settings, report: Report, tls_dir: Path) -> None:
        self.settings = settings
        self.report = report
        self.tls_dir = tls_dir
        self._stack = contextlib.AsyncExitStack()
        self._product: Product | None = None
        self._raw: ServiceProcess | None = None

    @property
    def work_dir(self) -> Path:
        """Scratch space for this run (state directory, files to stream)."""
        return self.settings.work_dir

    async def product(self) -> Product:
        """The jobworker server (own state directory and cgroup parent), started on first use."""
        if self._product is None:
            state = self.work_dir / "state"
            parent = f"/jobworker-bench-{uuid.uuid4().hex[:8]}"
            self._stack.callback(shutil.rmtree, state, ignore_errors=True)
            self._stack.callback(remove_cgroup_tree, parent)
            # Jobs must be able to reach their homes: not below a mode-0700 scratch folder.
            homes = Path(tempfile.mkdtemp(prefix="jobworker-bench-homes-", dir="/run"))
            self._stack.callback(shutil.rmtree, homes, ignore_errors=True)
            jobs = max(1000, self.settings.sizes.scale_jobs + 16)
            arguments = [
                "--state-dir", str(state),
                "--tls-dir", str(self.tls_dir),
                "--cgroup-parent", parent,
                "--home-root", str(homes),
                "--max-running-jobs", str(jobs),
            ]  # fmt: skip
            ready = self.work_dir / "server.ready"
            server = await self._stack.enter_async_context(
                service("bench.server", arguments, ready)
            )
            self._product = Product(server, state)
        return self._product

    async def raw(self) -> ServiceProcess:
        """The minimal grpc.aio mTLS file-streaming server (the baseline), started on first use."""
        if self._raw is None:
            arguments = ["--tls-dir", str(self.tls_dir)]
            ready = self.work_dir / "raw.ready"
            self._raw = await self._stack.enter_async_context(
                service("bench.raw_server", arguments, ready)
            )
        return self._raw

    async def close(self) -> None:
        """Stop the servers and remove what they left."""
        await self._stack.aclose()

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
        return RunDir(self.state_dir / "jobs" / job_id).output_log
