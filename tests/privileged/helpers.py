"""Helpers for tests that launch real jobs on a real cgroup v2 kernel."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from jobworker.isolation.credentials import Credentials
from jobworker.isolation.launcher import Launcher, RunningJob
from jobworker.isolation.limits import Limits
from jobworker.isolation.namespaces import Namespaces
from jobworker.isolation.outcome import Outcome
from jobworker.isolation.outputlog import Kind, OutputLogReader, Stream
from jobworker.isolation.privileges import Privileges
from jobworker.isolation.spec import JobSpec
from tests.descriptors import descriptor_targets

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Tests are plain functions; each drives its own event loop."""
    return asyncio.run(coroutine)


@dataclass
class Finished:
    """A job that ran to its end, with its output split by stream."""

    outcome: Outcome
    stdout: bytes
    stderr: bytes


class Jobs:
    """Launch jobs with sensible defaults; each gets a fresh run directory."""

    def __init__(self, launcher: Launcher, root: Path) -> None:
        self.launcher = launcher
        self.root = root

    def spec(
        self,
        *argv: str,
        limits: Limits | None = None,
        namespaces: Namespaces | None = None,
        cwd: str = "/",
        env: dict[str, str] | None = None,
        output_cap: int | None = None,
        user: Credentials | None = None,
        privileges: Privileges | None = None,
    ) -> JobSpec:
        job_id = str(uuid.uuid4())
        run_dir = self.root / job_id
        run_dir.mkdir()
        return JobSpec(
            job_id=job_id,
            argv=argv,
            run_dir=run_dir,
            env=env or {},
            cwd=cwd,
            limits=limits or Limits(),
            namespaces=namespaces if namespaces is not None else Namespaces(),
            output_cap=output_cap,
            user=user,
            privileges=privileges or Privileges(),
        )

    async def start(self, *argv: str, **options: Any) -> RunningJob:
        return await self.launcher.launch(self.spec(*argv, **options).validate())

    async def finish(self, job: RunningJob) -> Finished:
        outcome = await job.wait()
        return Finished(outcome, *read_output(job.output_log))

    async def complete(self, *argv: str, **options: Any) -> Finished:
        return await self.finish(await self.start(*argv, **options))


def read_output(log: Path) -> tuple[bytes, bytes]:
    """The whole output of a finished job; fails if the log lacks its END record."""
    streams = {Stream.STDOUT: bytearray(), Stream.STDERR: bytearray()}
    with OutputLogReader(log) as reader:
        records = list(reader.records())
    assert records, "empty output log"
    assert records[-1].kind is Kind.END, records[-1]
    for record in records:
        if record.kind is Kind.DATA:
            assert record.stream is not None
            streams[record.stream] += record.data
    return bytes(streams[Stream.STDOUT]), bytes(streams[Stream.STDERR])


def read_partial(log: Path) -> bytes:
    """All output so far of a job that may still be running, streams concatenated."""
    with OutputLogReader(log) as reader:
        return b"".join(r.data for r in reader.records() if r.kind is Kind.DATA)


async def output_contains(job: RunningJob, text: bytes, timeout: float = 120.0) -> None:
    """Wait until the job has printed ``text`` (tests may poll; the product must not)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while text not in read_partial(job.output_log):
        assert asyncio.get_running_loop().time() < deadline, f"job never printed {text!r}"
        await asyncio.sleep(0.1)


def open_descriptors() -> list[str]:
    """What this process has open, by kind ("socket", "pipe", "anon_inode:[pidfd]", a path).

    Kinds rather than a count, so that a leak test's failure says what leaked.
    """
    kinds = []
    for target in descriptor_targets():
        numbered = target.startswith(("socket:[", "pipe:["))
        kinds.append(target.split(":[", 1)[0] if numbered else target)
    return sorted(kinds)


def count_zombies() -> int:
    zombies = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            zombies += stat.rsplit(")", 1)[1].split()[0] == "Z"
    return zombies


def net_namespaces() -> set[str]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.add(os.readlink(entry / "ns" / "net"))
            except OSError:
                continue
    return found
