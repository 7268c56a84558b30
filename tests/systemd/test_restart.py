"""The service under a real systemd: restarting it while a job runs.

A service that keeps its jobs' groups inside its own unit group cannot be restarted by
systemd 252 (Debian 12) while a job runs: the new main process cannot join a group with
controllers enabled below it, and the unit fails with status 219/CGROUP. jobworker keeps
its jobs in a scope of their own (``isolation/systemd.py``). These tests install the
shipped ``deploy/jobworker.service``, running this checkout's ``jobworker`` under a
unit name of their own, and drive it with systemctl, as an operator would. scripts/test
runs them in a VM whose init is systemd (``scripts/vm --systemd``); each start of the
server or of a ``jobworker`` command takes from seconds to a minute there, so one service
serves the module, and commands run side by side where they can.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Each start of the server took one to two minutes in the emulated VM on a busy host.
pytestmark = [pytest.mark.systemd, pytest.mark.timeout(1800)]

JOBWORKER = str(Path(sys.executable).parent / "jobworker")
UNIT_FILE = Path(__file__).resolve().parents[2] / "deploy" / "jobworker.service"
CGROUP_ROOT = Path("/sys/fs/cgroup")
PRINTER = "i=0; while :; do echo $i; i=$((i + 1)); sleep 0.5; done"
"""A job that prints a numbered line every half second: a gap in its output shows."""
SERVING_SECONDS = 900.0
"""Until a started server answers: it took up to two minutes in the emulated VM on a
busy host (Python and gRPC start slowly under emulation)."""


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)


class Service:
    """The jobworker service this module installs, and how to reach it."""

    def __init__(self, name: str, tls: Path) -> None:
        self.name = name
        self.tls = tls
        self.address = ""
        """Where the server of the current invocation listens (it picks a free port)."""

    @property
    def unit(self) -> str:
        return f"{self.name}.service"

    @property
    def scope(self) -> str:
        return f"{self.name}-jobs.scope"

    @property
    def scope_group(self) -> Path:
        return CGROUP_ROOT / "system.slice" / self.scope

    def systemctl(self, *args: str) -> None:
        done = run("systemctl", *args, self.unit)
        assert done.returncode == 0, (args, done.stderr, self.journal())

    def show(self, *properties: str, unit: str | None = None) -> dict[str, str]:
        done = run("systemctl", "show", f"--property={','.join(properties)}", unit or self.unit)
        assert done.returncode == 0, done.stderr
        return dict(line.split("=", 1) for line in done.stdout.splitlines())

    def journal(self, match: str = "") -> str:
        """What the unit (or, given ``FIELD=VALUE``, what matches it) wrote to the journal."""
        return run("journalctl", "--no-pager", "-o", "cat", match or f"--unit={self.unit}").stdout

    def cli(self, *calls: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
        """Run ``jobworker`` commands, all at once: each process start takes seconds in the VM."""
        env = {**os.environ, "JOBWORKER_TLS_DIR": str(self.tls), "JOBWORKER_SERVER": self.address}
        pipe = subprocess.PIPE
        started = [
            subprocess.Popen([JOBWORKER, *args], env=env, stdout=pipe, stderr=pipe, text=True)
            for args in calls
        ]
        done = []
        for process in started:
            out, err = process.communicate(timeout=600)
            done.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
        return done

    def wait_serving(self) -> None:
        """Wait until the server of the unit's current invocation says where it listens.

        The unit is Type=simple, so systemctl returns before that: tests may poll. A
        start that failed fails at once: the unit is then no longer active, or systemd
        restarted it (Restart=on-failure).
        """
        deadline = time.monotonic() + SERVING_SECONDS
        while True:
            state = self.show("ActiveState", "NRestarts", "InvocationID")
            assert (state["ActiveState"], state["NRestarts"]) == ("active", "0"), (
                state,
                self.journal(),
            )
            said = self.journal(f"_SYSTEMD_INVOCATION_ID={state['InvocationID']}")
            found = re.search(r"^jobworker server listening on (localhost:\d+) ", said, re.M)
            if found:
                self.address = found[1]
                return
            assert time.monotonic() < deadline, f"not serving after {SERVING_SECONDS:.0f} s"
            time.sleep(2)

    def running(self, job_id: str) -> int:
        """Check ``status`` says the job runs and its output counts up from 0 without a
        gap (``logs``); return how many lines it printed."""
        status, logs = self.cli(("status", "--json", job_id), ("logs", job_id))
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["state"] == "running"
        assert logs.returncode == 0, logs.stderr
        numbers = [int(line) for line in logs.stdout.splitlines()]
        assert numbers == list(range(len(numbers))), f"gap in the output: {logs.stdout!r}"
        return len(numbers)


def populated(group: Path) -> bool:
    return "populated 1" in (group / "cgroup.events").read_text()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """deploy/jobworker.service under a name of its own, with this checkout's jobworker."""
    root = tmp_path_factory.mktemp("systemd")
    # Transient users' homes: pytest's folders sit under a mode-0700 one, which job
    # users could not pass, and the server refuses such a home root.
    homes = Path(tempfile.mkdtemp(prefix="jobworker-test-homes-", dir="/run"))
    made = run(JOBWORKER, "certs", "init", "--dir", str(root / "tls"), "--ca-dir", str(root / "ca"))
    assert made.returncode == 0, made.stderr
    service = Service(name=f"jobworker-test-{uuid.uuid4().hex[:8]}", tls=root / "tls")
    command = (
        f"{JOBWORKER} server --listen localhost:0 --tls-dir {root / 'tls'} "
        f"--state-dir {root / 'state'} --home-root {homes}"
    )
    unit, count = re.subn(r"(?m)^ExecStart=.*$", f"ExecStart={command}", UNIT_FILE.read_text())
    assert count == 1
    installed = Path("/run/systemd/system") / service.unit
    installed.write_text(unit)
    run("systemctl", "daemon-reload")
    try:
        yield service
    finally:
        run("systemctl", "stop", service.unit, service.scope)  # the scope: a failed test's job
        installed.unlink()  # systemd forgets the unit once it is stopped: no reload needed
        shutil.rmtree(homes, ignore_errors=True)
        run("systemctl", "reset-failed", service.unit)


def test_a_start_clears_a_group_left_by_a_scope_that_systemd_dropped(service: Service) -> None:
    # If systemd drops the scope (its last job just ended) while a new fork server
    # joins it, the group stays with no unit, and systemd-run could not make the
    # scope on top of it: the server finds the scope inactive and clears the group.
    (service.scope_group / "supervisor").mkdir(parents=True)
    (service.scope_group / "jobs").mkdir()
    (service.scope_group / "cgroup.subtree_control").write_text("+pids")
    assert service.show("ActiveState", unit=service.scope)["ActiveState"] == "inactive"

    service.systemctl("start")
    service.wait_serving()
    assert service.show("ActiveState", unit=service.scope)["ActiveState"] == "active"
    assert populated(service.scope_group / "supervisor")
    assert f"(systemd scope {service.scope})" in service.journal()


def test_restart_and_stop_start_keep_a_running_job(service: Service) -> None:
    if service.show("ActiveState")["ActiveState"] != "active":
        service.systemctl("start")
    service.wait_serving()
    (started,) = service.cli(("run", "--", "sh", "-c", PRINTER))
    assert started.returncode == 0, started.stderr
    job_id = started.stdout.strip()
    (job_group,) = CGROUP_ROOT.glob(f"**/{job_id}")
    assert populated(job_group)

    # systemctl restart: the unit must come back at once (no 219/CGROUP, no retries).
    watched = ("MainPID", "InvocationID", "ActiveEnterTimestamp")
    before = service.show(*watched, "NRestarts")
    service.systemctl("restart")
    service.wait_serving()
    after = service.show(*watched, "NRestarts", "ActiveState", "SubState")
    assert (after["ActiveState"], after["SubState"]) == ("active", "running"), after
    assert after["NRestarts"] == before["NRestarts"] == "0", service.journal()
    for name in watched:
        assert after[name] != before[name], (name, before, after)
    assert "219/CGROUP" not in service.journal()
    assert f"job {job_id} re-adopted" in service.journal()
    assert job_group == service.scope_group / "jobs" / job_id
    assert populated(job_group)
    own_group = CGROUP_ROOT / "system.slice" / service.unit
    assert not (own_group / "cgroup.subtree_control").read_text().split()  # never divided
    lines = service.running(job_id)

    # systemctl stop, then start: the job runs on while no server does.
    service.systemctl("stop")
    assert service.show("ActiveState")["ActiveState"] == "inactive"
    assert populated(job_group)
    assert service.show("ActiveState", unit=service.scope)["ActiveState"] == "active"
    service.systemctl("start")
    service.wait_serving()
    assert service.running(job_id) > lines

    (stopped,) = service.cli(("stop", job_id))
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith(f"{job_id}: stopped by "), stopped.stdout
    assert not job_group.exists()


def test_the_scope_goes_once_nothing_runs_in_it(service: Service) -> None:
    service.systemctl("stop")
    deadline = time.monotonic() + 120
    while service.scope_group.exists():  # its fork server and spare shims exit at stop
        assert time.monotonic() < deadline, "the jobs' scope outlived its last process"
        time.sleep(1)
    assert service.show("ActiveState", unit=service.scope)["ActiveState"] == "inactive"
