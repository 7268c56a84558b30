"""From ``jobworker run``'s parsed options to a StartJobRequest.

Kept apart from the option parsers so that parsing a command line (and ``--help``)
does not load protobuf: every process start counts in a slow VM.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from google.protobuf.message import Message

from jobworker.cli._errors import UsageError
from jobworker.cli._jobspec import NAMESPACES, BindValue, DeviceValue, TmpfsValue
from jobworker.v1 import jobworker_pb2 as pb

IO_FIELDS = {
    "io_read_bps": "read_bps",
    "io_write_bps": "write_bps",
    "io_read_iops": "read_iops",
    "io_write_iops": "write_iops",
}
"""The run options for IO limits (as argparse dests) and the IoLimit fields they set."""


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


MAX_STDIN_READ = 1 << 30
"""Standard input travels in the one StartJob message, which gRPC caps at 2 GiB."""


def read_stdin(source: str | None) -> bytes:
    """The bytes ``--stdin`` names: a file's, or this command's own standard input (``-``)."""
    if source is None:
        return b""
    try:
        if source == "-":
            data = sys.stdin.buffer.read(MAX_STDIN_READ + 1)
        else:
            with open(source, "rb") as file:
                data = file.read(MAX_STDIN_READ + 1)
    except OSError as error:
        raise UsageError(f"--stdin {source}: {error.strerror}") from None
    if len(data) > MAX_STDIN_READ:
        raise UsageError(f"--stdin {source}: more than 1 GiB, too much to send with a job")
    return data


def start_request(args: argparse.Namespace) -> pb.StartJobRequest:
    """The StartJobRequest for parsed ``run`` options."""
    limits = pb.Limits(
        cpu_cores=args.cpu,
        memory_bytes=args.memory,
        pids=args.pids,
        io=io_limits({dest: getattr(args, dest) for dest in IO_FIELDS}),
        memory_high_bytes=args.memory_high,
        memory_swap_bytes=args.memory_swap,
        cpuset=args.cpuset,
        cpu_weight=args.cpu_weight,
    )
    privileges = pb.Privileges(
        cap_add=args.cap_add or (),
        cap_drop=args.cap_drop or (),
        seccomp_unconfined=args.seccomp == "unconfined",
        no_new_privs=args.no_new_privs,
    )
    command, *arguments = args.command
    request = pb.StartJobRequest(
        command=command,
        args=arguments,
        limits=limits,
        namespaces=namespaces(args.isolate, args.no_isolate),
        working_directory=args.workdir or "",
        environment=dict(args.env or ()),
        user=args.user or "",
        privileges=privileges if privileges.ByteSize() else None,  # unset: the defaults
        stdin=read_stdin(args.stdin),
        filesystem=filesystem(args),
    )
    if args.timeout is not None:
        request.timeout.FromNanoseconds(round(args.timeout * 1e9))
    if args.cpu_time is not None:
        request.cpu_time.FromNanoseconds(round(args.cpu_time * 1e9))
    return request


def filesystem(args: argparse.Namespace) -> pb.Filesystem | None:
    """The request's Filesystem from --read-only, --tmpfs, --bind and --rootfs; None if unset."""
    tmpfs: list[TmpfsValue] = args.tmpfs or []
    binds: list[BindValue] = args.bind or []
    if not (args.read_only or tmpfs or binds or args.rootfs):
        return None
    return pb.Filesystem(
        read_only=args.read_only,
        tmpfs=[pb.Tmpfs(path=t.path, size_bytes=t.size) for t in tmpfs],
        binds=[
            pb.Bind(source=b.source, destination=b.destination, read_only=b.read_only)
            for b in binds
        ],
        rootfs=args.rootfs or "",
    )
