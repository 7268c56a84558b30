"""Helpers shared by the output items: the writing job, baselines' files, local reads."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from bench.client import ALL_NAMESPACES_OFF
from bench.settings import MIB
from jobworker.v1 import jobworker_pb2 as pb


def writer(size: int) -> pb.StartJobRequest:
    """A job writing ``size`` zero bytes to stdout as fast as it can (no limits)."""
    return pb.StartJobRequest(
        command="head", args=["-c", str(size), "/dev/zero"], namespaces=ALL_NAMESPACES_OFF
    )


async def time_to_devnull(size: int) -> float:
    """Seconds for the same command run by this process with stdout on /dev/null."""
    began = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        "head", "-c", str(size), "/dev/zero", stdout=asyncio.subprocess.DEVNULL
    )
    await process.wait()
    return time.perf_counter() - began


async def time_to_file(size: int, path: Path) -> float:
    """Seconds for the same command writing into a file on ``path``'s filesystem (removed)."""
    with path.open("wb") as file:
        began = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            "head", "-c", str(size), "/dev/zero", stdout=file
        )
        await process.wait()
        elapsed = time.perf_counter() - began
    path.unlink()
    return elapsed


async def time_through_pipe_to_file(size: int, path: Path) -> float:
    """Seconds for the same command with its stdout captured through a pipe into a file.

    ``cat`` reading the pipe is the least any capture through a pipe can cost: it is
    what the job's shim does, minus the framing and the bookkeeping.
    """
    with path.open("wb") as file:
        read_end, write_end = os.pipe()
        began = time.perf_counter()
        job = await asyncio.create_subprocess_exec(
            "head", "-c", str(size), "/dev/zero", stdout=write_end
        )
        os.close(write_end)
        cat = await asyncio.create_subprocess_exec("cat", stdin=read_end, stdout=file)
        os.close(read_end)
        await job.wait()
        await cat.wait()
        elapsed = time.perf_counter() - began
    path.unlink()
    return elapsed


def zeros_file(directory: Path, size: int) -> Path:
    """A file of ``size`` zero bytes (the bytes the writing job outputs), made once."""
    path = directory / f"zeros-{size}"
    if not path.exists() or path.stat().st_size != size:
        block = bytes(MIB)
        with path.open("wb") as file:
            for start in range(0, size, MIB):
                file.write(block[: min(MIB, size - start)])
    return path


def read_locally(path: Path, message_size: int) -> float:
    """Seconds to read ``path`` with reads of ``message_size`` (a warm page cache)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        began = time.perf_counter()
        while os.read(fd, message_size):
            pass
        return time.perf_counter() - began
    finally:
        os.close(fd)


def mb_per_s(size: int, seconds: float) -> float:
    """Throughput in MB/s (10^6 bytes per second)."""
    return size / seconds / 1e6
