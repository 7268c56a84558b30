"""Item 2c: 16 and 64 followers of one job at once, versus the same fan-out of raw gRPC.

Every follower has its own channel (its own TLS connection), opened before the job
starts. Aggregate throughput is all followers' bytes over the time until the last
one finished. The service's peak memory (VmHWM, reset before each run) should not
grow with the bytes streamed; the raw server's peak is shown for comparison.

The headline, which its target is judged on, is the live fan-out: followers
attached before the job writes, each stream ending once the job's final record is
stored. Two more figures say where a gap comes from, since the raw server streams a
finished file and stops at its end:

- the same live run timed to the last output byte instead of the end of the streams
  (the difference is the job's teardown: its shim's accounting, its outcome and its
  record made durable);
- a replay: as many followers again reading the same job after it ended, which is
  what the raw server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from bench.client import StreamStats, channel, read_stream
from bench.client import stub as stub_for
from bench.harness import Harness
from bench.processes import ServiceProcess
from bench.streams import mb_per_s, writer, zeros_file
from jobworker.isolation.rundir import RunDir
from jobworker.v1 import jobworker_pb2 as pb


@dataclass(frozen=True)
class FanOut:
    """What one fan-out run measured."""

    request: pb.StreamJobOutputRequest
    """What every follower asked for (for a started job: its id)."""
    seconds: float
    """Until the last follower's stream ended."""
    data_seconds: float
    """Until the last follower had its last output byte."""
    stats: list[StreamStats]

    @property
    def received(self) -> int:
        """Output bytes, all followers together."""
        return sum(s.data_bytes for s in self.stats)

    @property
    def message_size(self) -> int:
        """Mean bytes per message."""
        return max(1, round(self.received / max(1, sum(s.messages for s in self.stats))))


async def _fan_out(
    server: ServiceProcess,
    h: Harness,
    count: int,
    request: pb.StreamJobOutputRequest | None,
    job: pb.StartJobRequest | None = None,
) -> FanOut:
    """``count`` followers all reading one stream at once; starts ``job`` first if given."""
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
        stats = list(await asyncio.gather(*(read_stream(stub, request) for stub in stubs)))
        ended = time.perf_counter()
        last_data = max(s.last_data_at for s in stats)
        return FanOut(request, ended - began, last_data - began, stats)


async def run(h: Harness) -> None:
    """Measure and record item 2c."""
    size = h.settings.sizes.fanout_bytes
    source = zeros_file(h.work_dir, size)
    product, raw = await h.product(), await h.raw()
    for count in h.settings.sizes.fanout_followers:
        figures: dict[str, list[float]] = {
            k: [] for k in ("live", "data", "replay", "raw", "peak", "raw_peak", "message")
        }
        idle = product.server.rss_mib()
        for _ in range(h.settings.sizes.fanout_repeats):
            product.server.reset_peak()
            async with h.profiled(f"fanout_{count}", product.server):
                live = await _fan_out(product.server, h, count, None, writer(size))
            figures["peak"].append(product.server.peak_mib())
            if live.received != count * size:
                raise RuntimeError(
                    f"{count} followers got {live.received} bytes, not {count * size}"
                )
            figures["live"].append(mb_per_s(live.received, live.seconds))
            figures["data"].append(mb_per_s(live.received, live.data_seconds))
            figures["message"].append(live.message_size / 1024)
            replay = pb.StreamJobOutputRequest(id=live.request.id, follow=True)
            again = await _fan_out(product.server, h, count, replay)
            figures["replay"].append(mb_per_s(again.received, again.seconds))
            for run_dir in (product.state_dir / "jobs").iterdir():
                RunDir(run_dir).output_log.unlink(missing_ok=True)
            raw.reset_peak()
            request = pb.StreamJobOutputRequest(id=str(source), offset=live.message_size)
            baseline = await _fan_out(raw, h, count, request)
            figures["raw_peak"].append(raw.peak_mib())
            figures["raw"].append(mb_per_s(baseline.received, baseline.seconds))
        _record(h, count, idle, figures)


def _record(h: Harness, count: int, idle: float, figures: dict[str, list[float]]) -> None:
    r = h.report
    n = count
    r.add(f"fanout_{n}", f"{n} followers over gRPC, live, aggregate", "MB/s", figures["live"])
    r.add(
        f"fanout_data_{n}",
        f"{n} followers live, aggregate to the last byte",
        "MB/s",
        figures["data"],
    )
    r.add(
        f"fanout_replay_{n}",
        f"{n} followers after the job ended, aggregate",
        "MB/s",
        figures["replay"],
    )
    r.add(f"fanout_raw_{n}", f"baseline: {n} raw gRPC streams, aggregate", "MB/s", figures["raw"])
    r.add(
        f"fanout_message_{n}", f"mean message size, {n} live followers", "KiB", figures["message"]
    )
    r.add(f"fanout_idle_{n}", f"service RSS before {n} followers", "MiB", [idle])
    r.add(f"fanout_peak_{n}", f"service peak RSS with {n} followers", "MiB", figures["peak"])
    r.add(
        f"fanout_raw_peak_{n}", f"raw server peak RSS with {n} streams", "MiB", figures["raw_peak"]
    )
    r.compare(
        f"fanout_{n}", f"{n} followers live / raw gRPC fan-out", f"fanout_{n}",
        f"fanout_raw_{n}", higher_is_better=True, target=0.7,
    )  # fmt: skip
    r.compare(
        f"fanout_data_{n}", f"{n} followers live, to the last byte / raw", f"fanout_data_{n}",
        f"fanout_raw_{n}", higher_is_better=True,
    )  # fmt: skip
    r.compare(
        f"fanout_replay_{n}", f"{n} followers after the end / raw gRPC fan-out",
        f"fanout_replay_{n}", f"fanout_raw_{n}", higher_is_better=True,
    )  # fmt: skip
    r.compare(
        f"fanout_peak_{n}", f"service peak with {n} followers / raw server peak",
        f"fanout_peak_{n}", f"fanout_raw_peak_{n}",
    )  # fmt: skip
