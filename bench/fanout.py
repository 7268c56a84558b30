"""Item 2c: 16 and 64 followers of one job at once, versus the same fan-out of raw gRPC.

Every follower has its own channel (its own TLS connection), opened before the job
starts. Aggregate throughput is all followers' bytes over the time until the last
one finished. The service's peak memory (VmHWM, reset before each run) should not
grow with the bytes streamed; the raw server's peak is shown for comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from bench.client import StreamStats, channel, read_stream
from bench.client import stub as stub_for
from bench.harness import Harness
from bench.processes import ServiceProcess
from bench.streams import mb_per_s, writer, zeros_file
from jobworker.v1 import jobworker_pb2 as pb


async def _fan_out(
    server: ServiceProcess,
    h: Harness,
    count: int,
    request: pb.StreamJobOutputRequest | None,
    job: pb.StartJobRequest | None = None,
) -> tuple[float, list[StreamStats]]:
    """Seconds until ``count`` followers have all read the stream; starts ``job`` first if given."""
    async with contextlib.AsyncExitStack() as stack:
        stubs = [
            stub_for(await stack.enter_async_context(channel(server.address, h.tls_dir)))
            for _ in range(count)
        ]
        await asyncio.gather(
            *(s.GetJob(pb.GetJobRequest(id="x")) for s in stubs), return_exceptions=True
        )
        if job is not None:  # timed from when it runs: the same work as the raw server's
            started = await stubs[0].StartJob(job)
            request = pb.StreamJobOutputRequest(id=started.id, follow=True)
        began = time.perf_counter()
        assert request is not None
        stats = await asyncio.gather(*(read_stream(stub, request) for stub in stubs))
        return time.perf_counter() - began, list(stats)


async def run(h: Harness) -> None:
    """Measure and record item 2c."""
    size = h.settings.sizes.fanout_bytes
    source = zeros_file(h.work_dir, size)
    r = h.report
    product, raw = await h.product(), await h.raw()
    for count in h.settings.sizes.fanout_followers:
        aggregate: list[float] = []
        raw_aggregate: list[float] = []
        peak: list[float] = []
        raw_peak: list[float] = []
        idle = product.server.rss_mib()
        for _ in range(h.settings.sizes.fanout_repeats):
            product.server.reset_peak()
            async with h.profiled(f"fanout_{count}", product.server):
                seconds, stats = await _fan_out(product.server, h, count, None, writer(size))
            peak.append(product.server.peak_mib())
            received = sum(s.data_bytes for s in stats)
            if received != count * size:
                raise RuntimeError(f"{count} followers got {received} bytes, not {count * size}")
            aggregate.append(mb_per_s(received, seconds))
            for path in (product.state_dir / "jobs").glob("*/output.log"):
                path.unlink()
            message = max(1, round(received / max(1, sum(s.messages for s in stats))))
            raw.reset_peak()
            request = pb.StreamJobOutputRequest(id=str(source), offset=message)
            seconds, stats = await _fan_out(raw, h, count, request)
            raw_peak.append(raw.peak_mib())
            raw_aggregate.append(mb_per_s(sum(s.data_bytes for s in stats), seconds))
        r.add(f"fanout_{count}", f"{count} followers over gRPC, aggregate", "MB/s", aggregate)
        r.add(
            f"fanout_raw_{count}",
            f"baseline: {count} raw gRPC streams, aggregate",
            "MB/s",
            raw_aggregate,
        )
        r.add(f"fanout_idle_{count}", f"service RSS before {count} followers", "MiB", [idle])
        r.add(f"fanout_peak_{count}", f"service peak RSS with {count} followers", "MiB", peak)
        r.add(
            f"fanout_raw_peak_{count}",
            f"raw server peak RSS with {count} streams",
            "MiB",
            raw_peak,
        )
        r.compare(
            f"fanout_{count}", f"{count} followers / raw gRPC fan-out", f"fanout_{count}",
            f"fanout_raw_{count}", higher_is_better=True, target=0.7,
        )  # fmt: skip
        r.compare(
            f"fanout_peak_{count}", f"service peak with {count} followers / raw server peak",
            f"fanout_peak_{count}", f"fanout_raw_peak_{count}",
        )  # fmt: skip
