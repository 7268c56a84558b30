"""Jobs run as transient users of their own by default, and nothing lets them become root.

Were jobs root, one job could signal another and read its environment, and a setuid
binary would make a job root again: each test here shows that one of these cannot happen.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from jobworker.isolation.namespaces import Namespaces
from jobworker.runner.defaults import TRANSIENT_IDS
from jobworker.runner.errors import CapacityExhausted, InvalidConfiguration
from jobworker.runner.records import JobState
from jobworker.runner.runner import Runner, RunnerConfig
from tests.privileged.helpers import run
from tests.privileged.runner_helpers import (
    collect,
    sh,
    until_ended,
    wait_for_output,
    with_runner,
)

pytestmark = pytest.mark.privileged

FIRST, LAST = TRANSIENT_IDS
NO_PID_NAMESPACE = Namespaces(pid=False)


async def output(runner: Runner, job_id: str) -> tuple[str, str]:
    stdout, stderr, _caps = await collect(await runner.stream(job_id))
    return stdout.decode(), stderr.decode()


def test_a_job_runs_as_its_own_user_with_a_private_home(config: RunnerConfig) -> None:
    script = 'id -u; id -g; id -G; id -un; id -gn; echo "$HOME $USER"; stat -c "%a %u" "$HOME"'
    script += '; echo kept > "$HOME/file" && cat "$HOME/file"'
    script += "; grep NoNewPrivs /proc/self/status"

    async def body(runner: Runner) -> None:
        record = await runner.start(sh(script), owner="bob")
        await until_ended(runner, record.id)
        stdout, stderr = await output(runner, record.id)
        uid = record.uid
        assert uid is not None
        assert FIRST <= uid <= LAST
        assert record.gid == uid
        name = f"job-{record.id[:8]}"
        assert record.user == name
        home = config.homes / record.id
        assert stdout.split("\n") == [
            str(uid), str(uid), str(uid), name, name, f"{home} {name}", f"700 {uid}", "kept",
            "NoNewPrivs:\t1", "",
        ], stderr  # fmt: skip
        assert (await runner.get(record.id)).exit_code == 0
        assert not home.exists(), "a transient user's home outlived its job"

    with_runner(config, body)


def test_without_a_mount_namespace_the_user_has_no_name(config: RunnerConfig) -> None:
    """What the README says: the host's passwd does not know a transient user."""

    async def body(runner: Runner) -> None:
        request = sh("id -u; id -un", namespaces=Namespaces.none())
        record = await runner.start(request, owner="bob")
        await until_ended(runner, record.id)
        stdout, stderr = await output(runner, record.id)
        assert stdout == f"{record.uid}\n{record.uid}\n"  # id(1) falls back to the number
        assert f"cannot find name for user ID {record.uid}" in stderr

    with_runner(config, body)


def test_jobs_of_two_owners_cannot_touch_each_other_without_a_pid_namespace(
    config: RunnerConfig,
) -> None:
    async def body(runner: Runner) -> None:
        victim = await runner.start(
            sh(
                "echo $$; exec sleep 600", namespaces=NO_PID_NAMESPACE, environment={"SECRET": "s3"}
            ),
            owner="bob",
        )
        await wait_for_output(runner, victim.id, b"\n")
        pid = (await output_so_far(runner, victim.id)).strip()
        attack = (
            f"kill -0 {pid} && echo SIGNALLED; "
            f"cat /proc/{pid}/environ && echo READ; "
            f"ls /proc/{pid}/fd/ && echo LISTED; "
            f"ls {config.homes / victim.id} && echo HOME"
        )
        attacker = await runner.start(sh(attack, namespaces=NO_PID_NAMESPACE), owner="carol")
        await until_ended(runner, attacker.id)
        stdout, stderr = await output(runner, attacker.id)
        assert attacker.uid != victim.uid
        assert stdout == "", stdout
        assert "Operation not permitted" in stderr
        assert stderr.count("Permission denied") == 3, stderr
        assert (await runner.get(victim.id)).state is JobState.RUNNING
        await runner.stop(victim.id, grace=0, by="bob")

    with_runner(config, body)


async def output_so_far(runner: Runner, job_id: str) -> str:
    stdout, _stderr, _caps = await collect(await runner.stream(job_id, follow=False))
    return stdout.decode()


@pytest.fixture
def setuid_id(tmp_path: Path) -> Iterator[Path]:
    """A copy of id(1) that is setuid root, on a filesystem that honours setuid bits."""
    mount_point = tmp_path / "suid"
    mount_point.mkdir()
    os.chmod(tmp_path, 0o755)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "suid", str(mount_point)], check=True)
    try:
        program = mount_point / "id"
        shutil.copy(shutil.which("id") or "/usr/bin/id", program)
        os.chown(program, 0, 0)
        program.chmod(0o4755)
        yield program
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_a_setuid_program_does_not_make_a_job_root(
    config: RunnerConfig, setuid_id: Path, tmp_path: Path
) -> None:
    # The test's own folders lie below a mode-0700 one; run from a place the job may see.
    for parent in tmp_path.parents:
        if parent.stat().st_mode & stat.S_IXOTH == 0:
            parent.chmod(parent.stat().st_mode | stat.S_IXOTH)

    async def body(runner: Runner) -> None:
        for namespaces in (Namespaces(), Namespaces.none()):
            record = await runner.start(sh(f"{setuid_id} -u", namespaces=namespaces), owner="bob")
            await until_ended(runner, record.id)
            stdout, stderr = await output(runner, record.id)
            assert stdout == f"{record.uid}\n", (stdout, stderr)

    with_runner(config, body)
    # The same program does make an ordinary user root without no_new_privs.
    nobody = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(setuid_id), "-u"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert nobody.stdout == "0\n"


def test_a_uid_comes_back_only_when_its_job_is_gone(config: RunnerConfig) -> None:
    two = replace(config, transient_ids=(FIRST, FIRST + 1))

    async def body(runner: Runner) -> None:
        first = await runner.start(sh("sleep 600"), owner="bob")
        second = await runner.start(sh("sleep 600"), owner="bob")
        assert {first.uid, second.uid} == {FIRST, FIRST + 1}
        with pytest.raises(CapacityExhausted, match="all 2 transient user ids"):
            await runner.start(sh("true"), owner="bob")
        await runner.stop(first.id, grace=0, by="bob")
        third = await runner.start(sh("id -u"), owner="bob")
        assert third.uid == first.uid
        await until_ended(runner, third.id)
        await runner.stop(second.id, grace=0, by="bob")

    with_runner(two, body)


def test_a_restarted_service_keeps_the_uids_of_the_jobs_it_readopts(
    config: RunnerConfig,
) -> None:
    two = replace(config, transient_ids=(FIRST, FIRST + 1))

    async def scenario() -> None:
        runner = await Runner.open(two)
        kept = await runner.start(sh("sleep 600"), owner="bob")
        await runner.close()  # the job runs on
        runner = await Runner.open(two)
        try:
            other = await runner.start(sh("sleep 600"), owner="bob")
            assert other.uid != kept.uid
            with pytest.raises(CapacityExhausted):
                await runner.start(sh("true"), owner="bob")
            assert (config.homes / kept.id).is_dir(), "a re-adopted job lost its home"
            for job in (kept, other):
                await runner.stop(job.id, grace=0, by="bob")
        finally:
            await runner.close()

    run(scenario())


def test_homes_left_by_jobs_that_ended_while_the_service_was_down_are_removed(
    config: RunnerConfig,
) -> None:
    async def scenario() -> None:
        runner = await Runner.open(config)
        job = await runner.start(sh("sleep 2"), owner="bob")
        await runner.close()
        assert (config.homes / job.id).is_dir()
        await asyncio.sleep(4)  # the job ends while no service runs
        runner = await Runner.open(config)
        try:
            assert (await runner.get(job.id)).state is JobState.EXITED
            assert not (config.homes / job.id).exists()
        finally:
            await runner.close()

    run(scenario())


def test_a_range_used_by_accounts_or_an_unreachable_home_root_is_refused(
    config: RunnerConfig, tmp_path: Path
) -> None:
    async def opens(bad: RunnerConfig) -> None:
        runner = await Runner.open(bad)
        await runner.close()

    with pytest.raises(InvalidConfiguration, match=r"user nobody \(65534\)"):
        run(opens(replace(config, transient_ids=(65000, 66000))))
    hidden = tmp_path / "private" / "homes"
    (tmp_path / "private").mkdir(mode=0o700)
    with pytest.raises(InvalidConfiguration, match="not searchable by other users"):
        run(opens(replace(config, home_root=hidden)))


def test_the_state_directory_and_database_are_private(config: RunnerConfig) -> None:
    config.state_dir.mkdir(mode=0o755)  # as an older jobworker left it

    async def body(runner: Runner) -> None:
        record = await runner.start(sh("true"), owner="bob")
        await until_ended(runner, record.id)

    with_runner(config, body)
    assert stat.S_IMODE(config.state_dir.stat().st_mode) == 0o700
    for name in ("jobworker.db", "jobworker.db-wal", "jobworker.db-shm"):
        path = config.state_dir / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    assert stat.S_IMODE(config.homes.stat().st_mode) == 0o711


def test_the_jobs_own_passwd_and_group_name_its_user(config: RunnerConfig) -> None:
    async def body(runner: Runner) -> None:
        record = await runner.start(sh("getent passwd $(id -u); getent group $(id -g)"), owner="b")
        await until_ended(runner, record.id)
        stdout, _ = await output(runner, record.id)
        name = f"job-{record.id[:8]}"
        home = config.homes / record.id
        assert stdout == (
            f"{name}:x:{record.uid}:{record.gid}:jobworker transient user:{home}:/bin/sh\n"
            f"{name}:x:{record.gid}:\n"
        )

    with_runner(config, body)
