"""The shim: one small process per job that is the job's parent for its whole life.

It is forked by the fork server *before* any job asks for it (the launcher keeps
a couple of spare shims ready), lives outside the job's cgroup (so an OOM kill of
the job cannot take it along) and in its own session (so the service's terminal
or a crash of the service does not touch it). It:

0. as a spare: makes itself a session leader, opens the job's output pipes,
   tells the launcher it is ready (sending a pidfd of itself and the read end
   of the job's launch-error pipe), and waits for a job. Forking and preparing
   a Python process is most of what a launch would cost, and none of it
   depends on the job, so it happens off the launch path;
1. clones the job's first process straight into the job's cgroup (see
   ``_child``) and reports its pid and a pidfd for it. Whether the command then
   starts, the launcher learns from the launch-error pipe itself: end of file
   means the exec succeeded, anything else names the step and errno that
   failed. Nothing waits on the shim between the exec and the launcher;
2. copies the job's stdout and stderr into the output log as they arrive, so
   the job never waits for a reader and output survives a service restart;
3. enforces the job's time limits, if it has any (see ``_timekeeper``): they
   hold while the service restarts or is down;
4. when the job's main process ends, kills whatever the job left behind,
   reads how it ended and what it used, removes its cgroup, and writes the
   outcome file atomically before exiting.

Because the outcome is a file and the shim outlives the service, a restarted
service learns the exit status even of a job that ended while it was down.

Protocol with the launcher (its messages are in ``_protocol``), on one
SOCK_SEQPACKET connection per shim: the shim sends ``READY`` with its pidfd and
the error pipe; the launcher sends a ``Request`` (with the prepared network
namespace attached, if any); the shim answers ``Cloned`` (with the pidfd of the
job's first process) or ``Failed``. End of file instead of a request means
nobody needs this spare any more.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import math
import os
import select
import signal
import socket
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NoReturn

from jobworker.isolation import _child as child
from jobworker.isolation import _syscalls as syscalls
from jobworker.isolation._procfs import start_ticks
from jobworker.isolation._protocol import (
    MAX_REQUEST,
    READY,
    Cloned,
    Failed,
    ProcessSetup,
    Request,
    ShimState,
)
from jobworker.isolation._timekeeper import Expired, Step, TimeKeeper
from jobworker.isolation.cgroups import JobCgroup, Usage
from jobworker.isolation.errors import IsolationError
from jobworker.isolation.namespaces import CLONE_NEWPID
from jobworker.isolation.outcome import (
    Outcome,
    OutcomeFile,
    decode_wait_status,
    utcnow,
    write_atomically,
)
from jobworker.isolation.outputlog import OutputLogWriter, Stream
from jobworker.isolation.rundir import RunDir

_PIPE_SIZE = 1 << 20
"""A deep pipe lets a fast job keep writing while the shim is busy writing the log."""

_DRAIN_SECONDS = 5.0
"""How long to wait for output after the job's processes were killed.

Only a process that escaped the job's cgroup can keep the pipes open longer.
"""

_EMPTY_SECONDS = 30.0


def serve(connection: socket.socket) -> NoReturn:
    """Entry point in a freshly forked shim: get ready, wait for a job, run it. Never returns."""
    request = None
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        syscalls.set_process_name("jobworker-spare")
        pipes, error_r = _Pipes.open()
        ignored_signals = child.ignored_signals()
        _rehearse(pipes, ignored_signals)
        own_pidfd = os.pidfd_open(os.getpid())
        _send(connection, READY, fds=[own_pidfd, error_r])  # the launcher reads it, not us
        os.close(own_pidfd)
        os.close(error_r)
        try:
            message, fds, _flags, _address = socket.recv_fds(connection, MAX_REQUEST, 1)
        except ConnectionResetError:  # the service was killed: nothing to report, nobody to tell
            os._exit(0)
        if not message:
            os._exit(0)  # the launcher closed, or has no job for this spare
        request = Request.decode(message)
        syscalls.set_process_name("jobworker-shim")
        _log_to(request.run_dir.shim_log)
        _Shim(request, pipes, ignored_signals).run(connection, fds[0] if fds else None)
    except BaseException:
        # Nothing may escape: this process was forked from the fork server's loop.
        with contextlib.suppress(BaseException):
            traceback.print_exc()
        if request is not None:
            with contextlib.suppress(BaseException):
                JobCgroup(request.cgroup).kill()
    os._exit(0)


def _log_to(path: Path) -> None:
    """Our own stdout and stderr (tracebacks, if any) go to the job's shim.log."""
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)


@dataclass(frozen=True)
class _Pipes:
    """The job's stdout and stderr pipes, opened while the shim is a spare.

    ``error_w`` is the write end of the launch-error pipe, whose read end the
    launcher holds: the job's first process reports a failed step there, and
    its successful exec closes it.
    """

    stdout_r: int
    stdout_w: int
    stderr_r: int
    stderr_w: int
    error_w: int

    @classmethod
    def open(cls) -> tuple[_Pipes, int]:
        """The pipes, and the read end of the error pipe (for the launcher)."""
        stdout_r, stdout_w = _pipe()
        stderr_r, stderr_w = _pipe()
        error_r, error_w = os.pipe2(os.O_CLOEXEC)
        return cls(stdout_r, stdout_w, stderr_r, stderr_w, error_w), error_r


class _Shim:
    def __init__(self, request: Request, pipes: _Pipes, ignored_signals: tuple[int, ...]) -> None:
        self.request = request
        self.pipes = pipes
        self.ignored_signals = ignored_signals
        self.run_dir = request.run_dir
        self.cgroup = JobCgroup(request.cgroup)
        self.outcome = OutcomeFile(self.run_dir.outcome)
        self.notes: list[str] = []
        self.keeper: TimeKeeper | None = None

    def run(self, connection: socket.socket, netns_fd: int | None) -> None:
        request, pipes = self.request, self.pipes
        log = OutputLogWriter(self.run_dir.output_log, request.output_cap)
        status_r, status_w = os.pipe2(os.O_CLOEXEC) if request.process.pid_namespace else (-1, -1)
        started_at = utcnow()
        try:
            plan = self._plan(status_w, netns_fd)  # before the clone: the child does less
            pid, main_pidfd = self._clone()
        except _SetupFailed as failed:
            self._release_cgroup()
            _send(connection, failed.report.encode())
            return
        if pid == 0:
            ours = (pipes.stdout_r, pipes.stderr_r, status_r)
            for fd in (*ours, connection.fileno(), log.fileno()):
                if fd >= 0:
                    os.close(fd)
            child.run(plan)
        if request.time_limits.any:  # the job's time counts from here
            self.keeper = TimeKeeper(
                request.time_limits, self.cgroup.cpu_usage_usec, cpus=os.cpu_count() or 1
            )
        for fd in (pipes.stdout_w, pipes.stderr_w, pipes.error_w, status_w):
            if fd >= 0:
                os.close(fd)
        if plan.stdin_fd is not None:
            os.close(plan.stdin_fd)
        if netns_fd is not None:
            os.close(netns_fd)
        # While the job's first process sets itself up and execs. Before the report,
        # so that once the launch has succeeded a restarted service can adopt the job.
        self._save_state(pid, started_at)
        _send(connection, Cloned(pid, started_at).encode(), fds=[main_pidfd])
        connection.close()
        self.outcome.reserve()  # now, while there may still be space: see OutcomeFile
        # If the exec fails, the first process exits with 127 and this shim records
        # that like any end; the launcher, having read why, discards the job.
        streams = {pipes.stdout_r: Stream.STDOUT, pipes.stderr_r: Stream.STDERR}
        status: int | None = None
        try:
            status = self._supervise(log, pid, main_pidfd, streams)
            if status_r >= 0:
                status = _command_status(status_r, status)
        except BaseException as error:
            self.notes.append(f"the job's shim failed while the job ran ({error!r})")
            raise
        finally:
            # Whatever happened, the job ends here with an outcome: never a job that a
            # restarted service would find neither running nor ended.
            self._finish(log, status, started_at)

    def _clone(self) -> tuple[int, int]:
        """The job's first process, born in the job's cgroup (and PID namespace, if any)."""
        try:
            group = os.open(self.cgroup.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as error:
            raise _SetupFailed("cgroup", error.errno or 0, error.strerror or str(error)) from None
        try:
            return syscalls.clone_into_cgroup(
                group, CLONE_NEWPID if self.request.process.pid_namespace else 0
            )
        except OSError as error:
            raise _SetupFailed("clone", error.errno or 0, error.strerror or str(error)) from None
        finally:
            os.close(group)  # in the child too: its cgroup is set for good

    def _plan(self, status_w: int, netns_fd: int | None) -> child.ChildPlan:
        return child.ChildPlan(
            process=self.request.process,
            netns_fd=netns_fd,
            account_files=self._account_files(),
            stdin_fd=self._stdin(),
            stdout_fd=self.pipes.stdout_w,
            stderr_fd=self.pipes.stderr_w,
            error_fd=self.pipes.error_w,
            status_fd=status_w if status_w >= 0 else None,
            ignored_signals=self.ignored_signals,
        )

    def _stdin(self) -> int | None:
        """The job's standard input, opened here: the job may not see the run directory."""
        if not self.request.stdin:
            return None
        try:
            return os.open(self.run_dir.stdin, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            raise _SetupFailed("stdin", error.errno or 0, str(error)) from None

    def _account_files(self) -> tuple[str, str] | None:
        """The host's passwd and group, each with the job's user added, in the run directory.

        The job sees them in place of /etc/passwd and /etc/group (bind mounts in its
        own mount namespace), so programs that look their user up (``id -un``,
        ``whoami``, git, ssh) find a name for a user the host does not know.
        """
        if self.request.account is None:
            return None
        paths = []
        copies = {Path("/etc/passwd"): self.run_dir.passwd, Path("/etc/group"): self.run_dir.group}
        try:
            for (original, path), line in zip(copies.items(), self.request.account, strict=True):
                host = original.read_text()
                path.write_text(host + ("" if host.endswith("\n") or not host else "\n") + line)
                path.chmod(0o644)
                paths.append(str(path))
        except OSError as error:
            raise _SetupFailed("accounts", error.errno or 0, str(error)) from None
        return paths[0], paths[1]

    def _save_state(self, pid: int, started_at: datetime) -> None:
        """Record who we are so a restarted service can find us and the job again."""
        # Not fsynced: it only matters while this process lives, and it is on the
        # launch path, where every millisecond counts.
        state = _state(pid, started_at).encode()
        write_atomically(self.run_dir.shim_state, state, durable=False)

    def _supervise(
        self, log: OutputLogWriter, pid: int, main_pidfd: int, streams: dict[int, Stream]
    ) -> int:
        """Copy output until the job has ended and its pipes are closed; return its status."""
        poller = select.poll()
        for fd in [*streams, main_pidfd]:
            poller.register(fd, select.POLLIN)
        status: int | None = None
        while streams or status is None:
            ready = poller.poll(self._wait_ms(status))
            if not ready and status is not None:
                self.notes.append("output pipes stayed open after the job ended; stopped reading")
                break
            for fd, _events in ready:
                if fd == main_pidfd:
                    poller.unregister(fd)
                    status = os.waitpid(pid, 0)[1]
                    os.close(main_pidfd)
                    self.cgroup.kill()  # the job ends with its main process
                elif not log.move_from(streams[fd], fd):
                    poller.unregister(fd)
                    os.close(fd)
                    del streams[fd]
            if status is None:
                self._keep_time(main_pidfd)
        assert status is not None
        return status

    def _wait_ms(self, status: int | None) -> int | None:
        """How long poll() may sleep: a time limit may need the shim; an ended job drains."""
        if status is not None:
            return int(_DRAIN_SECONDS * 1000)
        wait = self.keeper.wait() if self.keeper is not None else None
        return None if wait is None else math.ceil(wait * 1000)

    def _keep_time(self, main_pidfd: int) -> None:
        """End the job as a stop would once a time limit is reached: SIGTERM, grace, kill."""
        step = self.keeper.step() if self.keeper is not None else None
        if step is Step.TERMINATE:
            with contextlib.suppress(ProcessLookupError):  # it is ending: its pidfd will say so
                signal.pidfd_send_signal(main_pidfd, signal.SIGTERM)
        elif step is Step.KILL:
            self.cgroup.kill()

    def _finish(self, log: OutputLogWriter, status: int | None, started_at: datetime) -> None:
        """Kill what is left, record the end of the output and the outcome (None: unknown)."""
        ended_at = utcnow()
        exit_code, signo = decode_wait_status(status) if status is not None else (None, None)
        oom_killed, usage = self._release_cgroup()
        try:
            log.close()
        except OSError as error:
            self.notes.append(f"the end of the job's output could not be recorded: {error}")
        if log.truncated:
            self.notes.append(
                f"{log.truncated} after {log.written} bytes; {log.dropped} bytes were dropped"
            )
        expired = self.keeper.expired if self.keeper is not None else None
        if self.keeper is not None and (limit_note := self.keeper.note()):
            self.notes.insert(0, limit_note)
        outcome = Outcome(
            exit_code=exit_code,
            signal=signo,
            oom_killed=oom_killed,
            usage=usage,
            started_at=started_at,
            ended_at=ended_at,
            note="; ".join(self.notes) or None,
            timed_out=expired is Expired.TIMEOUT,
            cpu_time_exceeded=expired is Expired.CPU_TIME,
        )
        self.outcome.write(outcome)

    def _release_cgroup(self) -> tuple[bool, Usage]:
        """Make sure nothing of the job runs, read its accounting, remove its group."""
        try:
            remains = self.cgroup.tear_down(_EMPTY_SECONDS)
        except IsolationError as error:
            self.notes.append(f"the job's cgroup could not be removed: {error}")
            return False, Usage()
        if remains.survivors:
            self.notes.append(f"processes of the job survived cgroup.kill: {remains.survivors}")
        return remains.oom_killed, remains.usage


def _state(pid: int, started_at: datetime) -> ShimState:
    """What the shim state file says of this shim and the job whose first process is ``pid``."""
    return ShimState(
        shim_pid=os.getpid(),
        shim_ticks=_ticks(os.getpid()),
        main_pid=pid,
        main_ticks=_ticks(pid),
        started_at=started_at,
    )


def _ticks(pid: int) -> int:
    """When this process or its child (not reaped yet, so still in /proc) started."""
    ticks = start_ticks(pid)
    assert ticks is not None, f"process {pid} is not in /proc"
    return ticks


def _rehearse(pipes: _Pipes, ignored_signals: tuple[int, ...]) -> None:
    """Run the launch's Python steps once on a made-up job, while no job waits for them.

    A spare is a copy-on-write fork of the fork server, so the first run of any
    code in it copies every page whose objects that code touches (reference
    counts, allocator arenas), one page fault each. In the test VM those faults
    took about half of the 14 ms between a request's arrival and the clone.
    Taking them here moves them off the launch path at no cost in memory, since
    the launch would copy the same pages. Nothing here leaves a trace outside
    this process.
    """
    rehearsal = Request(
        job_id="rehearsal",
        cgroup=Path("/sys/fs/cgroup/jobworker/jobs/rehearsal"),
        run_dir=RunDir(Path("/run/jobworker/jobs/rehearsal")),
        process=ProcessSetup(
            argv=("/bin/true", "--rehearsal"),
            env={"PATH": "/usr/bin:/bin"},
            uid=65534,
            gid=65534,
            groups=(65534,),
        ),
        output_cap=4096,  # any size: it takes the decoder's path for a set cap
    )
    request = Request.decode(rehearsal.encode())
    shim = _Shim(request, pipes, ignored_signals)
    _ = request.run_dir.shim_log, shim.run_dir.output_log, shim.run_dir.shim_state
    shim._plan(-1, None)
    started_at = utcnow()
    _state(os.getpid(), started_at).encode()
    Cloned(os.getpid(), started_at).encode()


def _pipe() -> tuple[int, int]:
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    # Above /proc/sys/fs/pipe-max-size this fails; the default size still works, just slower.
    with contextlib.suppress(OSError):
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    return read_end, write_end


def _command_status(status_r: int, init_status: int) -> int:
    """The command's wait status as init reported it; init's own if init was killed first."""
    raw = _read_all(status_r)
    if len(raw) == child.STATUS.size:
        return int(child.STATUS.unpack(raw)[0])
    return init_status


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


class _SetupFailed(Exception):
    """A step before the command's exec failed; the launcher learns which one and why."""

    def __init__(self, stage: str, errno: int, message: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.report = Failed(stage, errno, message)


def _send(report: socket.socket, message: bytes, fds: list[int] | None = None) -> None:
    ancillary = []
    if fds:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
    # If the launcher gave up waiting, the outcome file still tells the story.
    with contextlib.suppress(OSError):
        report.sendmsg([message], ancillary)
