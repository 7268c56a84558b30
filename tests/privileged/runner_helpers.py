"""Helpers for tests that drive a real Runner on a real cgroup v2 kernel."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from jobworker.isolation.outputlog import Stream
from jobworker.runner.output import OutputCapped, OutputChunk, OutputEvent, OutputTruncated
from jobworker.runner.runner import Runner, RunnerConfig, StartRequest
from tests.privileged.helpers import run

T = TypeVar("T")

CGROUP_ROOT = Path("/sys/fs/cgroup")


def with_runner(config: RunnerConfig, body: Callable[[Runner], Awaitable[T]]) -> T:
    """Open a runner, run ``body`` with it, close it."""

    async def scenario() -> T:
        runner = await Runner.open(config)
        try:
            return await body(runner)
        finally:
            await runner.close()

    return run(scenario())


def sh(script: str, **options: object) -> StartRequest:
    return StartRequest(command="sh", args=("-c", script), **options)  # type: ignore[arg-type]


async def until_ended(runner: Runner, job_id: str) -> None:
    async for _ in await runner.stream(job_id):
        pass


async def collect(
    events: AsyncIterator[OutputEvent],
) -> tuple[bytes, bytes, list[OutputCapped | OutputTruncated]]:
    """Drain a stream: stdout, stderr and any markers (cap reached, output truncated)."""
    out, err, markers = bytearray(), bytearray(), []
    async for event in events:
        if isinstance(event, OutputCapped | OutputTruncated):
            markers.append(event)
        elif event.stream is Stream.STDOUT:
            out += event.data
        else:
            err += event.data
    return bytes(out), bytes(err), markers


async def digest(events: AsyncIterator[OutputEvent]) -> tuple[str, int]:
    """SHA-256 and length of all output, without keeping it in memory."""
    hasher, size, expected_offset = hashlib.sha256(), 0, None
    async for event in events:
        assert isinstance(event, OutputChunk), event
        if expected_offset is not None:
            assert event.offset == expected_offset, "a gap or overlap in the stream"
        expected_offset = event.offset + len(event.data)
        hasher.update(event.data)
        size += len(event.data)
    return hasher.hexdigest(), size


async def wait_for_output(runner: Runner, job_id: str, text: bytes) -> None:
    """Follow the job until it has printed ``text`` (the stream itself blocks; no polling)."""
    seen = bytearray()
    async for event in await runner.stream(job_id):
        if isinstance(event, OutputChunk):
            seen += event.data
            if text in seen:
                return
    raise AssertionError(f"job ended without printing {text!r}: {bytes(seen[-200:])!r}")


def remove_cgroup_tree(parent: str) -> None:
    """Remove a test's cgroup parent, moving this process back to the root group first."""
    (CGROUP_ROOT / "cgroup.procs").write_text(str(os.getpid()))
    base = CGROUP_ROOT / parent.lstrip("/")
    if not base.exists():
        return
    for group in sorted(base.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if group.is_dir():
            group.rmdir()
    base.rmdir()


def processes_in(cgroup_parent: str) -> list[int]:
    """Every process under a cgroup subtree (jobs, shims, fork servers)."""
    base = CGROUP_ROOT / cgroup_parent.lstrip("/")
    pids = []
    for procs in base.rglob("cgroup.procs"):
        pids += [int(pid) for pid in procs.read_text().split()]
    return pids


@contextmanager
def home_root() -> Iterator[Path]:
    """A place for transient users' homes that jobs can reach, removed afterwards.

    pytest's temporary directories sit under a mode-0700 folder, which no job user
    could pass, and the runner refuses a home root it cannot hand out (tested).
    """
    root = Path(tempfile.mkdtemp(prefix="jobworker-test-homes-", dir="/run"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
