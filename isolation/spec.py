"""What to run and how to confine it: the job specification and its validation."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from jobworker.isolation.credentials import Credentials
from jobworker.isolation.errors import InvalidSpec
from jobworker.isolation.filesystem import Filesystem
from jobworker.isolation.limits import Limits, cgroup_settings
from jobworker.isolation.namespaces import Namespaces
from jobworker.isolation.privileges import Privileges
from jobworker.isolation.timelimits import TimeLimits

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

MAX_ARGV_BYTES = 128 * 1024
"""Command line and environment together; far below the kernel's limit, far above real use."""

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def job_environment(
    job_id: str, extra: Mapping[str, str] | None = None, user: Credentials | None = None
) -> dict[str, str]:
    """The environment a job starts with: a fixed minimal one plus what the caller adds.

    The service's own environment never leaks into jobs (it may hold secrets),
    just as systemd services start from a clean environment. A job run as a
    user gets that user's HOME, USER and LOGNAME, as systemd's User= does.
    """
    env = {"PATH": DEFAULT_PATH, "HOME": "/root", "JOBWORKER_JOB_ID": job_id}
    if user is not None:
        env.update(HOME=user.home, USER=user.name, LOGNAME=user.name)
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class JobSpec:
    """One job to launch. ``run_dir`` must exist; the shim keeps the job's files there."""

    job_id: str
    argv: tuple[str, ...]
    run_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str = "/"
    limits: Limits = field(default_factory=Limits)
    namespaces: Namespaces = field(default_factory=Namespaces)
    output_cap: int | None = None
    user: Credentials | None = None
    """None: the command runs as the service does (root), with all its groups."""
    stdin: bool = False
    """The caller wrote the job's standard input to ``RunDir(run_dir).stdin``."""
    filesystem: Filesystem = field(default_factory=Filesystem)
    privileges: Privileges = field(default_factory=Privileges)
    time_limits: TimeLimits = field(default_factory=TimeLimits)

    def validate(self, *, sys_root: Path = Path("/sys")) -> ValidSpec:
        """Refuse anything invalid before a cgroup or process exists; what may be launched."""
        if not _JOB_ID.fullmatch(self.job_id):
            raise InvalidSpec("job_id", f"{self.job_id!r} is not a valid job id")
        if not self.argv or not self.argv[0]:
            raise InvalidSpec("command", "the command must not be empty")
        for index, argument in enumerate(self.argv):
            if "\0" in argument:  # named as the caller wrote them: the command, then args[i]
                where = "command" if index == 0 else f"args[{index - 1}]"
                raise InvalidSpec(where, "contains a NUL byte")
        for name, value in self.env.items():
            if not _ENV_NAME.fullmatch(name):
                raise InvalidSpec("env", f"{name!r} is not a valid variable name")
            if "\0" in value:
                raise InvalidSpec(f"env.{name}", "contains a NUL byte")
        size = sum(len(a.encode()) + 1 for a in self.argv)
        size += sum(len(k.encode()) + len(v.encode()) + 2 for k, v in self.env.items())
        if size > MAX_ARGV_BYTES:
            raise InvalidSpec("command", f"command and environment exceed {MAX_ARGV_BYTES} bytes")
        if not self.cwd.startswith("/") or "\0" in self.cwd:
            raise InvalidSpec("working_directory", f"{self.cwd!r} must be an absolute path")
        cap = self.output_cap
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
            raise InvalidSpec("output_cap", f"{cap!r} must be a size in bytes")
        self.namespaces.validate()
        self.filesystem.validate(self.namespaces)
        self.privileges.validate()
        if self.user is not None:
            self.privileges.check_user(root=self.user.is_root)
        self.time_limits.validate()
        settings = cgroup_settings(self.limits, sys_root=sys_root)
        if self.namespaces.pid and self.limits.pids is not None and self.limits.pids < 2:
            raise InvalidSpec("pids", "must be at least 2 with a pid namespace: its init counts")
        return ValidSpec(self, tuple(settings))


@dataclass(frozen=True)
class ValidSpec:
    """A ``JobSpec`` that ``JobSpec.validate`` accepted, with the cgroup settings it came to.

    Made by ``validate`` only: ``Launcher.launch`` takes nothing else, so no job starts
    unchecked, and a caller that validated early (before making anything for the job)
    does not have the spec validated twice.
    """

    spec: JobSpec
    cgroup_settings: tuple[tuple[str, str], ...]

    def as_user(self, user: Credentials) -> ValidSpec:
        """The same job run as ``user``: who runs a job is not part of what is validated.

        For a caller that picks the user after validating, as when the user is made
        for the job only once the job is known to be valid.
        """
        return replace(self, spec=replace(self.spec, user=user))
