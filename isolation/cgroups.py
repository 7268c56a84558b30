"""Finding a usable cgroup v2 hierarchy, laying out our groups in it, and one group per job.

Layout, under a *base* group (``--cgroup-parent``, or chosen as described in
``CgroupHost._default_base``)::

    <base>/supervisor/      leaf: the service, its fork server and the job shims
    <base>/jobs/<job-id>/   leaf: one job, with its limits

The service never sits in a group whose children get domain controllers (the
kernel's no-internal-processes rule), so when it starts inside ``<base>`` or in
the root group it moves itself into the ``supervisor`` leaf. Under systemd the
base is a scope of the jobs' own and the service stays in its unit's group
(see ``_systemd``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from jobworker.isolation import _syscalls as syscalls
from jobworker.isolation._mountinfo import read_mounts
from jobworker.isolation._systemd import Scope
from jobworker.isolation.errors import (
    HostUnsupported,
    InvalidDevice,
    IsolationError,
    LimitUnenforceable,
)

REQUIRED_CONTROLLERS = ("cpu", "memory", "io", "pids")
OPTIONAL_CONTROLLERS = ("cpuset",)
"""Enabled where delegated; only a job asking for what it controls needs it."""
_V1_NAMES = {"cpu": "cpu", "memory": "memory", "io": "blkio", "pids": "pids"}
_UNIFIED_HINT = (
    "boot the kernel with systemd.unified_cgroup_hierarchy=1 (and cgroup_no_v1=all) so that "
    "all controllers move to cgroup v2"
)
_DELEGATE_HINT = (
    "run the service as a systemd service (for example "
    "`systemd-run --unit=jobworker jobworker server`: its jobs then go in a scope "
    "with Delegate=yes), or pass --cgroup-parent naming a group that has no "
    "processes of its own"
)


def own_cgroup(proc_cgroup: Path) -> str:
    """The calling process's cgroup v2 path, from the ``0::`` line of /proc/PID/cgroup."""
    for line in proc_cgroup.read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    raise HostUnsupported(
        f"{proc_cgroup} has no cgroup v2 entry: this host has no unified hierarchy; "
        + _UNIFIED_HINT
    )


@dataclass(frozen=True)
class CgroupHost:
    """A cgroup v2 hierarchy checked to be usable, and where our groups live in it.

    What keeps jobs from being isolated here is ``HostUnsupported``, saying how to fix
    it. An ``OSError`` the kernel gives no reason to expect (reading /proc or cgroupfs
    files that are always there, root making its own groups) is passed on as it is.
    """

    mount: Path
    base: str
    own: str
    scope: Scope | None = None
    """The systemd scope whose group is ``base``, when we run as a systemd service."""

    @property
    def supervisor(self) -> Path:
        """The leaf group for the service and its helper processes."""
        return self._path(self.base) / "supervisor"

    @property
    def jobs(self) -> Path:
        """The parent of every job's group; controllers are enabled here."""
        return self._path(self.base) / "jobs"

    def _path(self, group: str) -> Path:
        return self.mount / group.lstrip("/")

    @classmethod
    def discover(
        cls,
        parent: str | None = None,
        *,
        proc_self: Path = Path("/proc/self"),
        euid: int | None = None,
        clone3: bool | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> CgroupHost:
        """Check, without changing anything, that jobs can be isolated here.

        Raises ``HostUnsupported`` with every problem found and how to fix each.
        """
        problems = []
        if (os.geteuid() if euid is None else euid) != 0:
            problems.append(
                "jobworker must run as root to create cgroups and namespaces "
                "(use sudo, or run it as a systemd service)"
            )
        if not (syscalls.clone3_available() if clone3 is None else clone3):
            problems.append(
                "clone3 is refused here (a seccomp filter, as some container runtimes "
                "install, blocks it); jobworker starts every job inside its cgroup with "
                "clone3(CLONE_INTO_CGROUP): run it on the host or allow clone3"
            )
        mounts = read_mounts(proc_self / "mountinfo")
        unified = [m for m in mounts if m.fstype == "cgroup2"]
        if not unified:
            problems.append("no cgroup v2 filesystem is mounted (cgroup v1 only); " + _UNIFIED_HINT)
            raise HostUnsupported("; ".join(problems))
        mount = unified[0]
        available = set(_read_words(mount.point / "cgroup.controllers"))
        missing = [c for c in REQUIRED_CONTROLLERS if c not in available]
        if missing:
            on_v1 = sorted(
                str(m.point)
                for m in mounts
                if m.fstype == "cgroup" and any(_V1_NAMES[c] in m.super_options for c in missing)
            )
            if on_v1:
                problems.append(
                    f"cgroup v2 at {mount.point} lacks the {', '.join(missing)} "
                    f"controller(s) because this host runs a hybrid hierarchy that binds "
                    f"them to cgroup v1 ({', '.join(on_v1)}); " + _UNIFIED_HINT
                )
            else:
                problems.append(
                    f"cgroup v2 at {mount.point} lacks the {', '.join(missing)} "
                    "controller(s); enable them in the kernel configuration"
                )
        if problems:
            raise HostUnsupported("; ".join(problems))
        own = own_cgroup(proc_self / "cgroup")
        if mount.root != "/" and (own == mount.root or own.startswith(mount.root + "/")):
            own = own[len(mount.root) :] or "/"
        host = cls(mount=mount.point, base=parent or "/", own=own)
        if parent is None:
            scope = Scope.for_service(own, os.environ if environ is None else environ, os.getpid())
            base = host._default_base() if scope is None else scope.cgroup
            host = cls(mount=mount.point, base=base, own=own, scope=scope)
        elif not parent.startswith("/") or ".." in parent.split("/"):
            raise HostUnsupported(
                f"--cgroup-parent {parent!r} must be an absolute path inside the cgroup "
                f"hierarchy, such as /jobworker (relative to {mount.point})"
            )
        return host

    def _default_base(self) -> str:
        """Outside a systemd service: our own group when it holds nothing but us, else /jobworker.

        A group of our own is, for example, a scope made for us with ``Delegate=yes``.
        """
        if self.own != "/":
            try:
                members = _read_words(self._path(self.own) / "cgroup.procs")
            except OSError:
                members = []
            if members == [str(os.getpid())]:
                return self.own
        return "/jobworker"

    def prepare(self) -> None:
        """Create our groups, move the service into its leaf and enable the controllers.

        A scope's group is systemd's to make: it must exist (``enter``) beforehand.
        """
        base = self._path(self.base)
        if self.scope is None:
            base.mkdir(parents=True, exist_ok=True)
        self.supervisor.mkdir(exist_ok=True)
        if not (self.supervisor / "cgroup.kill").exists():
            raise HostUnsupported(
                f"kernel {os.uname().release} lacks cgroup.kill, which jobworker uses to end "
                "every process of a job at once; it needs Linux 5.14 or newer"
            )
        if self.own in ("/", self.base):
            _write(self.supervisor / "cgroup.procs", str(os.getpid()))
        stray = _read_words(base / "cgroup.procs")
        if stray:
            raise HostUnsupported(
                f"cgroup {self.base} still holds processes {', '.join(stray)} that are not "
                "jobworker's, so no controllers can be enabled for its children; " + _DELEGATE_HINT
            )
        self.jobs.mkdir(exist_ok=True)
        for group in _ancestors(self.mount, self.jobs):
            # Optional controllers only where nobody else decides: the root and our own
            # groups (a systemd unit that delegates them has them enabled above it).
            ours = group == self.mount or group.is_relative_to(base)
            self._enable_controllers(group, OPTIONAL_CONTROLLERS if ours else ())

    def base_exists(self) -> bool:
        """Whether the base group is there (a scope's: whether systemd still keeps it)."""
        return self._path(self.base).is_dir()

    def enter(self, pid: int) -> bool:
        """Move process ``pid`` into the supervisor leaf; False if the base group is gone.

        Never creates the base: under systemd that is the scope's group, which only
        systemd may make (it removes it once empty, perhaps just now).
        """
        try:
            self.supervisor.mkdir(exist_ok=True)
            _write(self.supervisor / "cgroup.procs", str(pid))
        except FileNotFoundError:
            return False
        except OSError as error:
            if error.errno == errno.ENODEV:  # removed between open and write
                return False
            raise HostUnsupported(
                f"cannot move process {pid} into cgroup {self.supervisor}: {error.strerror}"
            ) from None
        return True

    def remove_base(self) -> None:
        """Remove the base group and everything under it, all empty, deepest first.

        For what a scope leaves when systemd drops it while we enter it: its group then
        stays, and systemd could not make the scope again on top of it.
        """
        for group, _children, _files in os.walk(self._path(self.base), topdown=False):
            try:
                os.rmdir(group)
            except OSError as error:
                raise HostUnsupported(
                    f"cannot remove cgroup {group}, left over from an earlier "
                    f"{self.base}: {error.strerror}; remove it by hand"
                ) from None

    def _enable_controllers(self, group: Path, optional: tuple[str, ...]) -> None:
        enabled = set(_read_words(group / "cgroup.subtree_control"))
        wanted = [c for c in (*REQUIRED_CONTROLLERS, *optional) if c not in enabled]
        if not wanted:
            return
        available = set(_read_words(group / "cgroup.controllers"))
        wanted = [c for c in wanted if c in available or c in REQUIRED_CONTROLLERS]
        if not wanted:
            return
        absent = [c for c in wanted if c not in available]
        name = "/" + str(group.relative_to(self.mount)).lstrip(".")
        if absent:
            raise HostUnsupported(
                f"the {', '.join(absent)} controller(s) are not delegated to cgroup {name}; "
                + _DELEGATE_HINT
            )
        try:
            _write(group / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
        except OSError as error:
            if error.errno == errno.EBUSY:
                raise HostUnsupported(
                    f"cannot enable controllers below cgroup {name}: it contains processes "
                    "(the kernel's no-internal-processes rule); " + _DELEGATE_HINT
                ) from None
            raise HostUnsupported(
                f"cannot enable controllers below cgroup {name}: {error.strerror}"
            ) from None

    def limit_jobs(self, *, memory_bytes: int, pids: int) -> None:
        """Limit all jobs together (the ``jobs/`` group), so that a reserve stays for us.

        See ``capacity``: the service and its helpers live outside ``jobs/``, so what
        jobs cannot take stays free for them. Swap is not limited here: each job's
        own memory limit already keeps it from swapping.
        """
        for name, value in (("memory.max", memory_bytes), ("pids.max", pids)):
            try:
                _write(self.jobs / name, str(value))
            except OSError as error:
                raise HostUnsupported(
                    f"cannot limit all jobs together ({name} of {self.jobs}): {error.strerror}"
                ) from None

    def job_group(self, job_id: str) -> JobCgroup:
        """The group of one job, whether or not it exists yet."""
        return JobCgroup(self.jobs / job_id)

    def existing_job_groups(self) -> list[JobCgroup]:
        """Groups left under ``jobs/``, for example by a service that crashed."""
        if not self.jobs.is_dir():
            return []
        return [JobCgroup(path) for path in sorted(self.jobs.iterdir()) if path.is_dir()]


def _remove_group(group: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        group.rmdir()


def _ancestors(mount: Path, group: Path) -> Iterator[Path]:
    """From the hierarchy's root down to the parent of ``group``'s children: root .. group."""
    parts = group.relative_to(mount).parts
    for depth in range(len(parts) + 1):
        yield mount.joinpath(*parts[:depth])


def _read_words(path: Path) -> list[str]:
    return path.read_text().split()


def _write(path: Path, value: str) -> None:
    """Write one value the way cgroupfs wants it: a single write(2), no buffering."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Usage:
    """Resources a job consumed, read from its group just before the group is removed.

    A field is ``None`` when this kernel does not report it (memory.peak needs
    5.19, pids.peak 6.1).
    """

    cpu_user_usec: int | None = None
    cpu_system_usec: int | None = None
    memory_peak_bytes: int | None = None
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None
    pids_peak: int | None = None
    memory_high_events: int | None = None
    """How often the job went over its memory.high and was throttled (memory.events)."""
    memory_max_events: int | None = None
    """How often it reached memory.max, whether or not that ended in an OOM kill."""


@dataclass(frozen=True)
class Remains:
    """What ``JobCgroup.tear_down`` found: how the job's memory ended and what it used."""

    oom_killed: bool
    usage: Usage
    survivors: list[int]


@dataclass(frozen=True)
class JobCgroup:
    """The cgroup of one job.

    Every kernel error becomes an ``IsolationError`` (a refused setting an
    ``InvalidDevice`` or ``HostUnsupported``); a group that is gone is not an error
    where a method says what that means instead.
    """

    path: Path

    @property
    def name(self) -> str:
        """The job id the group is named after."""
        return self.path.name

    def create(self, settings: Iterable[tuple[str, str]]) -> None:
        """Make the group and apply its limits; on any failure nothing is left behind."""
        try:
            self.path.mkdir()
        except FileExistsError:
            raise IsolationError(f"cgroup {self.path} already exists") from None
        except OSError as error:
            raise IsolationError(f"cannot create cgroup {self.path}: {error.strerror}") from None
        try:
            for name, value in settings:
                self._apply(name, value)
        except BaseException:
            self.remove()
            raise

    def _apply(self, name: str, value: str) -> None:
        try:
            _write(self.path / name, value)
        except OSError as error:
            if name == "memory.swap.max" and error.errno == errno.ENOENT:
                return  # no swap accounting: the kernel then has no swap to escape into
            if name == "io.max":
                disk = value.split(maxsplit=1)[0]
                raise InvalidDevice(
                    "io", f"the kernel refused an IO limit on {disk}: {error.strerror}"
                ) from None
            if name == "cpuset.cpus":
                raise LimitUnenforceable(
                    "cpuset",
                    "the cpuset controller is not delegated to the service's cgroup"
                    if error.errno == errno.ENOENT
                    else f"the kernel refused CPUs {value} for this service: {error.strerror}",
                ) from None
            raise HostUnsupported(f"cannot set {name} in {self.path}: {error.strerror}") from None

    def pids(self) -> list[int]:
        """Every process currently in the group; none once the group is gone."""
        return [int(pid) for pid in (self._read("cgroup.procs") or "").split()]

    def kill(self) -> bool:
        """SIGKILL every process in the group at once, escaped daemons included.

        Returns False when the group is already gone, which means its job ended.
        """
        try:
            _write(self.path / "cgroup.kill", "1")
        except FileNotFoundError:
            return False
        except OSError as error:
            if error.errno == errno.ENODEV:
                return False
            raise IsolationError(f"cannot kill the job in {self.path}: {error.strerror}") from None
        return True

    def wait_empty(self, timeout: float) -> bool:
        """Block until no process is left in the group; False on timeout.

        cgroup.events is a kernfs file: poll() wakes with POLLPRI when it changes,
        so this sleeps until the kernel says so instead of polling on a timer.
        """
        deadline = time.monotonic() + timeout
        events = self.path / "cgroup.events"
        try:
            fd = os.open(events, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        except OSError as error:
            raise IsolationError(f"cannot read {events}: {error.strerror}") from None
        try:
            poller = select.poll()
            poller.register(fd, select.POLLPRI | select.POLLERR)
            while True:
                try:
                    if b"populated 0" in os.pread(fd, 4096, 0):
                        return True
                except OSError as error:
                    if error.errno == errno.ENODEV:  # removed since it was opened: empty
                        return True
                    raise IsolationError(f"cannot read {events}: {error.strerror}") from None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                poller.poll(remaining * 1000)
        finally:
            os.close(fd)

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer killed anything in the job.

        memory.events (not .local) also counts kills in nested groups.
        """
        events = self._keyed("memory.events")
        return events.get("oom_kill", 0) > 0 or events.get("oom_group_kill", 0) > 0

    def usage(self) -> Usage:
        """Read what the job consumed; meaningful once its processes are gone."""
        cpu = self._keyed("cpu.stat")
        memory_events = self._keyed("memory.events")
        read_bytes = write_bytes = 0
        io_stat = self._read("io.stat")
        for line in (io_stat or "").splitlines():
            for item in line.split()[1:]:
                key, _, value = item.partition("=")
                if key == "rbytes":
                    read_bytes += int(value)
                elif key == "wbytes":
                    write_bytes += int(value)
        return Usage(
            cpu_user_usec=cpu.get("user_usec"),
            cpu_system_usec=cpu.get("system_usec"),
            memory_peak_bytes=self._number("memory.peak"),
            io_read_bytes=read_bytes if io_stat is not None else None,
            io_write_bytes=write_bytes if io_stat is not None else None,
            pids_peak=self._number("pids.peak"),
            memory_high_events=memory_events.get("high"),
            memory_max_events=memory_events.get("max"),
        )

    def cpu_usage_usec(self) -> int | None:
        """CPU time all the job's processes have used so far; None once the group is gone."""
        return self._keyed("cpu.stat").get("usage_usec")

    def tear_down(self, timeout: float) -> Remains:
        """Kill everything in the group, read its accounting, and remove it.

        Safe on a group that is already gone. If processes survive ``timeout``
        seconds (only possible if one is stuck in the kernel), the group is kept
        and ``Remains.survivors`` names them.
        """
        if not self.kill():
            return Remains(oom_killed=False, usage=Usage(), survivors=[])
        if not self.wait_empty(timeout):
            return Remains(self.oom_killed(), self.usage(), survivors=self.pids())
        remains = Remains(self.oom_killed(), self.usage(), survivors=[])
        self.remove()
        return remains

    def remove(self) -> None:
        """Delete the (empty) group and every group a job made inside it, deepest first.

        A job running as root may create child groups in its own (cgroup.kill and
        ``populated`` cover them, but rmdir of a group with children fails with
        EBUSY). A group already gone is fine.
        """
        try:
            below = [Path(top) / name for top, names, _ in os.walk(self.path) for name in names]
            for group in sorted(below, key=lambda path: len(path.parts), reverse=True):
                _remove_group(group)
            _remove_group(self.path)
        except OSError as error:
            raise IsolationError(
                f"cannot remove cgroup {error.filename}: {error.strerror}"
            ) from None

    def _read(self, name: str) -> str | None:
        """Read an interface file; None once the group is gone.

        A group removed between open and read (its shim tearing it down at the
        same moment) answers ENODEV rather than ENOENT: both mean "gone".
        """
        path = self.path / name
        try:
            return path.read_text()
        except FileNotFoundError:
            return None
        except OSError as error:
            if error.errno == errno.ENODEV:
                return None
            raise IsolationError(f"cannot read {path}: {error.strerror}") from None

    def _number(self, name: str) -> int | None:
        text = self._read(name)
        return int(text) if text is not None and text.strip().isdigit() else None

    def _keyed(self, name: str) -> dict[str, int]:
        pairs = (line.split() for line in (self._read(name) or "").splitlines())
        return {pair[0]: int(pair[1]) for pair in pairs if len(pair) == 2}
