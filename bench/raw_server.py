"""The baseline server: a minimal grpc.aio server with jobworker's mutual TLS and gRPC settings.

    python -m bench.raw_server --tls-dir DIR --ready-file FILE

It serves only ``StreamJobOutput``, and answers it by reading a plain file in
chunks and sending each as one ``OutputChunk`` message, exactly the messages a
jobworker follower receives. No runner, no log format, no authorization: what is
left is the cost of gRPC, TLS and protobuf that any server would pay. The request's
``id`` names the file and its ``offset`` is the message size in bytes (a benchmark
convention, nothing the real API means by them).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from jobworker.api.server import GRPC_OPTIONS, TlsFiles
from jobworker.v1 import jobworker_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["JobService"].full_name


async def stream_file(
    request: pb.StreamJobOutputRequest, context: aio.ServicerContext[Any, Any]
) -> AsyncIterator[pb.StreamJobOutputResponse]:
    """Stream the file ``request.id`` as ``OutputChunk`` messages of ``request.offset`` bytes."""
    size = int(request.offset)
    offset = 0
    with Path(request.id).open("rb", buffering=0) as file:
        while data := file.read(size):
            # Filled in place, as jobworker does: a ready OutputChunk handed to the
            # constructor would be copied once more, and the baseline is meant to be lean.
            message = pb.StreamJobOutputResponse()
            message.chunk.stream = pb.OUTPUT_STREAM_STDOUT
            message.chunk.offset = offset
            message.chunk.data = data
            yield message
            offset += len(data)


async def _serve(tls: TlsFiles, ready_file: Path) -> None:
    handler = grpc.unary_stream_rpc_method_handler(
        stream_file,
        request_deserializer=pb.StreamJobOutputRequest.FromString,
        response_serializer=pb.StreamJobOutputResponse.SerializeToString,
    )
    server = aio.server(options=GRPC_OPTIONS)  # the same gRPC settings as jobworker
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"StreamJobOutput": handler}),)
    )
    port = server.add_secure_port("localhost:0", tls.credentials())
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signo in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signo, stop.set)
    temporary = ready_file.with_suffix(".tmp")
    temporary.write_text(str(port))
    os.replace(temporary, ready_file)
    await stop.wait()
    await server.stop(1.0)


def main() -> None:
    """Parse the arguments and serve until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m bench.raw_server")
    parser.add_argument("--tls-dir", type=Path, required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(_serve(TlsFiles.in_directory(args.tls_dir), args.ready_file))


if __name__ == "__main__":
    main()
