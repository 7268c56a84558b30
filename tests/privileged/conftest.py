"""Fixtures for tests that launch real jobs on a real cgroup v2 kernel."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobworker.isolation.cgroups import CgroupHost
from jobworker.isolation.launcher import Launcher
from jobworker.runner.runner import RunnerConfig
from tests.privileged.helpers import Jobs, run
from tests.privileged.runner_helpers import home_root, processes_in, remove_cgroup_tree


@pytest.fixture(scope="session")
def cgroup_host() -> Iterator[CgroupHost]:
    """A private cgroup parent per test session, removed at the end."""
    host = CgroupHost.discover(parent=f"/jobworker-test-{uuid.uuid4().hex[:8]}")
    yield host
    # Back to the root group so our leaf, and then the whole tree, can be removed.
    (host.mount / "cgroup.procs").write_text(str(os.getpid()))
    for group in (host.jobs, host.supervisor, host.mount / host.base.lstrip("/")):
        if group.exists():
            group.rmdir()


@pytest.fixture(scope="session")
def launcher(cgroup_host: CgroupHost) -> Iterator[Launcher]:
    launcher = Launcher.start(cgroup_host)
    yield launcher
    run(launcher.close())


@pytest.fixture
def jobs(launcher: Launcher, tmp_path: Path) -> Iterator[Jobs]:
    yield Jobs(launcher, tmp_path)
    left = [group.name for group in launcher.leftover_groups()]
    assert not left, f"job cgroups left behind: {left}"


@pytest.fixture
def config(tmp_path: Path) -> Iterator[RunnerConfig]:
    """A runner's configuration with its own cgroup parent; nothing of it may outlive the test."""
    parent = f"/jobworker-test-{uuid.uuid4().hex[:8]}"
    with home_root() as homes:
        yield RunnerConfig(state_dir=tmp_path / "state", cgroup_parent=parent, home_root=homes)
    left = [pid for pid in processes_in(parent) if pid != os.getpid()]
    remove_cgroup_tree(parent)
    assert not left, f"processes left behind in {parent}: {left}"
