"""Who a job runs as, and who may choose: one policy, in one place.

By default every job runs as a **transient user** of its own, as systemd's
``DynamicUser=`` and Nomad's workload users do: a uid (and a group of the same
number) taken from a reserved range when the job starts and given back once the
job's cgroup is gone, with no supplementary groups and a private home directory
that only it can enter. Two jobs therefore never share a uid, so one cannot
signal another, read its ``/proc/PID/environ`` or open its files, even without
a PID namespace. A service that restarts keeps the uids of the jobs it re-adopts.

The policy of who may run as whom:

- a job that names no user runs as the server's default user: transient unless
  the operator chose a fixed account (``--default-user``);
- a non-admin may name only the default user or an account the operator lists
  (``--allow-user``). The comparison covers the whole of what the job would
  get, uid, primary group and supplementary groups: allowing ``nobody`` does not
  allow ``nobody:disk``, whose group alone can write raw block devices;
- an admin may name anyone, root included.

The range of transient ids must be free: at start the service refuses to use a
range that the passwd or group database, or /etc/subuid and /etc/subgid,
already use. The default, 1879048192-1879113727 (0x70000000-0x7000FFFF), lies
in what systemd documents as unused, above the ranges it hands to containers
and to ``DynamicUser=`` (61184-65519), and below 2^31, where some tools
misread uids as negative.
"""

from __future__ import annotations

import grp
import pwd
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from jobworker.isolation import errors as isolation
from jobworker.isolation.credentials import Credentials
from jobworker.runner.errors import CapacityExhausted, InvalidConfiguration, UserNotAllowed

_SUBORDINATE_ID_FILES = (Path("/etc/subuid"), Path("/etc/subgid"))


@dataclass(frozen=True)
class IdRange:
    """Inclusive range of ids reserved for transient users."""

    first: int
    last: int

    def __contains__(self, number: object) -> bool:
        return isinstance(number, int) and self.first <= number <= self.last

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"

    def check_unused(self, subordinate_files: tuple[Path, ...] = _SUBORDINATE_ID_FILES) -> None:
        """Refuse a range that accounts or subordinate id ranges of this host already use.

        Scans the whole passwd and group databases, so it runs once, at start.
        """
        clashes = [f"user {e.pw_name} ({e.pw_uid})" for e in pwd.getpwall() if e.pw_uid in self]
        clashes += [f"group {e.gr_name} ({e.gr_gid})" for e in grp.getgrall() if e.gr_gid in self]
        for path in subordinate_files:
            clashes += [f"{path} entry {line}" for line in _overlapping(path, self)]
        if clashes:
            raise InvalidConfiguration(
                f"the transient user ids {self} are already in use on this host: "
                f"{', '.join(clashes[:5])}; choose a free range with --transient-ids FIRST-LAST"
            )


def _overlapping(path: Path, ids: IdRange) -> list[str]:
    """Lines ``name:start:count`` of a subordinate id file whose ids overlap ``ids``."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        fields = line.split(":")
        if len(fields) != 3 or not (fields[1].isdigit() and fields[2].isdigit()):
            continue
        start, count = int(fields[1]), int(fields[2])
        if start <= ids.last and start + count - 1 >= ids.first:
            found.append(line)
    return found


class TransientUsers:
    """Hands out one uid per job from a reserved range and takes it back when the job is gone.

    Ids are taken in turn, round the range, skipping those in use, so that a uid
    comes back only after the whole range has gone by: whatever a job left
    behind (a file in a shared directory) is then long gone or long stale.
    """

    def __init__(self, ids: IdRange, home_root: Path) -> None:
        self.ids = ids
        self.home_root = home_root
        self._in_use: set[int] = set()
        self._next = ids.first
        self._lock = threading.Lock()
        """Starts allocate, and ends release, on worker threads."""

    def allocate(self, job_id: str) -> Credentials:
        """A new transient user for ``job_id``; its home directory is not made here."""
        size = self.ids.last - self.ids.first + 1
        with self._lock:
            if len(self._in_use) >= size:
                raise CapacityExhausted(f"all {size} transient user ids ({self.ids}) are in use")
            uid = self._next
            while uid in self._in_use:
                uid = self._after(uid)
            self._in_use.add(uid)
            self._next = self._after(uid)
        return self.credentials(job_id, uid)

    def credentials(self, job_id: str, uid: int) -> Credentials:
        """The transient user of ``job_id``, which has ``uid``."""
        return Credentials.transient(f"job-{job_id[:8]}", uid, str(self.home_of(job_id)))

    def home_of(self, job_id: str) -> Path:
        """The private home directory of a job's transient user."""
        return self.home_root / job_id

    def keep(self, uid: int) -> None:
        """Mark ``uid`` as in use: a re-adopted job still runs as it."""
        if uid in self.ids:
            with self._lock:
                self._in_use.add(uid)

    def continue_after(self, uid: int) -> None:
        """Hand out ids after ``uid`` next: the last one given before a restart."""
        if uid in self.ids:
            self._next = self._after(uid)

    def release(self, uid: int) -> None:
        """Give ``uid`` back; its job and everything in its cgroup are gone."""
        with self._lock:
            self._in_use.discard(uid)

    @property
    def in_use(self) -> int:
        """How many transient ids are taken now."""
        return len(self._in_use)

    def _after(self, uid: int) -> int:
        return uid + 1 if uid < self.ids.last else self.ids.first


@dataclass(frozen=True)
class UserPolicy:
    """The default user and the accounts non-admins may choose, resolved once at start.

    A job that names one of them as configured gets what was resolved then, without
    asking the user database again; any other spelling of a user is looked up.
    """

    default: Credentials | None
    """None: every job gets a transient user of its own."""
    allowed: tuple[Credentials, ...]
    allowed_text: tuple[str, ...]
    configured: Mapping[str, Credentials]
    """The default and the allowed users, by the text the operator wrote."""

    @classmethod
    def resolve(cls, default: str | None, allowed: tuple[str, ...]) -> UserPolicy:
        """Look the configured accounts up (blocking: call it off the event loop)."""
        try:
            fixed = Credentials.resolve(default) if default else None
            resolved = tuple(Credentials.resolve(text) for text in allowed)
        except isolation.InvalidSpec as error:
            raise InvalidConfiguration(f"the server's users: {error.reason}") from None
        configured = dict(zip(allowed, resolved, strict=True))
        if default and fixed is not None:
            configured[default] = fixed
        return cls(fixed, resolved, allowed, MappingProxyType(configured))

    def choose(self, requested: str, *, anyone: bool) -> Credentials | None:
        """Who a job asking for ``requested`` runs as; None for a transient user.

        Blocking unless ``requested`` is empty or configured (a user database lookup):
        call it off the event loop. Raises ``UserNotAllowed`` or, for a user that does
        not exist, ``InvalidSpec``.
        """
        if not requested:
            return self.default
        known = self.configured.get(requested)
        if known is not None:
            return known
        wanted = Credentials.resolve(requested)
        if anyone or wanted == self.default or wanted in self.allowed:
            return wanted
        choices = ["the default user" + (f" ({self.default.name})" if self.default else "")]
        choices += [f"{text}" for text in self.allowed_text]
        raise UserNotAllowed(
            f"only an admin may run a job as {requested} (uid {wanted.uid}, gid {wanted.gid}, "
            f"groups {','.join(map(str, wanted.groups))}); others may run as "
            f"{', '.join(choices)}"
        )
