"""What the runner reports about the host: where jobs go, and why they cannot."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobworker.isolation import errors as isolation
from jobworker.isolation._systemd import Scope
from jobworker.isolation.cgroups import CgroupHost
from jobworker.runner import errors
from jobworker.runner.host import JobPlacement, check_host


def test_jobs_go_under_the_base_group() -> None:
    host = CgroupHost(mount=Path("/sys/fs/cgroup"), base="/jobworker", own="/")
    placement = JobPlacement.of(host)
    assert placement.cgroup_mount == Path("/sys/fs/cgroup")
    assert placement.jobs_cgroup == "/jobworker/jobs"
    assert placement.scope is None
    assert placement.controllers == ("cpu", "memory", "io", "pids")


def test_under_systemd_the_placement_names_the_scope() -> None:
    scope = Scope(
        unit="jobworker-jobs.scope",
        service="jobworker.service",
        slice="system.slice",
        cgroup="/system.slice/jobworker-jobs.scope",
    )
    host = CgroupHost(
        mount=Path("/sys/fs/cgroup"),
        base=scope.cgroup,
        own="/system.slice/jobworker.service",
        scope=scope,
    )
    placement = JobPlacement.of(host)
    assert placement.jobs_cgroup == "/system.slice/jobworker-jobs.scope/jobs"
    assert placement.scope == "jobworker-jobs.scope"


def test_jobs_in_the_root_group_have_one_slash() -> None:
    host = CgroupHost(mount=Path("/sys/fs/cgroup"), base="/", own="/")
    assert JobPlacement.of(host).jobs_cgroup == "/jobs"


def test_an_unusable_host_is_the_runners_error() -> None:
    # Refused on any host: a relative parent where cgroup v2 works, or the host's own
    # problems where it does not.
    with pytest.raises(errors.HostUnsupported) as caught:
        check_host("relative/path")
    assert not isinstance(caught.value, isolation.IsolationError)
