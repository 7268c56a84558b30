"""Server processes started by the benchmark, and their memory as the kernel reports it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from bench.settings import REPO

CGROUP_ROOT = Path("/sys/fs/cgroup")
_START_TIMEOUT = 600.0  # importing grpc alone takes seconds in an emulated VM


class ServiceProcess:
    """A server started as ``python -m MODULE``; it writes its port to a ready file."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port
        self.pid = process.pid

    @property
    def address(self) -> str:
        """Where clients connect (the server certificate names ``localhost``)."""
        return f"localhost:{self.port}"

    def status_kib(self, field: str) -> int:
        """A ``/proc/<pid>/status`` figure such as ``VmRSS`` or ``VmHWM``, in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise LookupError(f"{field} not in /proc/{self.pid}/status")

    def rss_mib(self) -> float:
        """Resident memory now, MiB."""
        return self.status_kib("VmRSS") / 1024

    def peak_mib(self) -> float:
        """Peak resident memory since start or the last ``reset_peak``, MiB."""
        return self.status_kib("VmHWM") / 1024

    def reset_peak(self) -> None:
        """Make the peak start again from the current resident memory (Linux 4.0+)."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it takes too long."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 120)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@contextlib.asynccontextmanager
async def service(
    module: str, arguments: Sequence[str], ready_file: Path
) -> AsyncIterator[ServiceProcess]:
    """Run ``python -m module arguments --ready-file ready_file`` for the duration of the block."""
    ready_file.unlink(missing_ok=True)
    began = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *arguments, "--ready-file", str(ready_file), cwd=REPO
    )
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while not ready_file.exists():
            if process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{module} did not start (exit status {process.returncode})")
            await asyncio.sleep(0.05)
        running = ServiceProcess(process, int(ready_file.read_text()))
        progress(f"{module} ready in {time.monotonic() - began:.1f}s (pid {process.pid})")
        yield running
    finally:
        if process.returncode is None:
            began = time.monotonic()
            await ServiceProcess(process, 0).stop()
            progress(f"{module} stopped in {time.monotonic() - began:.1f}s")


_STARTED = time.monotonic()


def progress(message: str) -> None:
    """One line of progress on stdout, with the time since the run began."""
    print(f"   [{time.monotonic() - _STARTED:7.1f}s] {message}", flush=True)


def memory_available_mib() -> float:
    """``MemAvailable`` of the whole machine, MiB: what every process together left free."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    raise LookupError("MemAvailable not in /proc/meminfo")


def remove_cgroup_tree(parent: str) -> None:
    """Kill what is left under a cgroup parent and remove its groups, deepest first."""
    base = CGROUP_ROOT / parent.lstrip("/")
    if not base.is_dir():
        return
    with contextlib.suppress(OSError):
        (base / "cgroup.kill").write_text("1")
    groups = sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: len(p.parts))
    for group in [*reversed(groups), base]:
        for _ in range(100):
            try:
                group.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.05)
