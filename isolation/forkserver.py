"""The fork server: a small single-threaded process that forks one shim per job.

Why it exists: the service is multi-threaded (gRPC), and forking a threaded
process and running Python in the child can deadlock on locks held by other
threads; ``preexec_fn`` has exactly that problem. The fork server is started
once with a plain fork+exec (``subprocess`` without ``preexec_fn``, which is
thread-safe), never starts a thread, and imports only what the shim and the
job's first process need. Keeping it small matters for speed too: fork time
grows with the parent's memory, so the fork server stays around 17 MiB while
the service is several times that.

Protocol: one SOCK_SEQPACKET message per job, the JSON ``Request`` with the
report socket (and the prepared network namespace, if any) attached as file
descriptors. Replies go from the shim straight to the launcher over the
report socket. End of file on the control socket means the service is gone,
and the fork server exits; running shims and jobs are not affected.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from typing import NoReturn

from jobworker.isolation import shim, syscalls

MAX_REQUEST = 1 << 20
"""Bigger than any request the launcher accepts (argv and env are capped below this)."""


def serve(control: socket.socket) -> NoReturn:
    """Fork a shim for every request until the launcher closes the socket."""
    syscalls.set_process_name("jobworker-fork")
    # Shims report through files and sockets, not exit codes: let the kernel reap them.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    # Ctrl-C belongs to the service, which decides whether we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        message, fds, _flags, _address = socket.recv_fds(control, MAX_REQUEST, 2)
        if not message:
            os._exit(0)
        report = socket.socket(fileno=fds[0])
        netns_fd = fds[1] if len(fds) > 1 else None
        if os.fork() == 0:
            control.close()
            shim.run(shim.Request.from_json(message), report, netns_fd)
        report.close()
        if netns_fd is not None:
            os.close(netns_fd)


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
