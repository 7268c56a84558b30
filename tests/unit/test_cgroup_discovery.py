"""cgroups: finding a usable cgroup v2 hierarchy, from fake /proc/self and cgroupfs trees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jobworker.isolation._systemd import Scope
from jobworker.isolation.cgroups import CgroupHost, own_cgroup
from jobworker.isolation.errors import HostUnsupported

ALL_CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc"
UNIFIED_HINT = "systemd.unified_cgroup_hierarchy=1"

# The shape of /proc/self/mountinfo on a hybrid host (this development machine):
# v1 controllers under /sys/fs/cgroup/<name>, cgroup2 without controllers at
# {unified} (really /sys/fs/cgroup/unified; here a tmp dir, which discovery reads).
HYBRID_MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334432k,nr_inodes=3083608,mode=755
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / {unified} rw,relatime - cgroup2 cgroup2 rw
"""

HYBRID_CGROUP = """\
9:name=systemd:/
8:pids:/
7:blkio:/
4:memory:/process_api/fde8542ec017a5eda8a6dab86cdfaf0b
1:cpu:/
0::/
"""

# A pure cgroup v2 host, as on current distributions.
UNIFIED_MOUNTINFO = """\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
23 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
27 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
30 23 0:26 {root} {unified} rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 \
rw,nsdelegate,memory_recursiveprot
"""


class FakeHost:
    """A fake /proc/self and a real directory standing in for the cgroup2 mount."""

    def __init__(self, tmp_path: Path) -> None:
        self.proc_self = tmp_path / "proc" / "self"
        self.proc_self.mkdir(parents=True)
        self.cgroup2 = tmp_path / "cgroup2"
        self.cgroup2.mkdir()

    def hybrid(self, controllers: str = "") -> FakeHost:
        self.write(HYBRID_MOUNTINFO.format(unified=self.cgroup2), HYBRID_CGROUP, controllers)
        return self

    def unified(self, own: str = "/", *, root: str = "/") -> FakeHost:
        mountinfo = UNIFIED_MOUNTINFO.format(unified=self.cgroup2, root=root)
        self.write(mountinfo, f"0::{own}\n", ALL_CONTROLLERS)
        return self

    def write(self, mountinfo: str, cgroup: str, controllers: str) -> None:
        (self.proc_self / "mountinfo").write_text(mountinfo)
        (self.proc_self / "cgroup").write_text(cgroup)
        (self.cgroup2 / "cgroup.controllers").write_text(controllers + "\n")

    def group(self, path: str, *pids: int) -> Path:
        """Make a group in the fake hierarchy whose cgroup.procs lists ``pids``."""
        group = self.cgroup2 / path.lstrip("/")
        group.mkdir(parents=True)
        (group / "cgroup.procs").write_text("".join(f"{pid}\n" for pid in pids))
        return group

    def discover(
        self, parent: str | None = None, euid: int = 0, environ: dict[str, str] | None = None
    ) -> CgroupHost:
        # Not the environment the tests run in, which may be a systemd service's.
        return CgroupHost.discover(
            parent, proc_self=self.proc_self, euid=euid, environ=environ or {}
        )

    def refusal(self, parent: str | None = None, euid: int = 0) -> str:
        with pytest.raises(HostUnsupported) as caught:
            self.discover(parent, euid)
        return str(caught.value)

    def tree(self) -> list[str]:
        return sorted(str(p.relative_to(self.cgroup2)) for p in self.cgroup2.rglob("*"))


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path)


# --- hosts that cannot isolate jobs ---------------------------------------------


def test_hybrid_host_is_refused(host):
    message = host.hybrid().refusal()
    assert f"cgroup v2 at {host.cgroup2} lacks the cpu, memory, io, pids controller(s)" in message
    assert "hybrid" in message
    for v1 in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/blkio"):
        assert v1 in message
    assert "/sys/fs/cgroup/pids" in message
    assert "/sys/fs/cgroup/devices" not in message
    assert "/sys/fs/cgroup/cpuacct" not in message
    assert UNIFIED_HINT in message
    assert "must run as root" not in message


def test_hybrid_host_with_some_controllers_on_v2(host):
    message = host.hybrid(controllers="cpu pids").refusal()
    assert "lacks the memory, io controller(s)" in message
    assert "(/sys/fs/cgroup/blkio, /sys/fs/cgroup/memory)" in message
    assert "/sys/fs/cgroup/cpu," not in message
    assert "/sys/fs/cgroup/pids" not in message
    assert UNIFIED_HINT in message


def test_controllers_missing_without_v1(host):
    host.unified()
    (host.cgroup2 / "cgroup.controllers").write_text("cpu memory pids\n")
    message = host.refusal()
    assert "lacks the io controller(s)" in message
    assert "kernel configuration" in message
    assert UNIFIED_HINT not in message


def test_cgroup_v1_only_host(host):
    lines = HYBRID_MOUNTINFO.format(unified=host.cgroup2).splitlines()
    host.write("\n".join(line for line in lines if "cgroup2" not in line), HYBRID_CGROUP, "")
    message = host.refusal()
    assert "no cgroup v2 filesystem is mounted" in message
    assert UNIFIED_HINT in message
    assert "must run as root" not in message


def test_clone3_blocked_by_a_seccomp_filter(host):
    host.unified()
    with pytest.raises(HostUnsupported) as caught:
        CgroupHost.discover(None, proc_self=host.proc_self, euid=0, clone3=False)
    assert "clone3 is refused here" in str(caught.value)
    assert "controller" not in str(caught.value)


def test_clone3_is_really_probed_on_this_machine():
    from jobworker.isolation import _syscalls as syscalls

    assert syscalls.clone3_available()  # Linux 5.3+, no seccomp filter in the test run


def test_not_root(host):
    message = host.unified().refusal(euid=1000)
    assert "must run as root" in message
    assert "controller" not in message


def test_not_root_on_a_hybrid_host_reports_both(host):
    message = host.hybrid().refusal(euid=1000)
    assert "must run as root" in message
    assert "lacks the cpu, memory, io, pids controller(s)" in message
    assert UNIFIED_HINT in message
    assert message.count("; boot") == 1


def test_not_root_on_a_v1_host_reports_both(host):
    lines = HYBRID_MOUNTINFO.format(unified=host.cgroup2).splitlines()
    host.write("\n".join(line for line in lines if "cgroup2" not in line), HYBRID_CGROUP, "")
    message = host.refusal(euid=1000)
    assert "must run as root" in message
    assert "no cgroup v2 filesystem is mounted" in message


def test_euid_defaults_to_the_real_one(host):
    host.unified()
    if os.geteuid() == 0:
        assert CgroupHost.discover(proc_self=host.proc_self).base == "/jobworker"
    else:
        with pytest.raises(HostUnsupported, match="root"):
            CgroupHost.discover(proc_self=host.proc_self)


def test_no_cgroup_v2_entry_for_our_process(tmp_path):
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("4:memory:/x\n1:cpu:/\n")
    with pytest.raises(HostUnsupported, match=UNIFIED_HINT):
        own_cgroup(cgroup)


# --- a good host: where our groups go --------------------------------------------


def test_default_base_from_the_root_group(host):
    found = host.unified(own="/").discover()
    assert found == CgroupHost(mount=host.cgroup2, base="/jobworker", own="/")
    assert found.supervisor == host.cgroup2 / "jobworker" / "supervisor"
    assert found.jobs == host.cgroup2 / "jobworker" / "jobs"
    assert found.job_group("job-1").path == host.cgroup2 / "jobworker" / "jobs" / "job-1"


def test_default_base_is_our_own_group_when_it_holds_only_us(host):
    own = "/system.slice/jobworker.service"
    host.unified(own=own).group(own, os.getpid())
    found = host.discover()
    assert (found.base, found.own) == (own, own)
    assert found.supervisor == host.cgroup2 / "system.slice/jobworker.service/supervisor"
    assert found.jobs == host.cgroup2 / "system.slice/jobworker.service/jobs"


# What systemd gives the main process of a service (SYSTEMD_EXEC_PID since 248).
SERVICE_ENVIRON = {"INVOCATION_ID": "5e1f" * 8, "SYSTEMD_EXEC_PID": str(os.getpid())}


@pytest.mark.parametrize("others", [(), (1, 2)])
def test_default_base_of_a_systemd_service_is_its_jobs_scope(host, others):
    own = "/system.slice/jobworker.service"
    host.unified(own=own).group(own, os.getpid(), *others)
    before = host.tree()
    found = host.discover(environ=SERVICE_ENVIRON)
    assert found.base == "/system.slice/jobworker-jobs.scope"
    assert found.own == own
    assert found.scope == Scope(
        unit="jobworker-jobs.scope",
        service="jobworker.service",
        slice="system.slice",
        cgroup="/system.slice/jobworker-jobs.scope",
    )
    assert found.supervisor == host.cgroup2 / "system.slice/jobworker-jobs.scope/supervisor"
    assert found.jobs == host.cgroup2 / "system.slice/jobworker-jobs.scope/jobs"
    assert host.tree() == before  # the scope is made when the server starts


def test_an_explicit_parent_wins_over_the_scope(host):
    own = "/system.slice/jobworker.service"
    host.unified(own=own).group(own, os.getpid())
    found = host.discover("/custom", environ=SERVICE_ENVIRON)
    assert (found.base, found.scope) == ("/custom", None)


def test_a_child_of_a_service_is_not_the_service(host):
    own = "/system.slice/jobworker.service"
    host.unified(own=own).group(own, os.getpid())
    environ = {**SERVICE_ENVIRON, "SYSTEMD_EXEC_PID": str(os.getpid() + 1)}
    found = host.discover(environ=environ)
    assert (found.base, found.scope) == (own, None)


@pytest.mark.parametrize("others", [(1,), (os.getpid() + 1,), (1, 2, 3)])
def test_default_base_when_our_group_is_shared(host, others):
    own = "/user.slice/session-1.scope"
    host.unified(own=own).group(own, *others, os.getpid())
    found = host.discover()
    assert (found.base, found.own) == ("/jobworker", own)


def test_default_base_when_our_group_lists_someone_else(host):
    own = "/user.slice/session-1.scope"
    host.unified(own=own).group(own, os.getpid() + 1)
    assert host.discover().base == "/jobworker"


@pytest.mark.parametrize("parent", ["/jobworker", "/custom/jobs", "/", "/a.b/c-d"])
def test_explicit_parent(host, parent):
    own = "/system.slice/jobworker.service"
    host.unified(own=own).group(own, os.getpid())
    found = host.discover(parent)
    assert (found.base, found.own) == (parent, own)
    assert found.jobs == host.cgroup2 / parent.lstrip("/") / "jobs"


@pytest.mark.parametrize("parent", ["jobworker", "", "./jobworker", "/a/../b", "/..", "/a/.."])
def test_explicit_parent_must_stay_inside_the_hierarchy(host, parent):
    message = host.unified().refusal(parent)
    assert "--cgroup-parent" in message
    assert str(host.cgroup2) in message


def test_discovery_changes_nothing(host):
    own = "/system.slice/jobworker.service"
    host.unified(own=own).group(own, os.getpid())
    before = host.tree()
    host.discover()
    host.discover("/elsewhere")
    assert host.tree() == before


def test_own_group_is_relative_to_the_mount_root(host):
    # In a container without a cgroup namespace, the mount shows a sub-tree.
    host.unified(own="/docker/abc/app", root="/docker/abc").group("/app", os.getpid())
    found = host.discover()
    assert (found.base, found.own) == ("/app", "/app")
    assert found.jobs == host.cgroup2 / "app" / "jobs"


def test_own_group_at_the_mount_root(host):
    host.unified(own="/docker/abc", root="/docker/abc")
    found = host.discover()
    assert (found.base, found.own) == ("/jobworker", "/")


def test_discovery_through_an_escaped_mount_point(tmp_path):
    host = FakeHost(tmp_path)
    spaced = tmp_path / "cgroup two"
    spaced.mkdir()
    (spaced / "cgroup.controllers").write_text("cpu io memory pids\n")
    escaped = str(spaced).replace(" ", r"\040")
    line = f"30 23 0:26 / {escaped} rw,relatime - cgroup2 cgroup2 rw\n"
    host.write(line, "0::/\n", "")  # the unescaped tmp dir "cgroup2" has no controllers
    found = host.discover()
    assert found.mount == spaced
    assert found.jobs == spaced / "jobworker" / "jobs"
