"""One job cannot wedge the service:

- a root job that makes a cgroup inside its own ends and is stopped, and the
  service starts again past such a group left behind;
- one failed fork leaves the fork server serving later starts;
- a fork server started from a folder others can write imports no code from it;
- a damaged record or state file makes only its own job lost;
- jobs that set no limits get the server's defaults, and all jobs together stay
  within their budget, so they cannot take every process the host has.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from jobworker.isolation._protocol import ShimState
from jobworker.isolation.cgroups import CgroupHost
from jobworker.isolation.launcher import Launcher
from jobworker.isolation.limits import Limits
from jobworker.isolation.rundir import RunDir
from jobworker.runner.errors import CapacityExhausted
from jobworker.runner.records import JobState
from jobworker.runner.runner import Runner, RunnerConfig, StartRequest
from tests.privileged.helpers import Jobs, run
from tests.privileged.runner_helpers import (
    CGROUP_ROOT,
    remove_cgroup_tree,
    sh,
    until_ended,
    wait_for_output,
    with_runner,
)

pytestmark = pytest.mark.privileged

OWN_GROUP = "/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)"
NESTED = f"mkdir {OWN_GROUP}/nested && echo $$ > {OWN_GROUP}/nested/cgroup.procs && echo ready"


HOG = """
import os, sys, time
for _ in range(60):
    try:
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
    except OSError:  # unlike a shell, it keeps what it has when a fork fails
        break
print("holding", flush=True)
time.sleep(600)
"""
"""Takes as many processes as it is given, and holds them."""


def as_root(script: str) -> StartRequest:
    return sh(script, user="root", by_admin=True)


async def first_refusal(
    runner: Runner, *, attempts: int, pause: float = 0.0
) -> CapacityExhausted | None:
    """Start short jobs one after another until one is refused for lack of resources."""
    for _ in range(attempts):
        try:
            job = await runner.start(sh("true"), owner="bob")
        except CapacityExhausted as error:
            return error
        await until_ended(runner, job.id)
        await asyncio.sleep(pause)
    return None


def test_a_job_that_nests_a_cgroup_in_its_own_ends_and_is_stopped(config: RunnerConfig) -> None:
    async def body(runner: Runner) -> None:
        finished = await runner.start(as_root(NESTED), owner="admin")
        await until_ended(runner, finished.id)
        record = await runner.get(finished.id)
        assert (record.state, record.exit_code) == (JobState.EXITED, 0), record.note

        running = await runner.start(as_root(f"{NESTED}; exec sleep 600"), owner="admin")
        await wait_for_output(runner, running.id, b"ready")
        stopped = await runner.stop(running.id, grace=0, by="admin")
        assert stopped.state is JobState.STOPPED
        assert stopped.signal == signal.SIGKILL
        group = CGROUP_ROOT / str(config.cgroup_parent).lstrip("/") / "jobs" / running.id
        assert not group.exists()

    with_runner(config, body)


def test_the_service_starts_past_a_nested_group_left_by_a_job_whose_shim_died(
    config: RunnerConfig,
) -> None:
    async def scenario() -> None:
        runner = await Runner.open(config)
        job = await runner.start(as_root(f"{NESTED}; exec sleep 600"), owner="admin")
        await wait_for_output(runner, job.id, b"ready")
        await runner.close()  # the job runs on, as after a restart
        state_file = RunDir(config.state_dir / "jobs" / job.id).shim_state
        # Nobody is left to tear the job down.
        os.kill(ShimState.decode(state_file.read_text()).shim_pid, signal.SIGKILL)
        runner = await Runner.open(config)
        try:
            record = await runner.get(job.id)
            assert record.state is JobState.LOST
            assert "shim ended without recording an outcome" in (record.note or "")
            assert runner.running() == 0
            again = await runner.start(sh("echo fine"), owner="bob")
            await until_ended(runner, again.id)
            assert (await runner.get(again.id)).exit_code == 0
        finally:
            await runner.close()

    run(scenario())


def test_the_fork_server_survives_a_failed_fork(config: RunnerConfig) -> None:
    supervisor = CGROUP_ROOT / str(config.cgroup_parent).lstrip("/") / "supervisor"

    async def body(runner: Runner) -> None:
        # This test process may have been put there (it opened the runner); its threads
        # must not count. Then no process more in the group: the fork server cannot fork.
        (CGROUP_ROOT / "cgroup.procs").write_text(str(os.getpid()))
        (supervisor / "pids.max").write_text((supervisor / "pids.current").read_text())
        # The jobs run on, so their shims keep every process of the group taken: a job
        # that ended would free its shim's, and the next fork could succeed.
        held: list[str] = []
        refused = None
        try:
            for _ in range(5):  # the spares forked before go first
                try:
                    held.append((await runner.start(sh("exec sleep 600"), owner="bob")).id)
                except CapacityExhausted as error:
                    refused = error
                    break
            assert refused is not None, "every start succeeded without a fork"
            assert "could not create a process (Resource temporarily unavailable)" in str(refused)
            (supervisor / "pids.max").write_text("max")
            record = await runner.start(sh("echo back"), owner="bob")
            await until_ended(runner, record.id)
            assert (await runner.get(record.id)).exit_code == 0
        finally:
            (supervisor / "pids.max").write_text("max")
            for job_id in held:
                await runner.stop(job_id, grace=0, by="bob")

    with_runner(config, body)


def test_the_fork_server_imports_nothing_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported-from-cwd"
    planted = tmp_path / "cwd" / "jobworker" / "isolation"
    planted.mkdir(parents=True)
    (planted / "__init__.py").write_text("")
    (planted / "_forkserver.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(tmp_path / "cwd")
    parent = f"/jobworker-test-{uuid.uuid4().hex[:8]}"
    launcher = Launcher.start(CgroupHost.discover(parent=parent))
    try:
        finished = run(Jobs(launcher, tmp_path).complete("true"))
        assert finished.outcome.exit_code == 0
        assert not marker.exists(), "the fork server ran code from the working directory"
    finally:
        run(launcher.close())
        remove_cgroup_tree(parent)


def test_damaged_records_and_state_files_make_only_their_jobs_lost(config: RunnerConfig) -> None:
    async def scenario() -> None:
        runner = await Runner.open(config)
        jobs = {}
        for name in ("record", "shim_state", "outcome", "healthy"):
            script = "sleep 3" if name == "outcome" else "sleep 600"
            jobs[name] = (await runner.start(sh(script), owner="bob")).id
        await runner.close()  # the jobs run on
        run_dirs = config.state_dir / "jobs"
        with sqlite3.connect(config.state_dir / "jobworker.db") as db:
            db.execute("UPDATE jobs SET record = '{broken' WHERE id = ?", (jobs["record"],))
        RunDir(run_dirs / jobs["shim_state"]).shim_state.write_text("{not json")
        outcome = RunDir(run_dirs / jobs["outcome"]).outcome
        while not outcome.exists():
            await asyncio.sleep(0.2)  # that job ends while no service runs
        outcome.write_text('{"exit_code": 0}')

        runner = await Runner.open(config)
        try:
            notes = {}
            for name, job_id in jobs.items():
                record = await runner.get(job_id)
                notes[name] = record.note or ""
                assert record.state is (JobState.RUNNING if name == "healthy" else JobState.LOST)
            assert "record is damaged" in notes["record"]
            assert "shim state file" in notes["shim_state"]
            assert "outcome file" in notes["outcome"]
            assert runner.running() == 1
            listed = {record.id for record in (await runner.list_jobs(page_size=10)).records}
            assert listed == set(jobs.values())
            await runner.stop(jobs["healthy"], grace=0, by="bob")
        finally:
            await runner.close()

    run(scenario())


def test_jobs_that_ask_for_no_limits_get_the_servers_defaults(config: RunnerConfig) -> None:
    bomb = "bomb() { bomb | bomb & }; bomb; sleep 5"
    small = replace(config, default_limits=Limits(pids=32))

    async def body(runner: Runner) -> None:
        bomber = await runner.start(sh(bomb), owner="mallory")
        neighbour = await runner.start(
            sh("for i in 1 2 3 4 5 6 7 8; do sleep 0.1 & done; wait; echo forked"), owner="bob"
        )
        await until_ended(runner, neighbour.id)
        record = await runner.get(neighbour.id)
        assert (record.state, record.exit_code) == (JobState.EXITED, 0)
        assert record.limits.pids == 32
        await runner.stop(bomber.id, grace=0, by="mallory")
        ended = await runner.get(bomber.id)
        assert ended.usage is not None
        assert ended.usage.pids_peak == 32  # the kernel held it there

    with_runner(small, body)


def test_all_jobs_together_stay_within_their_budget(config: RunnerConfig) -> None:
    budget = replace(config, jobs_pids=40, default_limits=Limits(pids=1000))

    async def body(runner: Runner) -> None:
        hog = await runner.start(StartRequest(command="python3", args=("-c", HOG)), owner="m")
        await wait_for_output(runner, hog.id, b"holding")
        refused = await first_refusal(runner, attempts=3)
        assert refused is not None, "jobs together exceeded their budget"
        assert "no process could be made for it" in str(refused)
        await runner.stop(hog.id, grace=0, by="m")
        usage = (await runner.get(hog.id)).usage
        assert usage is not None
        assert usage.pids_peak is not None
        # The job's own watermark may count the one fork that the parent's limit refused
        # (the kernel says as much in pids_try_charge).
        assert usage.pids_peak <= 40 + 1
        job = await runner.start(sh("echo again"), owner="bob")
        await until_ended(runner, job.id)
        assert (await runner.get(job.id)).exit_code == 0

    with_runner(budget, body)
