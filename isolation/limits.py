"""Resource limits for one job and their translation into cgroup v2 interface files.

Validation happens here, before any cgroup exists, so a bad value never leaves
half a job behind. The translation is a plain mapping of interface file to
value; writing it is the cgroup module's business.
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from jobworker.isolation.errors import InvalidDevice, InvalidSpec, LimitUnenforceable

CPU_PERIOD_USEC = 100_000
"""cpu.max period: the kernel default, short enough that throttling looks smooth."""

MIN_CPU_QUOTA_USEC = 1_000
"""The kernel refuses a cpu.max quota below 1 ms."""

MIN_MEMORY_BYTES = 6 * 1024 * 1024
"""Below this a job cannot even exec a small binary; docker uses the same floor."""

MAX_PIDS = 4_194_304
"""PID_MAX_LIMIT on 64-bit kernels; pids.max cannot usefully exceed it."""

MIN_CPU_WEIGHT, MAX_CPU_WEIGHT = 1, 10_000
"""The range the kernel accepts for cpu.weight."""

_CPU_LIST = re.compile(r"\d{1,4}(-\d{1,4})?(,\d{1,4}(-\d{1,4})?)*")
_U64_MAX = 2**64 - 1
_MAJ_MIN = re.compile(r"^(\d+):(\d+)$")


@dataclass(frozen=True)
class IOLimit:
    """Throttling for one block device.

    ``device`` is a device path such as ``/dev/vda`` or a ``MAJ:MIN`` pair. A
    partition stands for its whole disk, because io.max only acts on disks.
    """

    device: str
    read_bps: int | None = None
    write_bps: int | None = None
    read_iops: int | None = None
    write_iops: int | None = None


@dataclass(frozen=True)
class Limits:
    """Every limit is optional; ``None`` means the job is not limited in that resource."""

    cpu_cores: float | None = None
    memory_bytes: int | None = None
    pids: int | None = None
    io: tuple[IOLimit, ...] = field(default=())
    memory_high_bytes: int | None = None
    """Where the kernel starts throttling and reclaiming, before ``memory_bytes`` OOM-kills."""
    memory_swap_bytes: int | None = None
    """Swap the job may use; None: none when ``memory_bytes`` is set, else unlimited."""
    cpuset: str | None = None
    """The CPUs the job may run on, in the kernel's list format (``0-1,3``)."""
    cpu_weight: int | None = None
    """Its share of contended CPU against other jobs (cgroup ``cpu.weight``, default 100)."""


_IO_KEYS = (
    ("read_bps", "rbps"),
    ("write_bps", "wbps"),
    ("read_iops", "riops"),
    ("write_iops", "wiops"),
)


def cgroup_settings(limits: Limits, *, sys_root: Path = Path("/sys")) -> list[tuple[str, str]]:
    """Validate ``limits`` and return the (interface file, value) pairs to write, in order.

    ``memory.oom.group`` is always on so that an OOM kill takes the whole job,
    never a random part of it. Raises ``InvalidSpec`` naming the first bad setting.
    """
    settings = [("memory.oom.group", "1")]
    if limits.cpu_cores is not None:
        settings.append(("cpu.max", _cpu_max(limits.cpu_cores)))
    if limits.cpu_weight is not None:
        weight = _integer("cpu_weight", limits.cpu_weight, MIN_CPU_WEIGHT, MAX_CPU_WEIGHT)
        settings.append(("cpu.weight", str(weight)))
    if limits.cpuset is not None:
        settings.append(("cpuset.cpus", _cpuset(limits.cpuset, sys_root)))
    settings += _memory_settings(limits)
    if limits.pids is not None:
        settings.append(("pids.max", str(_integer("pids", limits.pids, 1, MAX_PIDS))))
    for disk, values in _io_by_disk(limits.io, sys_root).items():
        settings.append(("io.max", " ".join([disk, *(f"{k}={values[k]}" for k in sorted(values))])))
    return settings


def _cpu_max(cores: float) -> str:
    if isinstance(cores, bool) or not isinstance(cores, int | float) or not math.isfinite(cores):
        raise InvalidSpec("cpu", f"must be a number of cores such as 0.5, not {cores!r}")
    online = os.cpu_count() or 1
    quota = round(cores * CPU_PERIOD_USEC)
    if quota < MIN_CPU_QUOTA_USEC:
        raise InvalidSpec("cpu", f"{cores} cores is below the minimum of 0.01")
    if cores > online:
        raise LimitUnenforceable(
            "cpu", f"{cores} cores is more than the {online} CPUs of this host"
        )
    return f"{quota} {CPU_PERIOD_USEC}"


def _memory_settings(limits: Limits) -> list[tuple[str, str]]:
    settings = []
    memory = limits.memory_bytes
    if memory is not None:
        memory = _integer("memory", memory, MIN_MEMORY_BYTES, 2**63)
        settings.append(("memory.max", str(memory)))
    if limits.memory_high_bytes is not None:
        high = _integer("memory_high", limits.memory_high_bytes, MIN_MEMORY_BYTES, 2**63)
        if memory is not None and high >= memory:
            raise InvalidSpec(
                "memory_high", f"{high} bytes must be below the memory limit ({memory} bytes)"
            )
        settings.append(("memory.high", str(high)))
    if limits.memory_swap_bytes is not None:
        swap = _integer("memory_swap", limits.memory_swap_bytes, 0, 2**63)
        settings.append(("memory.swap.max", str(swap)))
    elif memory is not None:
        # Without swap.max 0 the job would swap instead of hitting its limit.
        settings.append(("memory.swap.max", "0"))
    return settings


def _cpuset(cpus: object, sys_root: Path) -> str:
    """Check a CPU list against the host's online CPUs; the kernel's own format back."""
    if not isinstance(cpus, str) or not _CPU_LIST.fullmatch(cpus):
        raise InvalidSpec("cpuset", f"{cpus!r} is not a CPU list such as 0-1,3")
    wanted = _cpu_numbers(cpus)
    if not wanted:
        raise InvalidSpec("cpuset", f"{cpus!r} names no CPU")
    online_file = sys_root / "devices" / "system" / "cpu" / "online"
    online = _cpu_numbers(online_file.read_text().strip())
    missing = sorted(wanted - online)
    if missing:
        raise LimitUnenforceable(
            "cpuset", f"CPU {missing[0]} is not online on this host (online: {_cpu_list(online)})"
        )
    return _cpu_list(wanted)


def _cpu_numbers(cpus: str) -> set[int]:
    numbers: set[int] = set()
    for part in filter(None, cpus.split(",")):
        first, _, last = part.partition("-")
        if int(last or first) < int(first):
            raise InvalidSpec("cpuset", f"{part!r} is a range running backwards")
        numbers.update(range(int(first), int(last or first) + 1))
    return numbers


def _cpu_list(numbers: set[int]) -> str:
    """The kernel's list format: ``{0, 1, 3}`` is ``0-1,3``."""
    ranges: list[list[int]] = []
    for number in sorted(numbers):
        if ranges and ranges[-1][1] == number - 1:
            ranges[-1][1] = number
        else:
            ranges.append([number, number])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges)


def _integer(name: str, value: object, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpec(name, f"must be a whole number, not {value!r}")
    if not minimum <= value <= maximum:
        raise InvalidSpec(name, f"{value} is outside the allowed range {minimum}..{maximum}")
    return value


def _io_by_disk(io: tuple[IOLimit, ...], sys_root: Path) -> dict[str, dict[str, int]]:
    """Group IO limits by whole disk, merging entries that name the same disk."""
    by_disk: dict[str, dict[str, int]] = {}
    for index, entry in enumerate(io):
        where = f"io[{index}]"
        disk = whole_disk(entry.device, sys_root=sys_root, field=f"{where}.device")
        values = by_disk.setdefault(disk, {})
        given = False
        for attribute, key in _IO_KEYS:
            value = getattr(entry, attribute)
            if value is None:
                continue
            given = True
            checked = _integer(f"{where}.{attribute}", value, 1, _U64_MAX - 1)
            if values.get(key, checked) != checked:
                raise InvalidSpec(
                    f"{where}.{attribute}",
                    f"conflicts with another {attribute} limit for the same disk {disk}",
                )
            values[key] = checked
        if not given:
            raise InvalidSpec(where, f"no limit given for {entry.device}")
    return by_disk


def whole_disk(device: str, *, sys_root: Path = Path("/sys"), field: str = "device") -> str:
    """Return the ``MAJ:MIN`` of the whole disk that ``device`` (a path or MAJ:MIN) is on."""
    if "\0" in device:  # os.stat would raise ValueError, not OSError
        raise InvalidDevice(field, f"{device!r} contains a NUL byte")
    match = _MAJ_MIN.match(device)
    if match:
        major, minor = int(match[1]), int(match[2])
    else:
        if not device.startswith("/"):
            raise InvalidDevice(field, f"{device!r} is neither a device path nor MAJ:MIN")
        try:
            info = os.stat(device)
        except OSError as error:
            raise InvalidDevice(field, f"{device}: {error.strerror}") from None
        if not stat.S_ISBLK(info.st_mode):
            raise InvalidDevice(field, f"{device} is not a block device")
        major, minor = os.major(info.st_rdev), os.minor(info.st_rdev)
    node = sys_root / "dev" / "block" / f"{major}:{minor}"
    if not node.exists():
        raise InvalidDevice(field, f"no block device {major}:{minor} on this host")
    if (node / "partition").exists():
        node = node.resolve().parent
    return (node / "dev").read_text().strip()
