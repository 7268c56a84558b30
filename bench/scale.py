"""Item 3: a thousand sleeping jobs at once, and a hundred thousand records.

Service memory (the server's RSS, and the whole machine's MemAvailable, which also
counts each job's shim and init), StartJob p50 at that load versus idle, the time to
list the running jobs over the API (all pages), and the time to stop them all at once.
Then what a ListJobs page costs at 100 records and at 100,000 (``pages``).
"""

from __future__ import annotations

import asyncio
import time

import grpc

from bench import pages
from bench.client import Stub, channel
from bench.client import stub as stub_for
from bench.harness import Harness
from bench.processes import memory_available_mib
from jobworker.v1 import jobworker_pb2 as pb

_RAMP_CONCURRENCY = 16
_STOP_CONCURRENCY = 32
_LIST_REPEATS = 5


async def _starts(stub: Stub, request: pb.StartJobRequest, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        await stub.StartJob(request)
        samples.append((time.perf_counter() - began) * 1000)
    return samples


async def _list_running(stub: Stub) -> int:
    count, token = 0, ""
    while True:
        page = await stub.ListJobs(pb.ListJobsRequest(page_size=1000, page_token=token))
        count += len(page.jobs)
        token = page.next_page_token
        if not token:
            return count


async def _time_listing(stub: Stub, expected: int) -> list[float]:
    """Milliseconds to list every running job, ``_LIST_REPEATS`` times."""
    samples = []
    for _ in range(_LIST_REPEATS):
        began = time.perf_counter()
        listed = await _list_running(stub)
        samples.append((time.perf_counter() - began) * 1000)
        if listed < expected:  # (a probe job may not have been recorded as ended yet)
            raise RuntimeError(f"ListJobs listed {listed} running jobs, not {expected}")
    return samples


async def _stop_all(stub: Stub, ids: list[str]) -> tuple[float, list[str]]:
    """Seconds to stop every job, ``_STOP_CONCURRENCY`` calls at a time, and the errors."""
    gate = asyncio.Semaphore(_STOP_CONCURRENCY)
    errors: list[str] = []

    async def stop(job_id: str) -> None:
        async with gate:
            request = pb.StopJobRequest(id=job_id)
            request.grace_period.FromSeconds(5)
            try:
                await stub.StopJob(request)
            except grpc.aio.AioRpcError as error:
                errors.append(f"{error.code().name}: {error.details()}")

    began = time.perf_counter()
    await asyncio.gather(*(stop(job_id) for job_id in ids))
    return time.perf_counter() - began, errors


async def run(h: Harness) -> None:
    """Measure and record item 3."""
    sizes = h.settings.sizes
    namespaces = {name: False for name in sizes.scale_namespaces}
    probe = pb.StartJobRequest(command="/bin/true", namespaces=namespaces)
    sleeper = pb.StartJobRequest(command="sleep", args=["3600"], namespaces=namespaces)
    r = h.report
    product = await h.product()
    server = product.server
    async with channel(server.address, h.tls_dir) as chan:
        stub = stub_for(chan)
        await _starts(stub, probe, 5)  # warm-up
        await asyncio.sleep(1.0)
        idle_rss, idle_available = server.rss_mib(), memory_available_mib()
        idle = await _starts(stub, probe, sizes.scale_starts)

        gate = asyncio.Semaphore(_RAMP_CONCURRENCY)

        async def start() -> str:
            async with gate:
                return (await stub.StartJob(sleeper)).id

        began = time.perf_counter()
        async with h.profiled("scale_ramp", server):
            ids = await asyncio.gather(*(start() for _ in range(sizes.scale_jobs)))
        ramp = time.perf_counter() - began
        await asyncio.sleep(1.0)
        load_rss, load_available = server.rss_mib(), memory_available_mib()
        async with h.profiled("scale_start", server):
            loaded = await _starts(stub, probe, sizes.scale_starts)

        jobs = sizes.scale_jobs
        r.add("scale_start_idle", "StartJob at idle (/bin/true)", "ms", idle)
        r.add("scale_start_load", f"StartJob with {jobs} jobs running", "ms", loaded)
        r.add(
            "scale_ramp", f"start {jobs} sleeping jobs ({_RAMP_CONCURRENCY} at a time)", "s", [ramp]
        )
        r.add("scale_rss_idle", "service RSS idle", "MiB", [idle_rss])
        r.add("scale_rss_load", f"service RSS with {jobs} jobs", "MiB", [load_rss])
        r.add(
            "scale_rss_per_job", "service RSS per job", "KiB", [(load_rss - idle_rss) * 1024 / jobs]
        )
        used = idle_available - load_available
        r.add(
            "scale_machine_per_job",
            "machine memory per job (MemAvailable; shims too)",
            "KiB",
            [used * 1024 / jobs],
        )
        r.compare(
            "scale_start",
            f"StartJob p50 with {jobs} running / idle",
            "scale_start_load",
            "scale_start_idle",
        )
        listing = await _time_listing(stub, jobs)
        r.add("scale_list", f"ListJobs, all {jobs} running (pages of 1000)", "ms", listing)
        async with h.profiled("scale_stop", server):
            stop_all, errors = await _stop_all(stub, ids)
        r.add(
            "scale_stop_all",
            f"stop all {jobs} ({_STOP_CONCURRENCY} calls at a time)",
            "s",
            [stop_all],
        )
        if errors:
            r.notes.append(f"{len(errors)} of {jobs} StopJob calls failed, e.g. {errors[0]}")
    small, large = await asyncio.to_thread(pages.page_milliseconds)
    few, many = (f"{size:,}" for size in pages.SIZES)
    each = f"ListJobs page of {pages.PAGE} (record store)"
    r.add("scale_page_few", f"{each} at {few} records", "ms", small)
    r.add("scale_page_many", f"{each} at {many} records", "ms", large)
    r.compare(
        "scale_page",
        f"ListJobs page at {many} / {few} records",
        "scale_page_many",
        "scale_page_few",
    )
