"""Copying a job's output stream to this process: stdout to stdout, stderr to stderr.

Bytes go out as they arrive, unchanged (no decoding: a job may print anything),
and are flushed at once so a follower sees them live.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import BinaryIO

from jobworker.cli._render import size_text
from jobworker.v1 import jobworker_pb2 as pb


def copy_output(
    responses: Iterable[pb.StreamJobOutputResponse], stdout: BinaryIO, stderr: BinaryIO
) -> None:
    """Write every chunk to the matching stream; say so on stderr where output was capped."""
    for response in responses:
        if response.HasField("chunk"):
            chunk = response.chunk
            target = stderr if chunk.stream == pb.OUTPUT_STREAM_STDERR else stdout
            target.write(chunk.data)
            target.flush()
        elif response.HasField("truncated"):
            truncated = response.truncated
            stderr.write(
                f"jobworker: {truncated.reason}, at byte {truncated.offset}; the rest of the "
                "job's output was dropped\n".encode()
            )
            stderr.flush()
        elif response.HasField("capped"):
            capped = response.capped
            stderr.write(
                f"jobworker: the job's output reached its cap of {size_text(capped.cap_bytes)} "
                f"at byte {capped.offset}; the rest was dropped\n".encode()
            )
            stderr.flush()
