"""``python -m bench [--preset vm|full] [--sections ...] [sizes...]``: run, print, write JSON.

Needs root and a real cgroup v2 hierarchy (``scripts/bench`` provides one, in the test
VM if this host has none). Each section starts its own server process and removes it
and its state afterwards.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import sys
import time
import traceback
from collections.abc import Awaitable, Callable

from bench import fanout, flat, latency, scale, throughput
from bench.client import make_certificates
from bench.harness import Harness
from bench.report import Report
from bench.settings import Settings, machine, parse

SECTIONS: dict[str, Callable[[Harness], Awaitable[None]]] = {
    "latency": latency.run,
    "throughput": throughput.run,
    "fanout": fanout.run,
    "scale": scale.run,
    "flat": flat.run,
}


def _sizes(settings: Settings) -> dict[str, object]:
    return {
        "preset": settings.preset,
        **dataclasses.asdict(settings.sizes),
        "io_device": settings.io_device,
        "profile": settings.profile,
    }


async def _sections(settings: Settings, harness: Harness) -> int:
    report = harness.report
    failed = 0
    for name in settings.sections:
        began = time.monotonic()
        print(f"\n== {name}", flush=True)
        try:
            await SECTIONS[name](harness)
        except Exception:  # one failed section must not lose the others' figures
            failed = 1
            traceback.print_exc()
            report.notes.append(f"section {name} failed: {traceback.format_exc(limit=1).strip()}")
        seconds = time.monotonic() - began
        report.add(f"section_{name}_seconds", f"(section {name}: wall time)", "s", [seconds])
        print(f"   {seconds:.0f}s", flush=True)
    return failed


async def _main(settings: Settings) -> int:
    shutil.rmtree(settings.work_dir, ignore_errors=True)
    settings.work_dir.mkdir(parents=True)
    tls_dir = settings.work_dir / "tls"
    make_certificates(tls_dir)
    report = Report(machine=machine(), sizes=_sizes(settings))
    harness = Harness(settings, report, tls_dir)
    print(f"sizes: {report.sizes}", flush=True)
    failed = 0
    try:
        failed = await _sections(settings, harness)
    finally:
        await harness.close()
    print(f"\nsizes: {report.sizes}")
    print(f"machine: {report.machine}")
    print(report.table(), flush=True)
    report.write_json(settings.json_path)
    print(f"\nJSON: {settings.json_path}")
    shutil.rmtree(settings.work_dir, ignore_errors=True)
    return failed


def main() -> None:
    """Entry point of ``python -m bench``."""
    sys.exit(asyncio.run(_main(parse())))


if __name__ == "__main__":
    main()
