"""From ``jobworker run``'s options to a StartJobRequest: limits, namespaces, environment.

The argparse ``type=`` parsers here refuse what is malformed on its face (a size
without a number, an unknown namespace), so it is a usage error before any
connection; whether a value suits this host (more cores than it has, a device
that is not a disk) only the server knows, and it says so.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import Message

from jobworker.cli.errors import UsageError
from jobworker.cli.units import parse_count, parse_size
from jobworker.v1 import jobworker_pb2 as pb

NAMESPACES = ("pid", "mount", "net", "uts", "ipc")
"""Every namespace a job can get; all are on unless switched off."""

IO_FIELDS = {
    "io_read_bps": "read_bps",
    "io_write_bps": "write_bps",
    "io_read_iops": "read_iops",
    "io_write_iops": "write_iops",
}
"""The run options for IO limits (as argparse dests) and the IoLimit fields they set."""


@dataclass(frozen=True)
class DeviceValue:
    """One ``DEV=VALUE`` of an IO option."""

    device: str
    value: int


def parse_job_id(text: str) -> str:
    """A job id (a UUID), as ``run`` printed it."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id (a UUID)") from None


def parse_device_rate(text: str) -> DeviceValue:
    """``DEV=RATE``: a device path or MAJ:MIN, and bytes per second like ``10M``."""
    device, value = _device_value(text, "RATE", "/dev/vda=10M")
    return DeviceValue(device, parse_size(value))


def parse_device_iops(text: str) -> DeviceValue:
    """``DEV=N``: a device path or MAJ:MIN, and operations per second."""
    device, value = _device_value(text, "N", "/dev/vda=100")
    return DeviceValue(device, parse_count(value))


def _device_value(text: str, what: str, example: str) -> tuple[str, str]:
    device, separator, value = text.rpartition("=")
    if not separator or not device or not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not DEV={what} (e.g. {example})")
    return device, value


def parse_namespace_list(text: str) -> tuple[str, ...]:
    """A comma-separated list of namespace names, or ``all`` or ``none``."""
    words = [word.strip() for word in text.split(",") if word.strip()]
    if words == ["all"]:
        return NAMESPACES
    if words == ["none"]:
        return ()
    unknown = [word for word in words if word not in NAMESPACES]
    if unknown or not words:
        raise argparse.ArgumentTypeError(
            f"{text!r}: unknown namespace {', '.join(unknown) or '(empty)'}; "
            f"use names from {','.join(NAMESPACES)}, or all, or none"
        )
    return tuple(words)


def parse_env(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` for the job's environment."""
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def namespaces(isolate: Sequence[str] | None, no_isolate: Sequence[str] | None) -> dict[str, bool]:
    """The request's namespace map: exactly ``isolate``, or all but ``no_isolate``, or all."""
    if isolate is not None:
        chosen = {name: name in isolate for name in NAMESPACES}
    elif no_isolate is not None:
        chosen = {name: name not in no_isolate for name in NAMESPACES}
    else:
        return {}
    if chosen["pid"] and not chosen["mount"]:
        raise UsageError(
            "the pid namespace needs the mount namespace (to mount its own /proc): "
            "isolate mount too, or turn pid off as well"
        )
    return chosen


def io_limits(options: dict[str, list[DeviceValue] | None]) -> list[pb.IoLimit]:
    """One IoLimit per device, from the four IO options (argparse dest → values)."""
    by_device: dict[str, pb.IoLimit] = {}
    for dest, field in IO_FIELDS.items():
        for item in options.get(dest) or ():
            limit: Message = by_device.setdefault(item.device, pb.IoLimit(device=item.device))
            if limit.HasField(field):
                option = "--" + dest.replace("_", "-")
                raise UsageError(f"{option} is given twice for {item.device}")
            setattr(limit, field, item.value)
    return list(by_device.values())


def start_request(args: argparse.Namespace) -> pb.StartJobRequest:
    """The StartJobRequest for parsed ``run`` options."""
    limits = pb.Limits(
        cpu_cores=args.cpu,
        memory_bytes=args.memory,
        pids=args.pids,
        io=io_limits({dest: getattr(args, dest) for dest in IO_FIELDS}),
    )
    command, *arguments = args.command
    return pb.StartJobRequest(
        command=command,
        args=arguments,
        limits=limits,
        namespaces=namespaces(args.isolate, args.no_isolate),
        working_directory=args.workdir or "",
        environment=dict(args.env or ()),
    )
