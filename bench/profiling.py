"""py-spy on the server process during one benchmark item, summarised as top functions."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

_TOP = 25


@contextlib.asynccontextmanager
async def py_spy(pid: int, stem: Path) -> AsyncIterator[None]:
    """Sample ``pid`` (all threads, with native frames) while the block runs.

    Writes ``<stem>.txt`` (collapsed stacks, for flamegraph tools) and
    ``<stem>-top.txt`` (functions by own and inclusive share of the samples).
    """
    executable = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    stem.parent.mkdir(parents=True, exist_ok=True)
    collapsed = stem.with_suffix(".txt")
    print(f"   py-spy ({executable}) on pid {pid} -> {collapsed}", flush=True)
    process = await asyncio.create_subprocess_exec(
        executable, "record", "--pid", str(pid), "--rate", "100", "--threads", "--nonblocking",
        "--subprocesses", "--format", "raw", "--output", str(collapsed),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    # py-spy takes seconds to attach in an emulated VM; an early SIGINT would lose it all.
    async with asyncio.timeout(120):
        while line := await process.stdout.readline():
            print(f"   {line.decode().rstrip()}", flush=True)
            if b"Sampling" in line:
                break
    drain = asyncio.create_task(_echo(process.stdout))
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        await process.wait()
        await drain
    if collapsed.exists():
        top = summarize(collapsed.read_text())
        stem.with_name(stem.name + "-top.txt").write_text(top)
        print(f"\nprofile of the server ({collapsed}):\n{top}", flush=True)


async def _echo(stream: asyncio.StreamReader) -> None:
    while line := await stream.readline():
        print(f"   {line.decode().rstrip()}", flush=True)


def summarize(collapsed: str, top: int = _TOP) -> str:
    """Functions by share of samples: own (at the top of the stack) and inclusive."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "no samples\n"
    lines = [f"{total} samples", "", "own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "inclusive time:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"
