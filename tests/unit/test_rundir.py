"""rundir: the names of a job's files are an on-disk format.

A restarted service, perhaps a newer version, adopts jobs whose shims were started
by its predecessor and reads the files they keep: a renamed file would make every
running job ``lost`` at an upgrade. The names are pinned here on purpose.
"""

from __future__ import annotations

from pathlib import Path

from jobworker.isolation.rundir import RunDir

ROOT = Path("/var/lib/jobworker/jobs/4f0c-job")


def test_the_file_names_are_those_a_running_shim_of_an_earlier_version_uses() -> None:
    run_dir = RunDir(ROOT)
    assert run_dir.output_log == ROOT / "output.log"
    assert run_dir.outcome == ROOT / "outcome.json"
    assert run_dir.shim_state == ROOT / "shim.json"
    assert run_dir.shim_log == ROOT / "shim.log"


def test_every_file_is_a_distinct_entry_of_the_directory() -> None:
    run_dir = RunDir(ROOT)
    files = [
        run_dir.output_log,
        run_dir.outcome,
        run_dir.shim_state,
        run_dir.shim_log,
        run_dir.passwd,
        run_dir.group,
    ]
    assert len(set(files)) == len(files)
    assert all(path.parent == ROOT for path in files)
