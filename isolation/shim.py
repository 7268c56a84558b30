"""The shim: one small process per job that is the job's parent for its whole life.

It is forked by the fork server, lives outside the job's cgroup (so an OOM kill
of the job cannot take it along) and in its own session (so the service's
terminal or a crash of the service does not touch it). It:

1. forks the job's first process (see ``child``) and reports to the launcher
   whether the command started, with pidfds for itself and the job;
2. copies the job's stdout and stderr into the output log as they arrive, so
   the job never waits for a reader and output survives a service restart;
3. when the job's main process ends, kills whatever the job left behind,
   reads how it ended and what it used, removes its cgroup, and writes the
   outcome file atomically before exiting.

Because the outcome is a file and the shim outlives the service, a restarted
service learns the exit status even of a job that ended while it was down.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import json
import os
import select
import signal
import socket
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from jobworker.isolation import child, syscalls
from jobworker.isolation.cgroups import JobCgroup, Usage
from jobworker.isolation.namespaces import CLONE_NEWPID
from jobworker.isolation.outcome import Outcome, decode_wait_status, utcnow, write_atomically
from jobworker.isolation.outputlog import MAX_RECORD, OutputLogWriter, Stream
from jobworker.isolation.procfs import start_ticks

OUTPUT_LOG = "output.log"
OUTCOME = "outcome.json"
SHIM_STATE = "shim.json"
SHIM_LOG = "shim.log"

_PIPE_SIZE = 1 << 20
"""A deep pipe lets a fast job keep writing while the shim is busy writing the log."""

_DRAIN_SECONDS = 5.0
"""How long to wait for output after the job's processes were killed.

Only a process that escaped the job's cgroup can keep the pipes open longer.
"""

_EMPTY_SECONDS = 30.0


@dataclass(frozen=True)
class Request:
    """What the launcher asks for, as sent through the fork server."""

    job_id: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    cgroup: str
    run_dir: str
    output_cap: int | None
    pid_namespace: bool
    unshare_flags: int
    private_mounts: bool
    hostname: str | None

    def to_json(self) -> bytes:
        """Wire form."""
        return json.dumps(self.__dict__).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Request:
        """Inverse of ``to_json``."""
        return cls(**json.loads(raw))


def run(request: Request, report: socket.socket, netns_fd: int | None) -> NoReturn:
    """Entry point in the freshly forked shim. Never returns."""
    run_dir = Path(request.run_dir)
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        syscalls.set_process_name("jobworker-shim")
        log_fd = os.open(run_dir / SHIM_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        _Shim(request, run_dir).run(report, netns_fd)
    except BaseException:
        traceback.print_exc()
        JobCgroup(Path(request.cgroup)).kill()
    os._exit(0)


class _Shim:
    def __init__(self, request: Request, run_dir: Path) -> None:
        self.request = request
        self.run_dir = run_dir
        self.cgroup = JobCgroup(Path(request.cgroup))
        self.notes: list[str] = []

    def run(self, report: socket.socket, netns_fd: int | None) -> None:
        log = OutputLogWriter(self.run_dir / OUTPUT_LOG, self.request.output_cap)
        stdout_r, stdout_w = _pipe()
        stderr_r, stderr_w = _pipe()
        error_r, error_w = os.pipe2(os.O_CLOEXEC)
        status_r, status_w = os.pipe2(os.O_CLOEXEC) if self.request.pid_namespace else (-1, -1)
        if self.request.pid_namespace:
            syscalls.unshare(CLONE_NEWPID)  # applies to our children only
        started_at = utcnow()
        pid = os.fork()
        if pid == 0:
            for fd in (stdout_r, stderr_r, error_r, status_r, report.fileno(), log.fileno()):
                if fd >= 0:
                    os.close(fd)
            child.run(self._plan(stdout_w, stderr_w, error_w, status_w, netns_fd))
        for fd in (stdout_w, stderr_w, error_w, status_w):
            if fd >= 0:
                os.close(fd)
        if netns_fd is not None:
            os.close(netns_fd)
        failure = _read_all(error_r)
        if failure:
            os.waitpid(pid, 0)
            self._release_cgroup()
            stage, errno, message = failure.decode(errors="replace").split("\0", 2)
            _send(
                report, {"event": "failed", "stage": stage, "errno": int(errno), "message": message}
            )
            return
        main_pidfd = os.pidfd_open(pid)
        self._save_state(pid, started_at)
        own_pidfd = os.pidfd_open(os.getpid())
        _send(
            report,
            {"event": "started", "pid": pid, "started_at": started_at.isoformat()},
            fds=[own_pidfd, main_pidfd],
        )
        os.close(own_pidfd)
        report.close()
        status = self._supervise(
            log, pid, main_pidfd, {stdout_r: Stream.STDOUT, stderr_r: Stream.STDERR}
        )
        if status_r >= 0:
            status = _command_status(status_r, status)
        self._finish(log, status, started_at)

    def _plan(
        self, stdout_w: int, stderr_w: int, error_w: int, status_w: int, netns_fd: int | None
    ) -> child.ChildPlan:
        request = self.request
        return child.ChildPlan(
            argv=request.argv,
            env=request.env,
            cwd=request.cwd,
            cgroup_procs=str(self.cgroup.procs_file()),
            netns_fd=netns_fd,
            unshare_flags=request.unshare_flags,
            private_mounts=request.private_mounts,
            mount_proc=request.pid_namespace,
            hostname=request.hostname,
            stdout_fd=stdout_w,
            stderr_fd=stderr_w,
            error_fd=error_w,
            status_fd=status_w if status_w >= 0 else None,
        )

    def _save_state(self, pid: int, started_at: datetime) -> None:
        """Record who we are so a restarted service can find us and the job again."""
        state = {
            "shim_pid": os.getpid(),
            "shim_ticks": start_ticks(os.getpid()),
            "main_pid": pid,
            "main_ticks": start_ticks(pid),
            "started_at": started_at.isoformat(),
        }
        # Not fsynced: it only matters while this process lives, and it is on the
        # launch path, where every millisecond counts.
        write_atomically(self.run_dir / SHIM_STATE, json.dumps(state), durable=False)

    def _supervise(
        self, log: OutputLogWriter, pid: int, main_pidfd: int, streams: dict[int, Stream]
    ) -> int:
        """Copy output until the job has ended and its pipes are closed; return its status."""
        poller = select.poll()
        for fd in [*streams, main_pidfd]:
            poller.register(fd, select.POLLIN)
        devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        status: int | None = None
        while streams or status is None:
            ready = poller.poll(None if status is None else _DRAIN_SECONDS * 1000)
            if not ready:
                self.notes.append("output pipes stayed open after the job ended; stopped reading")
                break
            for fd, _events in ready:
                if fd == main_pidfd:
                    poller.unregister(fd)
                    status = os.waitpid(pid, 0)[1]
                    os.close(main_pidfd)
                    self.cgroup.kill()  # the job ends with its main process
                elif not _copy(fd, streams[fd], log, devnull):
                    poller.unregister(fd)
                    os.close(fd)
                    del streams[fd]
        os.close(devnull)
        assert status is not None
        return status

    def _finish(self, log: OutputLogWriter, status: int, started_at: datetime) -> None:
        ended_at = utcnow()
        exit_code, signo = decode_wait_status(status)
        oom_killed, usage = self._release_cgroup()
        log.close()
        outcome = Outcome(
            exit_code=exit_code,
            signal=signo,
            oom_killed=oom_killed,
            usage=usage,
            started_at=started_at,
            ended_at=ended_at,
            note="; ".join(self.notes) or None,
        )
        write_atomically(self.run_dir / OUTCOME, outcome.to_json(), durable=True)

    def _release_cgroup(self) -> tuple[bool, Usage]:
        """Make sure nothing of the job runs, read its accounting, remove its group."""
        remains = self.cgroup.tear_down(_EMPTY_SECONDS)
        if remains.survivors:
            self.notes.append(f"processes of the job survived cgroup.kill: {remains.survivors}")
        return remains.oom_killed, remains.usage


def _pipe() -> tuple[int, int]:
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    # Above /proc/sys/fs/pipe-max-size this fails; the default size still works, just slower.
    with contextlib.suppress(OSError):
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    return read_end, write_end


def _copy(fd: int, stream: Stream, log: OutputLogWriter, devnull: int) -> bool:
    """Move one chunk from a pipe into the log; False at end of file."""
    if log.capped():
        moved = os.splice(fd, devnull, MAX_RECORD)  # past the cap: discard without copying
        log.drop(moved)
        return moved > 0
    data = os.read(fd, MAX_RECORD)
    if data:
        log.write(stream, data)
    return bool(data)


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


def _send(report: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    payload = json.dumps(message).encode()
    ancillary = []
    if fds:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
    # If the launcher gave up waiting, the outcome file still tells the story.
    with contextlib.suppress(OSError):
        report.sendmsg([payload], ancillary)
