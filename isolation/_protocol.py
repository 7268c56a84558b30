"""What the launcher, a shim and a job's first process tell each other, and the shim's state file.

One SOCK_SEQPACKET connection per shim carries the conversation (see ``_shim``): the
shim sends ``READY``; the launcher sends a ``Request``; the shim answers ``Cloned`` or
``Failed``. A step of the job's first process that fails before its exec is reported
on the launch-error pipe as a ``Failed`` too, in the same encoding, so the launcher
reads both channels with one decoder. The shim records a ``ShimState`` in the run
directory, for a restarted service to find it again.

Every type here is frozen and encodes itself; ``decode`` checks every field and raises
``MalformedMessage`` for anything else, so neither end reads a dict by key. Both ends
are the same code base, but the state file outlives the service that wrote it, and a
damaged file must not crash its reader.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from jobworker.isolation.errors import MalformedMessage
from jobworker.isolation.filesystem import Bind, Filesystem, Tmpfs
from jobworker.isolation.rundir import RunDir
from jobworker.isolation.timelimits import TimeLimits

T = TypeVar("T")

READY = b"ready"
"""A spare shim's first message, with its own pidfd and the launch-error pipe's read end;
also the fork server's first message, once it runs (see ``_forkserver``)."""

ORDER = b"shim"
"""The launcher's order to the fork server: fork a shim for the connection attached."""

MAX_REQUEST = 1 << 20
"""Bigger than any request the launcher accepts: argv and env are capped at 128 KiB,
which JSON's escapes can at most make six times larger."""


@dataclass(frozen=True)
class ProcessSetup:
    """What the job's first process does on its way to exec, as the launcher decided it.

    The shim passes it on untouched (see ``child.ChildPlan``), adding only descriptors.
    The defaults are a process with no isolation beyond its cgroup, running as root.
    """

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str = "/"
    pid_namespace: bool = False
    """Cloned into a new PID namespace, whose init it stays, with /proc mounted anew."""
    unshare_flags: int = 0
    private_mounts: bool = False
    hostname: str | None = None
    uid: int | None = None
    """The user the command runs as; None keeps the shim's (root), gid and groups too."""
    gid: int | None = None
    groups: tuple[int, ...] = ()
    no_new_privs: bool = False
    """Whether exec may never raise privileges again (setuid binaries run as the caller)."""
    filesystem: Filesystem = field(default_factory=Filesystem)
    """The job's view of the filesystem, as ``Filesystem.for_job`` made it (see ``_mounts``)."""
    capabilities: tuple[int, ...] | None = None
    """The only capabilities the command may hold (see ``_capabilities``); None: all of root's."""
    seccomp: bool = False
    """Whether the default syscall filter (``_seccomp``) is loaded just before exec."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object this setup is sent as, inside a ``Request``."""
        return {
            "argv": list(self.argv),
            "env": dict(self.env),
            "cwd": self.cwd,
            "pid_namespace": self.pid_namespace,
            "unshare_flags": self.unshare_flags,
            "private_mounts": self.private_mounts,
            "hostname": self.hostname,
            "uid": self.uid,
            "gid": self.gid,
            "groups": list(self.groups),
            "no_new_privs": self.no_new_privs,
            "filesystem": _filesystem_dict(self.filesystem),
            "capabilities": None if self.capabilities is None else list(self.capabilities),
            "seccomp": self.seccomp,
        }

    @classmethod
    def from_dict(cls, data: object) -> ProcessSetup:
        """Inverse of ``to_dict``."""
        fields = _Fields(data, "process setup")
        setup = cls(
            argv=fields.strings("argv"),
            env=fields.string_map("env"),
            cwd=fields.string("cwd"),
            pid_namespace=fields.boolean("pid_namespace"),
            unshare_flags=fields.integer("unshare_flags"),
            private_mounts=fields.boolean("private_mounts"),
            hostname=fields.optional_string("hostname"),
            uid=fields.optional_integer("uid"),
            gid=fields.optional_integer("gid"),
            groups=fields.integers("groups"),
            no_new_privs=fields.boolean("no_new_privs"),
            filesystem=_filesystem(fields.value("filesystem")),
            capabilities=fields.optional_integers("capabilities"),
            seccomp=fields.boolean("seccomp"),
        )
        fields.done()
        return setup


def _filesystem_dict(view: Filesystem) -> dict[str, Any]:
    return {
        "read_only": view.read_only,
        "tmpfs": [{"path": t.path, "size_bytes": t.size_bytes} for t in view.tmpfs],
        "binds": [
            {"source": b.source, "destination": b.destination, "read_only": b.read_only}
            for b in view.binds
        ],
        "rootfs": view.rootfs,
    }


def _filesystem(data: object) -> Filesystem:
    """Inverse of ``_filesystem_dict``."""
    fields = _Fields(data, "filesystem")
    tmpfs, binds = [], []
    for item in fields.objects("tmpfs"):
        one = _Fields(item, "tmpfs")
        tmpfs.append(Tmpfs(one.string("path"), one.optional_integer("size_bytes")))
        one.done()
    for item in fields.objects("binds"):
        one = _Fields(item, "bind")
        binds.append(
            Bind(one.string("source"), one.string("destination"), one.boolean("read_only"))
        )
        one.done()
    view = Filesystem(
        read_only=fields.boolean("read_only"),
        tmpfs=tuple(tmpfs),
        binds=tuple(binds),
        rootfs=fields.optional_string("rootfs"),
    )
    fields.done()
    return view


@dataclass(frozen=True)
class Request:
    """A job for a spare shim: where it goes, where its files go, and how to start it."""

    job_id: str
    cgroup: Path
    run_dir: RunDir
    process: ProcessSetup
    output_cap: int | None = None
    account: tuple[str, str] | None = None
    """A passwd and a group line naming a user the host does not know, for the job's /etc."""
    stdin: bool = False
    """Standard input is the run directory's ``stdin`` file; else /dev/null."""
    time_limits: TimeLimits = field(default_factory=TimeLimits)
    """Enforced by the shim, which outlives the service (see ``_timekeeper``)."""

    def encode(self) -> bytes:
        """Wire form: UTF-8, so it stays close to the size the spec caps (under MAX_REQUEST)."""
        message = {
            "job_id": self.job_id,
            "cgroup": str(self.cgroup),
            "run_dir": str(self.run_dir.path),
            "process": self.process.to_dict(),
            "output_cap": self.output_cap,
            "account": None if self.account is None else list(self.account),
            "stdin": self.stdin,
            "time_limits": {
                "timeout": self.time_limits.timeout,
                "cpu_time": self.time_limits.cpu_time,
                "grace": self.time_limits.grace,
            },
        }
        return json.dumps(message, ensure_ascii=False).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Request:
        """Inverse of ``encode``."""
        fields = _Fields(_json(raw, "request"), "request")
        account = fields.optional_strings("account")
        if account is not None and len(account) != 2:
            raise MalformedMessage(f"request: account has {len(account)} lines, not 2")
        request = cls(
            job_id=fields.string("job_id"),
            cgroup=Path(fields.string("cgroup")),
            run_dir=RunDir(Path(fields.string("run_dir"))),
            process=ProcessSetup.from_dict(fields.value("process")),
            output_cap=fields.optional_integer("output_cap"),
            account=None if account is None else (account[0], account[1]),
            stdin=fields.boolean("stdin"),
            time_limits=_time_limits(fields.value("time_limits")),
        )
        fields.done()
        return request


@dataclass(frozen=True)
class Cloned:
    """The shim's reply once the job's first process exists (its pidfd rides along)."""

    pid: int
    started_at: datetime

    def encode(self) -> bytes:
        """Wire form; ``decode_reply`` reads it."""
        message = {"event": "cloned", "pid": self.pid, "started_at": self.started_at.isoformat()}
        return json.dumps(message).encode()

    @classmethod
    def _from_fields(cls, fields: _Fields) -> Cloned:
        return cls(pid=fields.integer("pid"), started_at=fields.timestamp("started_at"))


@dataclass(frozen=True)
class Failed:
    """A step before the command's exec failed: which one (``exec``, ``chdir``, ...) and why.

    Sent by the shim as its reply when the job's process could not even be made, and
    by that process on the launch-error pipe when one of its own steps failed.
    """

    stage: str
    errno: int
    message: str

    def encode(self) -> bytes:
        """Wire form for either channel; ``decode`` and ``decode_reply`` read it."""
        failed = {"event": "failed", "stage": self.stage, "errno": self.errno}
        return json.dumps({**failed, "message": self.message}).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Failed:
        """What the launch-error pipe held; inverse of ``encode``."""
        reply = decode_reply(raw)
        if not isinstance(reply, Failed):
            raise MalformedMessage("launch error: a report of success on the error channel")
        return reply

    @classmethod
    def _from_fields(cls, fields: _Fields) -> Failed:
        return cls(
            stage=fields.string("stage"),
            errno=fields.integer("errno"),
            message=fields.string("message"),
        )


Reply = Cloned | Failed


def decode_reply(raw: bytes) -> Reply:
    """The shim's answer to a request (or a failure from the launch-error pipe)."""
    fields = _Fields(_json(raw, "reply"), "reply")
    event = fields.string("event")
    reply: Reply
    if event == "cloned":
        reply = Cloned._from_fields(fields)
    elif event == "failed":
        reply = Failed._from_fields(fields)
    else:
        raise MalformedMessage(f"reply: unknown event {event!r}")
    fields.done()
    return reply


@dataclass(frozen=True)
class ShimState:
    """What a shim records about itself and its job, so that a successor can find them.

    The start ticks tell a process from a later one that reuses its PID.
    """

    shim_pid: int
    shim_ticks: int
    main_pid: int
    main_ticks: int
    started_at: datetime

    def encode(self) -> str:
        """The text of the state file."""
        return json.dumps(
            {
                "shim_pid": self.shim_pid,
                "shim_ticks": self.shim_ticks,
                "main_pid": self.main_pid,
                "main_ticks": self.main_ticks,
                "started_at": self.started_at.isoformat(),
            }
        )

    @classmethod
    def decode(cls, text: str) -> ShimState:
        """Inverse of ``encode``."""
        fields = _Fields(_json(text, "shim state"), "shim state")
        state = cls(
            shim_pid=fields.integer("shim_pid"),
            shim_ticks=fields.integer("shim_ticks"),
            main_pid=fields.integer("main_pid"),
            main_ticks=fields.integer("main_ticks"),
            started_at=fields.timestamp("started_at"),
        )
        fields.done()
        return state


def _time_limits(data: object) -> TimeLimits:
    fields = _Fields(data, "time limits")
    limits = TimeLimits(
        timeout=fields.optional_number("timeout"),
        cpu_time=fields.optional_number("cpu_time"),
        grace=fields.number("grace"),
    )
    fields.done()
    return limits


def _json(raw: bytes | str, what: str) -> object:
    try:
        return json.loads(raw)
    except ValueError as error:  # UnicodeDecodeError is one too
        raise MalformedMessage(f"{what}: not JSON ({error})") from None


@dataclass
class _Fields:
    """A JSON object read field by field, each checked for its type.

    ``done`` refuses fields nobody read: a message from another version says so
    instead of losing what it meant.
    """

    data: object
    what: str
    _read: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not isinstance(self.data, dict):
            raise MalformedMessage(f"{self.what}: not a JSON object")

    def value(self, key: str) -> object:
        assert isinstance(self.data, dict)
        if key not in self.data:
            raise MalformedMessage(f"{self.what}: no {key}")
        self._read.add(key)
        return self.data[key]

    def done(self) -> None:
        assert isinstance(self.data, dict)
        unknown = sorted(set(self.data) - self._read)
        if unknown:
            raise MalformedMessage(f"{self.what}: unknown fields {', '.join(unknown)}")

    def string(self, key: str) -> str:
        return self._typed(key, self.value(key), str, "a string")

    def optional_string(self, key: str) -> str | None:
        value = self.value(key)
        return None if value is None else self._typed(key, value, str, "a string")

    def boolean(self, key: str) -> bool:
        return self._typed(key, self.value(key), bool, "true or false")

    def integer(self, key: str) -> int:
        value = self.value(key)
        if isinstance(value, bool):  # JSON's true is not 1
            raise MalformedMessage(f"{self.what}: {key} is not an integer")
        return self._typed(key, value, int, "an integer")

    def optional_integer(self, key: str) -> int | None:
        return None if self.value(key) is None else self.integer(key)

    def number(self, key: str) -> float:
        value = self.value(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MalformedMessage(f"{self.what}: {key} is not a number")
        return float(value)

    def optional_number(self, key: str) -> float | None:
        return None if self.value(key) is None else self.number(key)

    def strings(self, key: str) -> tuple[str, ...]:
        items = self._typed(key, self.value(key), list, "a list")
        return tuple(self._typed(key, item, str, "a list of strings") for item in items)

    def optional_strings(self, key: str) -> tuple[str, ...] | None:
        return None if self.value(key) is None else self.strings(key)

    def integers(self, key: str) -> tuple[int, ...]:
        items = self._typed(key, self.value(key), list, "a list")
        if any(isinstance(item, bool) for item in items):
            raise MalformedMessage(f"{self.what}: {key} is not a list of integers")
        return tuple(self._typed(key, item, int, "a list of integers") for item in items)

    def objects(self, key: str) -> list[object]:
        return self._typed(key, self.value(key), list, "a list")

    def optional_integers(self, key: str) -> tuple[int, ...] | None:
        return None if self.value(key) is None else self.integers(key)

    def string_map(self, key: str) -> dict[str, str]:
        items = self._typed(key, self.value(key), dict, "an object")
        return {name: self._typed(key, value, str, "strings") for name, value in items.items()}

    def timestamp(self, key: str) -> datetime:
        text = self.string(key)
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            raise MalformedMessage(f"{self.what}: {key} {text!r} is not a time") from None

    def _typed(self, key: str, value: object, kind: type[T], described: str) -> T:
        if not isinstance(value, kind):
            raise MalformedMessage(f"{self.what}: {key} is not {described}")
        return value


@dataclass(frozen=True)
class ForkFailed:
    """The fork server's answer on a shim's connection instead of its ``READY``.

    It comes when the shim could not be forked (EAGAIN from a pids limit, ENOMEM).
    """

    PREFIX: ClassVar[bytes] = b"fork failed\0"

    errno: int
    reason: str

    def encode(self) -> bytes:
        return self.PREFIX + f"{self.errno}\0{self.reason}".encode()

    @classmethod
    def is_one(cls, message: bytes) -> bool:
        return message.startswith(cls.PREFIX)

    @classmethod
    def decode(cls, message: bytes) -> ForkFailed:
        if not cls.is_one(message):
            raise MalformedMessage(f"not a failed fork: {message[:64]!r}")
        number, _, reason = message[len(cls.PREFIX) :].decode(errors="replace").partition("\0")
        if not number.isdigit():
            raise MalformedMessage(f"a failed fork without an errno: {message[:64]!r}")
        return cls(int(number), reason)
