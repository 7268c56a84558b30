"""Item 4: the service's peak memory while a job writes a lot, with followers, versus idle."""

from __future__ import annotations

import asyncio

from bench.client import channel, read_stream
from bench.client import stub as stub_for
from bench.harness import Harness
from bench.streams import writer
from jobworker.v1 import jobworker_pb2 as pb


async def run(h: Harness) -> None:
    """Measure and record item 4."""
    sizes = h.settings.sizes
    product = await h.product()
    server = product.server
    async with channel(server.address, h.tls_dir) as chan:
        stub = stub_for(chan)
        # Warm up every code path once with a small job, so idle means "ready".
        job = await stub.StartJob(writer(4 << 20))
        await read_stream(stub, pb.StreamJobOutputRequest(id=job.id, follow=True))
        await asyncio.sleep(1.0)
        idle = server.rss_mib()
        server.reset_peak()
        job = await stub.StartJob(writer(sizes.flat_bytes))
        follow = pb.StreamJobOutputRequest(id=job.id, follow=True)
        stats = await asyncio.gather(
            *(read_stream(stub, follow) for _ in range(sizes.flat_followers))
        )
        peak = server.peak_mib()
    if any(s.data_bytes != sizes.flat_bytes for s in stats):
        raise RuntimeError(
            f"followers got {[s.data_bytes for s in stats]} bytes, not {sizes.flat_bytes}"
        )
    r = h.report
    gib = sizes.flat_bytes / (1 << 30)
    r.add("flat_idle", "service RSS idle", "MiB", [idle])
    r.add(
        "flat_peak",
        f"service peak RSS, {gib:g} GiB job + {sizes.flat_followers} followers",
        "MiB",
        [peak],
    )
    r.compare("flat", "service peak while streaming / idle", "flat_peak", "flat_idle")
