"""The installed ``jobworker`` console script: help and usage errors, run as a real process."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

JOBWORKER = shutil.which("jobworker", path=str(Path(sys.executable).parent))


def jobworker(*args: str) -> subprocess.CompletedProcess[str]:
    assert JOBWORKER is not None, "the jobworker console script is not installed in this venv"
    return subprocess.run([JOBWORKER, *args], capture_output=True, text=True, check=False)


def test_help_lists_commands_and_shows_an_example() -> None:
    top = jobworker("--help")
    assert top.returncode == 0
    assert "check-host" in top.stdout
    sub = jobworker("check-host", "--help")
    assert sub.returncode == 0
    assert "example: sudo jobworker check-host" in sub.stdout


def test_usage_errors_exit_2_with_one_message_and_no_traceback() -> None:
    for args in ((), ("no-such-command",), ("check-host", "--no-such-flag")):
        result = jobworker(*args)
        assert result.returncode == 2, args
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("jobworker"), result.stderr
