"""Limits below the maximum: memory.high, swap, cpuset and cpu.weight, enforced by the kernel."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import grpc
import pytest

from jobworker.isolation.errors import LimitUnenforceable
from jobworker.isolation.limits import Limits
from jobworker.isolation.namespaces import Namespaces
from jobworker.v1 import jobworker_pb2 as pb
from tests.privileged.api_helpers import Pki, client, running_server
from tests.privileged.helpers import Jobs, run
from tests.privileged.test_limits_enforced import BUSY_LOOP, cpu_share

pytestmark = pytest.mark.privileged

MiB = 1 << 20
HOG = "x = bytearray({size}); x[::4096] = b'y' * len(x[::4096]); print('survived', flush=True)"
"""Allocates and touches every page of ``size`` bytes, then says it lived."""


def hog(size: int) -> tuple[str, ...]:
    return (sys.executable, "-c", HOG.format(size=size))


@pytest.fixture
def swap(scratch_block_device: str) -> Iterator[str]:
    """The scratch disk as the host's swap, so that swap limits have something to limit."""
    subprocess.run(["mkswap", scratch_block_device], check=True, capture_output=True)
    subprocess.run(["swapon", scratch_block_device], check=True)
    try:
        yield scratch_block_device
    finally:
        subprocess.run(["swapoff", scratch_block_device], check=True)


def test_with_a_memory_limit_a_job_gets_no_swap_unless_it_asks(jobs: Jobs, swap: str) -> None:
    limited = Limits(memory_bytes=32 * MiB)
    without = run(jobs.complete(*hog(48 * MiB), limits=limited))
    assert without.outcome.oom_killed, "the host's swap let the job past its memory limit"
    assert b"survived" not in without.stdout

    swapping = Limits(memory_bytes=32 * MiB, memory_swap_bytes=64 * MiB)
    allowed = run(jobs.complete(*hog(48 * MiB), limits=swapping))
    assert allowed.outcome.exit_code == 0, allowed.stderr
    assert allowed.stdout == b"survived\n"
    assert not allowed.outcome.oom_killed
    assert allowed.outcome.usage.memory_max_events, "it never reached memory.max, so never swapped"


def test_swap_is_limited_too(jobs: Jobs, swap: str) -> None:
    tight = Limits(memory_bytes=32 * MiB, memory_swap_bytes=8 * MiB)
    finished = run(jobs.complete(*hog(64 * MiB), limits=tight))
    assert finished.outcome.oom_killed, "64 MiB fitted into 32 MiB of memory and 8 MiB of swap"


def test_memory_high_throttles_and_reclaims_without_killing(jobs: Jobs, swap: str) -> None:
    high = Limits(memory_high_bytes=16 * MiB, memory_swap_bytes=128 * MiB)
    throttled = run(jobs.complete(*hog(48 * MiB), limits=high))
    assert throttled.outcome.exit_code == 0, throttled.stderr
    assert not throttled.outcome.oom_killed
    assert throttled.outcome.usage.memory_high_events, "the kernel never throttled at memory.high"

    free = run(jobs.complete(*hog(48 * MiB), limits=Limits(memory_swap_bytes=128 * MiB)))
    assert free.outcome.exit_code == 0, free.stderr
    assert not free.outcome.usage.memory_high_events


def test_a_cpuset_confines_the_job_to_its_cpus(jobs: Jobs) -> None:
    probe = (
        "import os\n"
        "print(sorted(os.sched_getaffinity(0)))\n"
        "try:\n"
        "    os.sched_setaffinity(0, {0})\n"
        "except OSError as error:\n"
        "    print('refused', error.errno)\n"
    )
    finished = run(jobs.complete(sys.executable, "-c", probe, limits=Limits(cpuset="1")))
    assert finished.outcome.exit_code == 0, finished.stderr
    # The kernel keeps it on CPU 1, whatever it asks for itself (EINVAL = 22).
    assert finished.stdout == b"[1]\nrefused 22\n"


def test_a_cpu_outside_the_services_cpus_is_refused_before_anything_runs(jobs: Jobs) -> None:
    with pytest.raises(LimitUnenforceable, match="cpuset: CPU 64 is not online"):
        run(jobs.start("true", limits=Limits(cpuset="64")))


def test_cpu_weight_divides_a_contended_cpu(jobs: Jobs) -> None:
    async def scenario() -> tuple[float, float]:
        # Both on CPU 0, so they contend; the weights decide who gets how much.
        light = await jobs.start(
            *BUSY_LOOP, limits=Limits(cpuset="0", cpu_weight=100), namespaces=Namespaces.none()
        )
        heavy = await jobs.start(
            *BUSY_LOOP, limits=Limits(cpuset="0", cpu_weight=400), namespaces=Namespaces.none()
        )
        try:
            return await asyncio.gather(cpu_share(light, 6.0), cpu_share(heavy, 6.0))
        finally:
            await asyncio.gather(light.stop(0.5), heavy.stop(0.5))

    light, heavy = run(scenario())
    print(f"\ncpu.weight 100 vs 400 on one CPU: {light:.3f} vs {heavy:.3f} CPUs")
    assert light + heavy <= 1.1, "the cpuset let them run on more than one CPU"
    assert heavy > 2.5 * light, f"weight 400 got {heavy:.3f} CPUs, weight 100 got {light:.3f}"


def test_the_api_takes_them_shows_them_and_refuses_bad_ones(tmp_path: Path) -> None:
    pki = Pki.create(tmp_path / "pki")
    with running_server(pki, tmp_path / "state") as server, client(server, pki, "bob") as stub:
        limits = pb.Limits(
            memory_bytes=64 * MiB, memory_high_bytes=32 * MiB, cpuset="0", cpu_weight=50
        )
        job = stub.StartJob(
            pb.StartJobRequest(
                command="sh", args=["-c", "grep Cpus_allowed_list /proc/self/status"], limits=limits
            )
        )
        shown = pb.Limits()
        shown.CopyFrom(job.limits)
        shown.ClearField("pids")  # the default every job gets, a share of the kernel's tasks
        assert shown == limits
        output = b"".join(
            response.chunk.data
            for response in stub.StreamJobOutput(pb.StreamJobOutputRequest(id=job.id, follow=True))
        )
        assert output.split() == [b"Cpus_allowed_list:", b"0"]
        ended = stub.GetJob(pb.GetJobRequest(id=job.id))
        assert ended.usage.HasField("memory_high_events")
        assert ended.usage.HasField("memory_max_events")

        for bad, field in (
            (pb.Limits(memory_bytes=32 * MiB, memory_high_bytes=32 * MiB), "memory_high"),
            (pb.Limits(cpuset="1-0"), "cpuset"),
            (pb.Limits(cpu_weight=0), "cpu_weight"),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                stub.StartJob(pb.StartJobRequest(command="true", limits=bad))
            error = cast(grpc.Call, refused.value)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (error.details() or "").startswith(f"{field}: "), error.details()
