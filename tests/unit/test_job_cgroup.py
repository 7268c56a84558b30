"""cgroups: one job's group and the service's layout, against fake cgroupfs trees in tmp_path.

A plain directory is not cgroupfs: mkdir creates no interface files and a
missing file cannot be written (cgroupfs files are never created by open).
Where a test needs the files the kernel would create, it makes them itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobworker.isolation._systemd import Scope
from jobworker.isolation.cgroups import CgroupHost, JobCgroup, Usage
from jobworker.isolation.errors import HostUnsupported, InvalidDevice, IsolationError

CPU_STAT = """\
usage_usec 1500
user_usec 1000
system_usec 500
nr_periods 10
nr_throttled 2
throttled_usec 777
"""

IO_STAT = """\
8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0
254:0 rbytes=10 wbytes=20 rios=3 wios=4 dbytes=5 dios=6
"""

MEMORY_EVENTS = "low 0\nhigh 0\nmax 12\noom 3\noom_kill {kill}\noom_group_kill {group_kill}\n"


@pytest.fixture
def group(tmp_path: Path) -> JobCgroup:
    path = tmp_path / "jobs" / "job-1"
    path.mkdir(parents=True)
    return JobCgroup(path)


def populate(path: Path, names: list[str]) -> None:
    for name in names:
        (path / name).touch()


# --- usage and OOM ---------------------------------------------------------------


def test_usage(group):
    (group.path / "cpu.stat").write_text(CPU_STAT)
    (group.path / "io.stat").write_text(IO_STAT)
    (group.path / "memory.peak").write_text("1048576\n")
    (group.path / "pids.peak").write_text("3\n")
    assert group.usage() == Usage(
        cpu_user_usec=1000,
        cpu_system_usec=500,
        memory_peak_bytes=1048576,
        io_read_bytes=110,
        io_write_bytes=220,
        pids_peak=3,
    )


def test_usage_without_files_is_unknown(group):
    assert group.usage() == Usage(None, None, None, None, None, None)


def test_usage_of_a_group_that_did_no_io(group):
    # io.stat exists but is empty: zero bytes, which is not the same as unknown.
    (group.path / "io.stat").write_text("")
    usage = group.usage()
    assert (usage.io_read_bytes, usage.io_write_bytes) == (0, 0)


def test_usage_with_an_old_kernel(group):
    # Before 5.19 there is no memory.peak, before 6.1 no pids.peak.
    (group.path / "cpu.stat").write_text(CPU_STAT)
    (group.path / "io.stat").write_text("")
    usage = group.usage()
    assert (usage.memory_peak_bytes, usage.pids_peak) == (None, None)
    assert (usage.cpu_user_usec, usage.cpu_system_usec) == (1000, 500)


def test_usage_ignores_io_keys_it_does_not_know(group):
    (group.path / "io.stat").write_text("8:0 rbytes=7 wbytes=9 cost.usage=3 rbytesx=100\n")
    usage = group.usage()
    assert (usage.io_read_bytes, usage.io_write_bytes) == (7, 9)


@pytest.mark.parametrize(
    ("kill", "group_kill", "killed"), [(0, 0, False), (1, 0, True), (0, 1, True), (2, 1, True)]
)
def test_oom_killed(group, kill, group_kill, killed):
    events = MEMORY_EVENTS.format(kill=kill, group_kill=group_kill)
    (group.path / "memory.events").write_text(events)
    assert group.oom_killed() is killed


def test_oom_killed_on_a_kernel_without_oom_group_kill(group):
    (group.path / "memory.events").write_text("low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n")
    assert group.oom_killed() is True


def test_oom_killed_without_memory_events(group):
    assert group.oom_killed() is False


# --- processes -----------------------------------------------------------------------


def test_name(group):
    assert group.name == "job-1"


def test_pids(group):
    assert group.pids() == []  # no cgroup.procs: the group is gone
    (group.path / "cgroup.procs").write_text("12\n345\n")
    assert group.pids() == [12, 345]


def test_kill(group):
    assert group.kill() is False  # no cgroup.kill: the group is gone
    (group.path / "cgroup.kill").touch()
    assert group.kill() is True
    assert (group.path / "cgroup.kill").read_text() == "1"


def test_wait_empty(group):
    assert group.wait_empty(timeout=5) is True  # no cgroup.events: the group is gone
    events = group.path / "cgroup.events"
    events.write_text("populated 0\nfrozen 0\n")
    assert group.wait_empty(timeout=5) is True


def test_wait_empty_times_out(group):
    (group.path / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    start = time.monotonic()
    assert group.wait_empty(timeout=0.2) is False
    assert 0.15 <= time.monotonic() - start < 5


@pytest.mark.parametrize("name", ["cpu.stat", "memory.events", "cgroup.procs", "cgroup.events"])
def test_an_interface_file_that_cannot_be_read_is_an_isolation_error(group, name):
    # A directory in its place: reading it fails with EISDIR, neither "gone" errno.
    (group.path / name).mkdir()
    read = {
        "cpu.stat": group.usage,
        "memory.events": group.oom_killed,
        "cgroup.procs": group.pids,
        "cgroup.events": lambda: group.wait_empty(timeout=1),
    }[name]
    with pytest.raises(IsolationError, match=f"cannot read {group.path / name}: Is a directory"):
        read()


# --- create and remove -----------------------------------------------------------


def test_create_without_settings(tmp_path):
    job = JobCgroup(tmp_path / "job-2")
    job.create([])
    assert job.path.is_dir()


def test_create_applies_each_setting_with_one_write(tmp_path):
    job = JobCgroup(tmp_path / "job-2")
    settings = [
        ("memory.oom.group", "1"),
        ("cpu.max", "50000 100000"),
        ("memory.max", "67108864"),
        ("memory.swap.max", "0"),
        ("pids.max", "10"),
        ("io.max", "8:0 rbps=1000"),
    ]

    def after_mkdir() -> Iterator[tuple[str, str]]:
        # Consumed only once the group exists: stands in for the kernel, which
        # creates a group's interface files when the group is made.
        populate(job.path, [name for name, _ in settings])
        yield from settings

    job.create(after_mkdir())
    assert {p.name: p.read_text() for p in job.path.iterdir()} == dict(settings)


def test_create_an_existing_group(group):
    (group.path / "cgroup.procs").write_text("42\n")
    with pytest.raises(IsolationError, match="already exists"):
        group.create([("pids.max", "1")])
    assert (group.path / "cgroup.procs").read_text() == "42\n"  # untouched, not removed


def test_create_under_a_missing_parent(tmp_path):
    with pytest.raises(IsolationError):
        JobCgroup(tmp_path / "no-jobs-dir" / "job-1").create([])


def test_a_failed_io_max_write_is_an_invalid_device(tmp_path):
    # Only the mapping: in a plain directory io.max is missing (ENOENT), and any
    # failed io.max write maps alike, whatever the errno. The kernel's own refusals
    # are tests/privileged/test_kernel_refusals.py.
    job = JobCgroup(tmp_path / "job-3")
    with pytest.raises(InvalidDevice, match="8:16") as caught:
        job.create([("io.max", "8:16 wbps=5")])
    assert caught.value.field == "io"
    assert not job.path.exists()


def test_a_failed_write_of_another_setting_is_host_unsupported(tmp_path):
    job = JobCgroup(tmp_path / "job-4")
    with pytest.raises(HostUnsupported, match=r"cannot set cpu\.max"):
        job.create([("cpu.max", "50000 100000")])
    assert not job.path.exists()


def test_missing_swap_accounting_is_not_an_error(tmp_path):
    job = JobCgroup(tmp_path / "job-5")
    job.create([("memory.swap.max", "0")])
    assert job.path.is_dir()
    assert list(job.path.iterdir()) == []


def test_failure_after_an_ignored_setting_still_cleans_up(tmp_path):
    job = JobCgroup(tmp_path / "job-6")
    with pytest.raises(HostUnsupported, match=r"pids\.max"):
        job.create([("memory.swap.max", "0"), ("pids.max", "3")])
    assert not job.path.exists()


def test_remove(group):
    group.remove()
    assert not group.path.exists()
    group.remove()  # already gone is fine


def test_remove_takes_groups_the_job_made_inside_its_own_first(group):
    # Plain directories stand in for child groups; the kernel's side is a VM test
    # (test_robustness: a root job that makes a nested group is torn down).
    (group.path / "a" / "b").mkdir(parents=True)
    (group.path / "c").mkdir()
    group.remove()
    assert not group.path.exists()


def test_a_group_that_cannot_be_removed_is_named(group):
    (group.path / "a").mkdir()
    (group.path / "a" / "stuck").touch()  # rmdir of a/ fails: ENOTEMPTY
    with pytest.raises(IsolationError, match=f"cannot remove cgroup {group.path / 'a'}: "):
        group.remove()


# --- the service's layout ------------------------------------------------------------

ALL = "cpu io memory pids"


def fake_group(path: Path, *, controllers: str = ALL, subtree: str = "", procs: str = "") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cgroup.controllers").write_text(controllers + "\n")
    (path / "cgroup.subtree_control").write_text(subtree)
    (path / "cgroup.procs").write_text(procs)
    (path / "cgroup.kill").touch()
    return path


@pytest.fixture
def mount(tmp_path: Path) -> Path:
    """A fake hierarchy with the groups prepare() makes already there, as the kernel would."""
    root = fake_group(tmp_path / "cgroup2", procs="1\n")
    fake_group(root / "jobworker")
    fake_group(root / "jobworker" / "supervisor")
    fake_group(root / "jobworker" / "jobs")
    return root


def subtree(path: Path) -> str:
    return (path / "cgroup.subtree_control").read_text()


def test_prepare_moves_us_and_enables_controllers(mount):
    CgroupHost(mount=mount, base="/jobworker", own="/").prepare()
    assert (mount / "jobworker/supervisor/cgroup.procs").read_text() == str(os.getpid())
    for group in (mount, mount / "jobworker", mount / "jobworker/jobs"):
        assert subtree(group) == "+cpu +memory +io +pids", group
    assert subtree(mount / "jobworker/supervisor") == ""


def test_prepare_enables_cpuset_in_the_root_and_its_own_groups_where_available(mount):
    for group in (mount, mount / "jobworker", mount / "jobworker/jobs"):
        (group / "cgroup.controllers").write_text(ALL + " cpuset\n")
    CgroupHost(mount=mount, base="/jobworker", own="/").prepare()
    for group in (mount, mount / "jobworker", mount / "jobworker/jobs"):
        assert subtree(group) == "+cpu +memory +io +pids +cpuset", group


def test_prepare_leaves_cpuset_alone_in_groups_above_a_delegated_unit(mount):
    unit = fake_group(mount / "system.slice" / "jobworker.service", controllers=ALL)
    fake_group(unit / "supervisor")
    fake_group(unit / "jobs")
    fake_group(mount / "system.slice", controllers=ALL + " cpuset", subtree=ALL)
    (mount / "cgroup.subtree_control").write_text(ALL + " cpuset")
    CgroupHost(mount=mount, base="/system.slice/jobworker.service", own="/other").prepare()
    assert subtree(mount / "system.slice") == ALL  # systemd's to decide: not delegated to us
    assert subtree(unit) == "+cpu +memory +io +pids"


def test_prepare_enables_only_what_is_missing(mount):
    (mount / "cgroup.subtree_control").write_text("cpuset cpu io memory pids")
    (mount / "jobworker/cgroup.subtree_control").write_text("memory pids")
    CgroupHost(mount=mount, base="/jobworker", own="/").prepare()
    assert subtree(mount) == "cpuset cpu io memory pids"  # nothing written
    # A regular file is overwritten in place, so only "+cpu +io" was written here.
    assert subtree(mount / "jobworker") == "+cpu +io" + "memory pids"[8:]
    assert subtree(mount / "jobworker/jobs") == "+cpu +memory +io +pids"


def test_prepare_in_a_delegated_unit_leaves_other_groups_alone(mount):
    unit = fake_group(mount / "system.slice" / "jobworker.service")
    fake_group(unit / "supervisor")
    fake_group(unit / "jobs")
    host = CgroupHost(mount=mount, base="/system.slice/jobworker.service", own="/other")
    (mount / "cgroup.subtree_control").write_text(ALL)
    fake_group(mount / "system.slice", subtree=ALL)
    host.prepare()
    assert (unit / "supervisor/cgroup.procs").read_text() == ""  # not ours to move
    assert subtree(mount) == subtree(mount / "system.slice") == ALL
    assert subtree(unit) == subtree(unit / "jobs") == "+cpu +memory +io +pids"
    assert not (mount / "jobworker/jobs/cgroup.subtree_control").read_text()


SCOPE = Scope(
    unit="jobworker-jobs.scope",
    service="jobworker.service",
    slice="system.slice",
    cgroup="/system.slice/jobworker-jobs.scope",
)


def scope_host(mount: Path) -> CgroupHost:
    return CgroupHost(
        mount=mount, base=SCOPE.cgroup, own="/system.slice/jobworker.service", scope=SCOPE
    )


def test_prepare_in_the_jobs_scope(mount):
    # systemd made the scope (Delegate=yes: all controllers) and the fork server is in.
    fake_group(mount / "system.slice", subtree=ALL)
    (mount / "cgroup.subtree_control").write_text(ALL)
    scope = fake_group(mount / "system.slice/jobworker-jobs.scope")
    fake_group(scope / "supervisor", procs="4242\n")
    fake_group(scope / "jobs")
    scope_host(mount).prepare()
    assert (scope / "supervisor/cgroup.procs").read_text() == "4242\n"  # we stay in our unit
    assert subtree(mount) == subtree(mount / "system.slice") == ALL
    assert subtree(scope) == subtree(scope / "jobs") == "+cpu +memory +io +pids"


def test_enter_the_jobs_scope(mount):
    scope = fake_group(mount / "system.slice/jobworker-jobs.scope")
    fake_group(scope / "supervisor")
    assert scope_host(mount).enter(4242)
    assert (scope / "supervisor/cgroup.procs").read_text() == "4242"


def test_a_refused_move_into_the_scope_is_host_unsupported(mount):
    scope = fake_group(mount / "system.slice/jobworker-jobs.scope")
    (scope / "supervisor/cgroup.procs").mkdir(parents=True)  # the write fails: EISDIR
    with pytest.raises(HostUnsupported, match=r"cannot move process 4242 into .*supervisor"):
        scope_host(mount).enter(4242)


def test_enter_a_scope_that_is_gone_creates_nothing(mount):
    fake_group(mount / "system.slice")
    host = scope_host(mount)
    assert not host.base_exists()
    assert not host.enter(4242)
    assert not host.base_exists()


def test_remove_what_a_dropped_scope_left(mount):
    # Plain directories: cgroupfs removes a group whatever its interface files.
    scope = mount / "system.slice/jobworker-jobs.scope"
    (scope / "supervisor").mkdir(parents=True)
    (scope / "jobs/a").mkdir(parents=True)
    host = scope_host(mount)
    assert host.base_exists()
    host.remove_base()
    assert not host.base_exists()
    assert (mount / "system.slice").is_dir()


def test_remove_a_scope_group_that_is_not_empty(mount):
    scope = mount / "system.slice/jobworker-jobs.scope"
    (scope / "jobs/a").mkdir(parents=True)
    (scope / "jobs/a/cgroup.procs").write_text("4242\n")  # rmdir: not empty, like EBUSY
    with pytest.raises(HostUnsupported, match="remove it by hand"):
        scope_host(mount).remove_base()
    assert (scope / "jobs/a").is_dir()


def test_prepare_refuses_a_base_with_stray_processes(mount):
    (mount / "jobworker/cgroup.procs").write_text("4242\n4343\n")
    with pytest.raises(HostUnsupported, match="4242, 4343") as caught:
        CgroupHost(mount=mount, base="/jobworker", own="/").prepare()
    assert "Delegate=yes" in str(caught.value)


def test_prepare_refuses_undelegated_controllers(mount):
    (mount / "jobworker/cgroup.controllers").write_text("cpu memory\n")
    with pytest.raises(HostUnsupported, match="io, pids controller") as caught:
        CgroupHost(mount=mount, base="/jobworker", own="/").prepare()
    assert "cgroup /jobworker;" in str(caught.value)
    assert "Delegate=yes" in str(caught.value)


def test_prepare_needs_cgroup_kill(mount):
    (mount / "jobworker/supervisor/cgroup.kill").unlink()
    with pytest.raises(HostUnsupported, match=r"cgroup\.kill.*5\.14"):
        CgroupHost(mount=mount, base="/jobworker", own="/").prepare()


def test_existing_job_groups(mount):
    host = CgroupHost(mount=mount, base="/elsewhere", own="/")
    assert host.existing_job_groups() == []
    host.jobs.mkdir(parents=True)
    (host.jobs / "b").mkdir()
    (host.jobs / "a").mkdir()
    (host.jobs / "cgroup.procs").touch()
    assert [group.name for group in host.existing_job_groups()] == ["a", "b"]
    assert host.job_group("a") in host.existing_job_groups()
