"""The argparse ``type=`` parsers of ``jobworker run``'s options and of job ids.

They refuse what is malformed on its face (a size without a number, an unknown
namespace), so it is a usage error before any connection; whether a value suits
this host (more cores than it has, a device that is not a disk) only the server
knows, and it says so. ``_request`` turns the parsed options into a StartJobRequest.
"""

from __future__ import annotations

import argparse
import uuid
from dataclasses import dataclass

from jobworker.cli._units import parse_count, parse_size

NAMESPACES = ("pid", "mount", "net", "uts", "ipc")
"""Every namespace a job can get; all are on unless switched off."""


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


@dataclass(frozen=True)
class TmpfsValue:
    """One ``--tmpfs PATH[:SIZE]``."""

    path: str
    size: int | None


@dataclass(frozen=True)
class BindValue:
    """One ``--bind SRC[:DST][:ro]``."""

    source: str
    destination: str
    read_only: bool


def parse_tmpfs(text: str) -> TmpfsValue:
    """``PATH[:SIZE]``: where a tmpfs goes in the job, and its size like ``64M``."""
    path, separator, size = text.partition(":")
    _absolute(path, "PATH", text)
    return TmpfsValue(path, parse_size(size) if separator else None)


def parse_bind(text: str) -> BindValue:
    """``SRC[:DST][:ro]``: a path on the server's host, and where the job sees it."""
    parts = text.split(":")
    read_only = len(parts) > 1 and parts[-1] == "ro"
    if read_only:
        parts.pop()
    if len(parts) > 2:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not SRC[:DST][:ro] (e.g. /srv/data:/data:ro)"
        )
    for part, what in zip(parts, ("SRC", "DST"), strict=False):
        _absolute(part, what, text)
    return BindValue(parts[0], parts[1] if len(parts) == 2 else "", read_only)


def _absolute(path: str, what: str, text: str) -> None:
    """Paths are the server host's: a relative one has no meaning there."""
    if not path.startswith("/"):
        raise argparse.ArgumentTypeError(
            f"{text!r}: {what} must be an absolute path (on the server's host)"
        )
