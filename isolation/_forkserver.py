"""The fork server: a small single-threaded process that forks the shims jobs run under.

Why it exists: the service is multi-threaded (gRPC), and forking a threaded
process and running Python in the child can deadlock on locks held by other
threads; ``preexec_fn`` has exactly that problem. The fork server is started
once with a plain fork+exec (``subprocess`` without ``preexec_fn``, which is
thread-safe), never starts a thread, and imports only what the shim and the
job's first process need. Keeping it small matters for speed too: fork time
grows with the parent's memory, so the fork server stays around 17 MiB while
the service is several times that.

Protocol: once running, the fork server says ``READY``: the launcher waits for
it, since under systemd it starts the fork server through ``systemd-run`` and
must know it runs in its scope before going on (see ``_supervisor``). Then one
SOCK_SEQPACKET message per shim the launcher wants, with the shim's end of its
connection to the launcher attached. The fork server only forks; everything
else goes between the shim and the launcher over that connection (see
``_shim``). If a fork fails (EAGAIN from a pids limit, ENOMEM), the fork server
says so on that connection instead and goes on serving: one failed fork must
not stop every later start. Shims are ordered ahead of need, so forking one is
not on any job's launch path. End of file on the control socket means the
service is gone, and the fork server exits; running shims and jobs are not
affected, and spare shims exit when their connection closes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from typing import NoReturn

from jobworker.isolation import _seccomp as seccomp
from jobworker.isolation import _shim as shim
from jobworker.isolation import _syscalls as syscalls
from jobworker.isolation._protocol import ORDER, READY, ForkFailed


def serve(control: socket.socket) -> NoReturn:
    """Fork a shim for every order until the launcher closes the socket."""
    syscalls.set_process_name("jobworker-fork")
    # Shims report through files and sockets, not exit codes: let the kernel reap them.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    # Ctrl-C belongs to the service, which decides whether we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    seccomp.warm()  # every shim forked from here inherits the compiled filters
    control.send(READY)
    while True:
        message, fds, _flags, _address = socket.recv_fds(control, len(ORDER), 1)
        if not message:
            os._exit(0)
        connection = socket.socket(fileno=fds[0])
        try:
            pid = os.fork()
        except OSError as error:
            # Out of processes or memory (a pids limit, the kernel's own): say so to
            # whoever waits for this shim, and keep serving; the next fork may work.
            with contextlib.suppress(OSError):
                connection.send(ForkFailed(error.errno or 0, error.strerror or str(error)).encode())
            connection.close()
            continue
        if pid == 0:
            control.close()
            shim.serve(connection)
        connection.close()


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
