"""Starting the fork server in the supervisor leaf, where every shim it forks then lives.

Outside systemd the fork server inherits the service's group, which
``CgroupHost.prepare`` has made the supervisor leaf already. Under systemd the leaf is
in the jobs' own scope (see ``_systemd``), which only systemd makes and which may or may
not be there: jobs of an earlier run keep it alive. So the fork server joins the scope
when it is there, and otherwise becomes, through ``systemd-run``, the first process of a
new one; the layout inside the scope is prepared once the fork server is in it.

The fork server is an isolated interpreter (``python -I``) started in ``/``: it imports
nothing from the service's working directory or environment.
"""

from __future__ import annotations

import socket
import subprocess
import sys

from jobworker.isolation._protocol import READY
from jobworker.isolation._systemd import Scope
from jobworker.isolation.cgroups import CgroupHost
from jobworker.isolation.errors import HostUnsupported, InternalError

ForkServer = tuple[socket.socket, subprocess.Popen[bytes]]
"""Our end of the fork server's control socket (non-blocking), and its process."""

_SCOPE_ATTEMPTS = 3
"""Tries to put the fork server in the jobs' scope, which may vanish as it joins."""
_START_SECONDS = 300.0
"""Until the fork server says it is ready: well under a second natively, but a minute
has been seen in the emulated test VM on a busy host (through systemd-run)."""


def start_fork_server(host: CgroupHost) -> ForkServer:
    """Start the fork server in ``host``'s supervisor leaf; return once it is ready."""
    if host.scope is not None:
        return _in_scope(host, host.scope)
    started = _start([])
    if started is None:
        raise InternalError("the fork server exited as it started; see the service's log")
    return started


def _in_scope(host: CgroupHost, scope: Scope) -> ForkServer:
    """The fork server in the supervisor leaf of the jobs' scope, made if need be.

    systemd removes a scope once it is empty, which may happen just as the fork server
    joins it (the last job of an earlier run ending now), so after joining we ask
    systemd whether the scope is still active. If not, the fork server is stopped, what
    systemd could not remove of the scope (the group it was joining) is removed, and a
    new scope is made.
    """
    for _attempt in range(_SCOPE_ATTEMPTS):
        if host.base_exists():
            started = _start([])
            if started is None:
                raise InternalError("the fork server exited as it started; see the service's log")
            if host.enter(started[1].pid) and _active(scope):
                host.prepare()
                return started
            _stop(*started)
            if host.base_exists():
                host.remove_base()
            continue
        try:
            started = _start(scope.systemd_run())
        except FileNotFoundError:
            raise HostUnsupported(scope.missing("systemd-run")) from None
        if started is not None:
            if not host.enter(started[1].pid):
                _stop(*started)
                raise InternalError(f"systemd made the scope {scope.unit} outside {host.base}")
            host.prepare()
            return started
        if not host.base_exists():
            raise HostUnsupported(
                f"systemd-run could not make the systemd scope {scope.unit} for jobs (its "
                "message is in the service's log, just before this one); pass "
                "--cgroup-parent to put jobs elsewhere"
            )
        # systemd-run found the scope made between our look and its try: join it.
    raise HostUnsupported(
        f"the systemd scope {scope.unit} for jobs went away {_SCOPE_ATTEMPTS} times while "
        "the service started; start it again"
    )


def _start(wrapper: list[str]) -> ForkServer | None:
    """Run the fork server (behind ``wrapper``, if any) and wait until it is ready.

    None if it, or the wrapper, exited before that.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    command = [sys.executable, "-I", "-m", "jobworker.isolation._forkserver", str(theirs.fileno())]
    try:
        server = subprocess.Popen(
            [*wrapper, *command],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd="/",
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    ours.settimeout(_START_SECONDS)
    ready = False
    try:
        ready = ours.recv(len(READY)) == READY
    except TimeoutError:
        server.kill()
        raise InternalError(f"the fork server was not ready after {_START_SECONDS:.0f} s") from None
    finally:
        if not ready:
            ours.close()
            server.wait()
    if not ready:
        return None
    ours.setblocking(False)
    return ours, server


def _active(scope: Scope) -> bool:
    """Whether systemd runs the scope now (``systemctl show`` answers for any unit name)."""
    try:
        state = subprocess.run(scope.state_command(), capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise HostUnsupported(scope.missing("systemctl")) from None
    if state.returncode != 0:
        raise HostUnsupported(
            f"cannot ask systemd about the scope {scope.unit}: {state.stderr.strip()}"
        )
    return state.stdout.strip() == "active"


def _stop(control: socket.socket, server: subprocess.Popen[bytes]) -> None:
    """End a fork server that has forked nothing yet: it exits when its socket closes."""
    control.close()
    server.wait()
