"""A stand-in for the service, for restart tests: opens a Runner, starts one job, waits.

    python -m tests.privileged.service_process STATE_DIR CGROUP_PARENT HOME_ROOT -- COMMAND...

Prints the job id on a line of its own once the job runs, then waits until it
is killed (tests kill it with SIGKILL to simulate a crash).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from jobworker.runner.runner import Runner, RunnerConfig, StartRequest


async def serve(state_dir: Path, cgroup_parent: str, home_root: Path, argv: list[str]) -> None:
    config = RunnerConfig(state_dir=state_dir, cgroup_parent=cgroup_parent, home_root=home_root)
    runner = await Runner.open(config)
    record = await runner.start(StartRequest(command=argv[0], args=tuple(argv[1:])), owner="alice")
    print(record.id, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    state, parent, homes, separator, *command = sys.argv[1:]
    assert separator == "--", "usage: STATE_DIR CGROUP_PARENT HOME_ROOT -- COMMAND..."
    asyncio.run(serve(Path(state), parent, Path(homes), command))
