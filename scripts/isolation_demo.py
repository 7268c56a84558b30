"""Show the isolation layer doing its job on a real cgroup v2 kernel (run as root).

scripts/demo runs this inside the test VM when the host cannot enforce cgroup
v2 limits, and directly when it can.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

from jobworker.isolation.cgroups import CgroupHost
from jobworker.isolation.errors import IsolationError
from jobworker.isolation.launcher import Launcher, RunningJob
from jobworker.isolation.limits import Limits
from jobworker.isolation.outcome import Outcome
from jobworker.isolation.outputlog import Kind, OutputLogReader
from jobworker.isolation.spec import JobSpec


def say(text: str) -> None:
    print(text, flush=True)


def describe(outcome: Outcome) -> str:
    ended = (
        f"exit code {outcome.exit_code}"
        if outcome.signal is None
        else f"killed by {outcome.signal_name}"
    )
    usage = outcome.usage
    return (
        f"{ended}, oom_killed={outcome.oom_killed}, cpu user {usage.cpu_user_usec} us, "
        f"memory peak {usage.memory_peak_bytes} B, pids peak {usage.pids_peak}"
    )


def output(job: RunningJob) -> str:
    with OutputLogReader(job.output_log) as reader:
        return b"".join(r.data for r in reader.records() if r.kind is Kind.DATA).decode()


async def demo(root: Path) -> None:
    launcher = Launcher.start(CgroupHost.discover(parent="/jobworker-demo"))

    async def start(*argv: str, **options: object) -> RunningJob:
        job_id = str(uuid.uuid4())
        (root / job_id).mkdir()
        spec = JobSpec(job_id=job_id, argv=argv, run_dir=root / job_id, **options)  # type: ignore[arg-type]
        return await launcher.launch(spec)

    try:
        say("1. A job in fresh pid, mount, net, uts and ipc namespaces:")
        script = (
            "hostname; ls /proc | grep -c '^[0-9]'; cat /proc/net/dev | tail -n +3 | cut -d: -f1"
        )
        job = await start("sh", "-c", script)
        say(f"   {describe(await job.wait())}")
        say("   it saw: " + " | ".join(output(job).split()))

        say("2. A busy loop limited to 0.25 cores, measured by the kernel over 3 s:")
        job = await start("sh", "-c", "while :; do :; done", limits=Limits(cpu_cores=0.25))
        await asyncio.sleep(1)
        before, started = _usage(job), time.monotonic()
        await asyncio.sleep(3)
        share = (_usage(job) - before) / 1e6 / (time.monotonic() - started)
        say(f"   got {share:.2f} CPUs; stopping it: {describe(await job.stop(grace=1))}")

        say("3. A memory hog with a 32 MiB limit:")
        hog = f"x = b'x' * ({256 << 20})"
        job = await start(sys.executable, "-c", hog, limits=Limits(memory_bytes=32 << 20))
        say(f"   {describe(await job.wait())}")

        say("4. A command that does not exist fails at launch, with the reason:")
        try:
            await start("no-such-command")
        except IsolationError as error:
            say(f"   {type(error).__name__}: {error}")
    finally:
        await launcher.close()


def _usage(job: RunningJob) -> int:
    usage = job.cgroup.usage()
    return (usage.cpu_user_usec or 0) + (usage.cpu_system_usec or 0)


if __name__ == "__main__":
    try:
        with tempfile.TemporaryDirectory(prefix="jobworker-demo-") as scratch:
            asyncio.run(demo(Path(scratch)))
    except IsolationError as error:
        sys.exit(f"jobworker demo: {error}")
