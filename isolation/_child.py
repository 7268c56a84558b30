"""The job's first process: enter the namespaces, then exec the command.

This runs in a process cloned from the job's shim, which is single-threaded,
so plain Python is safe here (unlike ``preexec_fn`` in a threaded server).
The process is born inside the job's cgroup (``clone3`` with
``CLONE_INTO_CGROUP``), and in its PID namespace if it has one, so every step
here, the user's command included, is limited and accounted from the start.

When the job has a PID namespace this process is PID 1 in it. It then stays
as a minimal init: it forks the command, forwards every signal it receives to
the command, reaps orphans so no zombies pile up, and reports the command's
wait status to the shim before it exits (which makes the kernel kill whatever
is left in the namespace).

Any failure before exec is written to ``error_fd`` as a ``Failed`` report (see
``_protocol``) so the launcher can say exactly what went wrong; a successful exec
closes that descriptor (it is close-on-exec), which the launcher reads as success.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
from dataclasses import dataclass
from typing import NoReturn

from jobworker.isolation import _capabilities as capabilities
from jobworker.isolation import _mounts as mounts
from jobworker.isolation import _seccomp as seccomp
from jobworker.isolation import _syscalls as syscalls
from jobworker.isolation import _sysfs as sysfs
from jobworker.isolation._protocol import Failed, ProcessSetup
from jobworker.isolation.namespaces import CLONE_NEWNET

_CATCHABLE = frozenset(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
STATUS = struct.Struct("<i")
"""How init reports the command's wait status to the shim."""


@dataclass(frozen=True)
class ChildPlan:
    """Everything the first process needs: the launcher's setup, and descriptors open in it."""

    process: ProcessSetup
    netns_fd: int | None
    account_files: tuple[str, str] | None
    """A passwd and a group file to show as /etc/passwd and /etc/group (needs private mounts)."""
    stdin_fd: int | None
    """The job's standard input, opened by the shim; None: /dev/null."""
    stdout_fd: int
    stderr_fd: int
    error_fd: int
    status_fd: int | None
    """Set when this process is the init of a PID namespace."""
    ignored_signals: tuple[int, ...]
    """Signals this process ignores (see ``ignored_signals``); the command gets them back."""


def ignored_signals() -> tuple[int, ...]:
    """The signals set to SIG_IGN here, which exec would pass on to the command.

    Python ignores SIGPIPE and SIGXFSZ, for one. Worked out once per shim, while
    it is a spare, rather than signal by signal on the way to exec.
    """
    return tuple(s for s in _CATCHABLE if signal.getsignal(s) is signal.SIG_IGN)


class _Stage:
    """Remembers which setup step is running, for the error report."""

    name = "start"


def run(plan: ChildPlan) -> NoReturn:
    """Set up isolation and become the command (or its init). Never returns."""
    stage = _Stage()
    try:
        _set_up(plan, stage)
        if plan.status_fd is not None:
            _be_init(plan, plan.status_fd, stage)
        _exec(plan, stage)
    except OSError as error:
        _report(plan.error_fd, stage.name, error.errno or 0, error.strerror or str(error))
    except BaseException as error:
        _report(plan.error_fd, "internal", 0, repr(error))
    os._exit(127)


def _set_up(plan: ChildPlan, stage: _Stage) -> None:
    process = plan.process
    if plan.netns_fd is not None:
        stage.name = "netns"
        syscalls.setns(plan.netns_fd, CLONE_NEWNET)
        os.close(plan.netns_fd)
    if process.unshare_flags:
        stage.name = "unshare"
        syscalls.unshare(process.unshare_flags)
    if process.private_mounts:
        stage.name = "mount"
        # Private, recursively: nothing mounted inside propagates to the host.
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
        if plan.netns_fd is not None:  # joined above; the descriptor is closed by now
            stage.name = "sysfs"
            sysfs.remount_for_network_namespace()
        if plan.account_files is not None:
            stage.name = "accounts"
            passwd, group = plan.account_files
            syscalls.mount(passwd, "/etc/passwd", None, syscalls.MS_BIND)
            syscalls.mount(group, "/etc/group", None, syscalls.MS_BIND)
        if process.filesystem.requested():
            stage.name = "filesystem"
            mounts.make_view(process.filesystem, own_network=plan.netns_fd is not None)
    if process.pid_namespace:
        stage.name = "mount"
        flags = syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC
        syscalls.mount("proc", "/proc", "proc", flags)
    if process.hostname is not None:
        stage.name = "hostname"
        socket.sethostname(process.hostname)


def _be_init(plan: ChildPlan, status_fd: int, stage: _Stage) -> NoReturn:
    syscalls.set_process_name("jobworker-init")
    # Block first, so no signal slips past between fork and the wait loop.
    signal.pthread_sigmask(signal.SIG_BLOCK, _CATCHABLE)
    stage.name = "fork"
    command = os.fork()
    if command == 0:
        _exec(plan, stage)
    for fd in (plan.error_fd, plan.stdout_fd, plan.stderr_fd, plan.stdin_fd):
        if fd is not None:
            os.close(fd)
    while True:
        signo = signal.sigwaitinfo(_CATCHABLE).si_signo
        if signo != signal.SIGCHLD:
            with contextlib.suppress(ProcessLookupError):
                os.kill(command, signo)
            continue
        status = _reap(command)
        if status is not None:
            os.write(status_fd, STATUS.pack(status))
            os._exit(0)


def _reap(command: int) -> int | None:
    """Reap every exited child; return the command's wait status if it was among them."""
    found = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        if pid == 0:
            return found
        if pid == command:
            found = status


def _exec(plan: ChildPlan, stage: _Stage) -> NoReturn:
    process = plan.process
    stage.name = "stdio"
    stdin = plan.stdin_fd if plan.stdin_fd is not None else os.open(os.devnull, os.O_RDONLY)
    os.dup2(stdin, 0)
    os.dup2(plan.stdout_fd, 1)
    os.dup2(plan.stderr_fd, 2)
    # Only stdin, stdout, stderr and the close-on-exec error pipe survive.
    os.closerange(3, plan.error_fd)
    os.closerange(plan.error_fd + 1, os.sysconf("SC_OPEN_MAX"))
    for signo in plan.ignored_signals:
        signal.signal(signo, signal.SIG_DFL)  # exec would keep them ignored
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    if process.capabilities is not None:
        stage.name = "capabilities"  # while root: the bounding set needs CAP_SETPCAP
        capabilities.confine(frozenset(process.capabilities))
    if process.uid is not None and process.gid is not None:
        stage.name = "user"
        # Groups first: once the uid is not 0, there is no permission left to change them.
        os.setgroups(process.groups)
        os.setresgid(process.gid, process.gid, process.gid)
        os.setresuid(process.uid, process.uid, process.uid)
    if process.no_new_privs:
        stage.name = "no_new_privs"
        syscalls.set_no_new_privs()
    stage.name = "chdir"  # as the user: a directory they may not enter is refused
    os.chdir(process.cwd)
    if process.seccomp:
        stage.name = "seccomp"  # last: before it, our own steps make calls it may deny
        seccomp.load(seccomp.program(frozenset(process.capabilities or ()), process.pid_namespace))
    stage.name = "exec"
    os.execvpe(process.argv[0], process.argv, process.env)


def _report(error_fd: int, stage: str, errno: int, message: str) -> None:
    with contextlib.suppress(OSError):  # if the shim is gone, there is nobody left to tell
        os.write(error_fd, Failed(stage, errno, message).encode())
