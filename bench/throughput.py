"""Item 2 (a, b): a job writing fast, with no reader and with one follower over gRPC.

(a) The job's own run time (start to end, as its record says) with nobody reading,
versus the same command run here with stdout on /dev/null (the baseline),
into a file next to the output logs, and through a pipe into such a file by ``cat``.
Keeping output cannot cost less than writing it to a file, so those two say how
much of the gap to /dev/null is the product's.
(b) One follower receiving the output over mTLS, live (attached as the job starts)
and replayed (after it ended), versus the minimal grpc.aio mTLS server streaming a
file of the same bytes with the same message size (the mean size of the product's
messages in the same repeat: one message per output-log record, which is one read
of the job's pipe by its shim, at most 1 MiB), and versus reading that file locally.
"""

from __future__ import annotations

from collections import defaultdict

from bench.client import Stub, channel, job_seconds, read_stream, wait_ended
from bench.client import stub as stub_for
from bench.harness import Harness, Product
from bench.processes import ServiceProcess
from bench.streams import (
    mb_per_s,
    read_locally,
    time_through_pipe_to_file,
    time_to_devnull,
    time_to_file,
    writer,
    zeros_file,
)
from jobworker.v1 import jobworker_pb2 as pb


async def run(h: Harness) -> None:
    """Measure and record items 2a and 2b."""
    figures: defaultdict[str, list[float]] = defaultdict(list)
    product, raw = await h.product(), await h.raw()
    async with (
        channel(product.server.address, h.tls_dir) as chan,
        channel(raw.address, h.tls_dir) as raw_chan,
    ):
        stub = stub_for(chan)
        await _no_reader(h, product, stub, figures)
        await _one_follower(h, product, stub, (raw, stub_for(raw_chan)), figures)
    _record(h, figures)


async def _no_reader(
    h: Harness, product: Product, stub: Stub, figures: dict[str, list[float]]
) -> None:
    size = h.settings.sizes.throughput_bytes
    baseline_file = product.state_dir / "baseline.out"
    for _ in range(h.settings.sizes.throughput_repeats):
        figures["devnull"].append(await time_to_devnull(size))
        figures["file"].append(await time_to_file(size, baseline_file))
        figures["pipe"].append(await time_through_pipe_to_file(size, baseline_file))
        job = await stub.StartJob(writer(size))
        ended = await wait_ended(stub, job.id)
        figures["alone"].append(job_seconds(ended))
        product.output_log(job.id).unlink()


async def _one_follower(
    h: Harness,
    product: Product,
    stub: Stub,
    raw: tuple[ServiceProcess, Stub],
    figures: dict[str, list[float]],
) -> None:
    raw_server, raw_stub = raw
    size = h.settings.sizes.stream_bytes
    source = zeros_file(h.work_dir, size)
    for _ in range(h.settings.sizes.throughput_repeats):
        async with h.profiled("stream_1", product.server):
            job = await stub.StartJob(writer(size))
            live = await read_stream(stub, pb.StreamJobOutputRequest(id=job.id, follow=True))
        if live.data_bytes != size:
            raise RuntimeError(f"the follower got {live.data_bytes} bytes of {size}")
        figures["live"].append(mb_per_s(size, live.seconds))
        figures["data"].append(mb_per_s(size, live.last_data_at - live.began_at))
        replay = await read_stream(stub, pb.StreamJobOutputRequest(id=job.id))
        product.output_log(job.id).unlink()
        figures["replay"].append(mb_per_s(replay.data_bytes, replay.seconds))

        message = max(1, round(live.data_bytes / max(1, live.messages)))
        figures["message"].append(message / 1024)
        request = pb.StreamJobOutputRequest(id=str(source), offset=message)
        async with h.profiled("stream_raw", raw_server):
            baseline = await read_stream(raw_stub, request)
        figures["raw"].append(mb_per_s(baseline.data_bytes, baseline.seconds))
        figures["local"].append(mb_per_s(size, read_locally(source, message)))


def _record(h: Harness, figures: dict[str, list[float]]) -> None:
    r = h.report
    r.add("out_devnull", "baseline: head -c N /dev/zero > /dev/null", "s", figures["devnull"])
    r.add("out_file", "baseline: head -c N /dev/zero > file (state dir)", "s", figures["file"])
    r.add("out_pipe", "baseline: head -c N /dev/zero | cat > file", "s", figures["pipe"])
    r.add("out_alone", "job writing N, no reader (job's own run time)", "s", figures["alone"])
    r.add("stream_live", "one follower over gRPC, live", "MB/s", figures["live"])
    r.add("stream_data", "one follower live, to the last byte", "MB/s", figures["data"])
    r.add("stream_replay", "one follower over gRPC, after the job ended", "MB/s", figures["replay"])
    r.add("stream_raw", "baseline: minimal grpc.aio mTLS file stream", "MB/s", figures["raw"])
    r.add("stream_local", "baseline: local file read", "MB/s", figures["local"])
    r.add("stream_message", "mean message size of the follower's stream", "KiB", figures["message"])
    r.compare(
        "out_alone",
        "job no reader / same command to /dev/null",
        "out_alone",
        "out_devnull",
        target=1.5,
    )
    r.compare("out_file", "job no reader / same command to a file", "out_alone", "out_file")
    r.compare("out_pipe", "job no reader / same command | cat > file", "out_alone", "out_pipe")
    r.compare(
        "stream_live", "one follower live / raw gRPC", "stream_live", "stream_raw",
        higher_is_better=True, target=0.8,
    )  # fmt: skip
    r.compare(
        "stream_data", "one follower live, to the last byte / raw", "stream_data", "stream_raw",
        higher_is_better=True,
    )  # fmt: skip
    r.compare(
        "stream_replay", "one follower replay / raw gRPC", "stream_replay", "stream_raw",
        higher_is_better=True, target=0.8,
    )  # fmt: skip
    r.compare(
        "stream_local", "one follower live / local file read", "stream_live", "stream_local",
        higher_is_better=True,
    )  # fmt: skip
