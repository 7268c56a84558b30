"""``jobworker check-host`` on a real cgroup v2 kernel."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.privileged

JOBWORKER = str(Path(sys.executable).parent / "jobworker")


def test_a_cgroup_v2_host_passes_the_check() -> None:
    result = subprocess.run(
        [JOBWORKER, "check-host", "--cgroup-parent", "/jobworker-check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout == "cgroup v2 at /sys/fs/cgroup; jobs would go under /jobworker-check/jobs\n"
    )
    assert not Path("/sys/fs/cgroup/jobworker-check").exists(), "a check must change nothing"


def test_a_bad_cgroup_parent_is_one_clear_line() -> None:
    result = subprocess.run(
        [JOBWORKER, "check-host", "--cgroup-parent", "relative/path"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "must be an absolute path" in result.stderr
