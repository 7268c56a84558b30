"""The service-side API: launch jobs, signal and stop them, learn how they ended.

Everything here runs in the service's asyncio loop and never forks: processes
are created by the fork server (see ``_forkserver``), so launching is safe in a
multi-threaded server. The launcher keeps a couple of spare shims, forked and
ready before any job needs them, and orders a new one after each launch. A
launch goes:

1. create the job's cgroup with the limits of the validated spec;
2. prepare a network namespace with loopback up, if the job gets one;
3. hand the job to a spare shim (or a freshly ordered one when none is left);
4. the shim clones the job's first process straight into the cgroup and
   reports its pidfd; that process joins the namespaces and execs the command.
   End of file on the job's error pipe (held here) means the exec succeeded;
   otherwise the pipe says which step failed, with its errno.

A ``RunningJob`` then holds pidfds for the shim and the job's main process:
signalling through a pidfd can never hit an unrelated process that reused the
PID, and the shim's pidfd becomes readable when the job is completely over.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
from datetime import datetime
from pathlib import Path

from jobworker.isolation import _supervisor as supervisor
from jobworker.isolation._netns import NetnsFactory
from jobworker.isolation._procfs import open_pidfd
from jobworker.isolation._protocol import (
    MAX_REQUEST,
    ORDER,
    READY,
    Cloned,
    Failed,
    ForkFailed,
    ProcessSetup,
    Request,
    ShimState,
    decode_reply,
)
from jobworker.isolation.cgroups import CgroupHost, JobCgroup, Remains, Usage
from jobworker.isolation.errors import (
    BadWorkingDirectory,
    CommandNotExecutable,
    CommandNotFound,
    InternalError,
    IsolationError,
    LaunchError,
    MalformedMessage,
    ResourcesExhausted,
)
from jobworker.isolation.outcome import Outcome, utcnow
from jobworker.isolation.rundir import RunDir
from jobworker.isolation.spec import JobSpec, ValidSpec, job_environment

_REPORT_SIZE = 64 * 1024
_TEAR_DOWN_SECONDS = 30.0
_SHIM_ATTEMPTS = 3
"""A spare shim that died while idle (killed by someone) is replaced; a few in a row is a bug."""

SPARE_SHIMS = 2
"""Shims kept forked and ready. Two, so that back-to-back launches both find one while
the replacement of the first is being forked; each idle spare costs about 1.5 MiB."""
_SO_SNDBUFFORCE = 32
"""From asm-generic/socket.h (x86, arm64 and most others); Python does not name it."""
_NOT_EXECUTABLE = {errno.EACCES, errno.ENOEXEC, errno.EISDIR, errno.EPERM, errno.ETXTBSY}


class Launcher:
    """Owns the fork server, the spare shims and the namespace factory; one per service."""

    def __init__(self, host: CgroupHost, spares: int = SPARE_SHIMS) -> None:
        self.host = host
        self._netns = NetnsFactory()
        self._control, self._server = supervisor.start_fork_server(host)
        self._wanted_spares = spares
        self._closed = False
        self._spares: list[socket.socket] = []
        """Connections to shims ordered from the fork server, oldest first; each is
        ready, or will be as soon as the fork server has forked it."""
        self._order_spares()

    @classmethod
    def start(cls, host: CgroupHost, spares: int = SPARE_SHIMS) -> Launcher:
        """Prepare the cgroup layout (moving this process into its leaf), then the helpers.

        The order matters: the fork server and every shim inherit our cgroup, so
        we must be in the supervisor leaf before the fork server starts. Under
        systemd (``host.scope``) the leaf is in a scope that may not exist yet:
        the fork server goes there first, and the layout is prepared then.
        """
        if host.scope is None:
            host.prepare()
        return cls(host, spares)

    async def launch(self, valid: ValidSpec) -> RunningJob:
        """Start the job; returns once the command runs, or raises the reason it cannot."""
        spec = valid.spec
        cgroup = self.host.job_group(spec.job_id)
        cgroup.create(valid.cgroup_settings)
        netns_fd = None
        try:
            if spec.namespaces.net:
                netns_fd = await self._netns.create()
            request = _request(spec, cgroup)
            return await self._spawn(spec, request, cgroup, netns_fd)
        except BaseException:
            await asyncio.to_thread(cgroup.tear_down, _TEAR_DOWN_SECONDS)
            raise
        finally:
            if netns_fd is not None:
                os.close(netns_fd)
            # Once the loop is free, after the launch and (usually) after the reply has
            # been handed to gRPC: forking a new spare then competes with neither. Run
            # inline, it cost the launch ~6 ms in the test VM.
            asyncio.get_running_loop().call_soon(self._order_spares)

    async def _spawn(
        self, spec: JobSpec, request: Request, cgroup: JobCgroup, netns_fd: int | None
    ) -> RunningJob:
        shim_pidfd, error_r, connection = await self._hand_over(request, netns_fd)
        try:
            cloned, main_pidfd = await _started(spec, connection, error_r, shim_pidfd)
        except BaseException:
            os.close(shim_pidfd)
            raise
        finally:
            os.close(error_r)
        return RunningJob(
            job_id=spec.job_id,
            pid=cloned.pid,
            cgroup=cgroup,
            run_dir=spec.run_dir,
            started_at=cloned.started_at,
            shim_pidfd=shim_pidfd,
            main_pidfd=main_pidfd,
        )

    async def _hand_over(
        self, request: Request, netns_fd: int | None
    ) -> tuple[int, int, socket.socket]:
        """Give the job to a ready shim: its pidfd, the job's error pipe, the connection."""
        payload = request.encode()
        fds = [] if netns_fd is None else [netns_fd]
        failed_fork: ForkFailed | None = None
        for _attempt in range(_SHIM_ATTEMPTS):
            connection = self._spares.pop(0) if self._spares else await self._order()
            ready: list[int] = []
            try:
                message, ready = await _receive(connection)
                if message == READY and len(ready) == 2:
                    await _send(connection, payload, fds)
                    shim_pidfd, error_r = ready
                    os.set_blocking(error_r, False)
                    return shim_pidfd, error_r, connection
                # A spare ordered while forks failed says so; a new order may succeed.
                if ForkFailed.is_one(message):
                    failed_fork = ForkFailed.decode(message)
            except (BrokenPipeError, ConnectionResetError):
                pass  # it died while idle: take another
            connection.close()
            for fd in ready:
                os.close(fd)
        if failed_fork is not None:
            number, reason = failed_fork.errno, failed_fork.reason
            raise ResourcesExhausted(
                f"cannot start a job now: the service could not create a process ({reason}); "
                "the host, or the service's own cgroup, is out of processes or memory",
                stage="fork",
                errno=number,
            )
        raise InternalError(f"{_SHIM_ATTEMPTS} shims in a row exited before taking a job")

    async def _order(self) -> socket.socket:
        """Ask the fork server for a shim; returns our end of its connection at once."""
        ours, theirs = _shim_connection()
        try:
            await _send(self._control, ORDER, [theirs.fileno()])
        except OSError as error:
            ours.close()
            raise InternalError(f"the fork server is gone: {error.strerror}") from error
        finally:
            theirs.close()
        return ours

    def _order_spares(self) -> None:
        """Top the spares up; best effort (a launch orders its own shim if none is left)."""
        while not self._closed and len(self._spares) < self._wanted_spares:
            ours, theirs = _shim_connection()
            try:
                socket.send_fds(self._control, [ORDER], [theirs.fileno()])
            except OSError:  # full for now, or the fork server is gone: the next launch says so
                ours.close()
                return
            finally:
                theirs.close()
            self._spares.append(ours)

    def adopt(self, job_id: str, run_dir: Path) -> RunningJob | Outcome:
        """Take over a job launched by an earlier run of the service.

        Returns a ``RunningJob`` while its shim lives; the recorded outcome if the
        job ended while nobody watched. If the shim died without recording one
        (a host reboot, someone killed it), or its files are damaged so that it
        cannot be found, whatever is left of the job is killed and the outcome
        says its exit status is unknown.
        """
        cgroup = self.host.job_group(job_id)
        state = _shim_state(RunDir(run_dir))
        if isinstance(state, ShimState):
            shim_pidfd = open_pidfd(state.shim_pid, state.shim_ticks)
            if shim_pidfd is not None:
                return RunningJob(
                    job_id=job_id,
                    pid=state.main_pid,
                    cgroup=cgroup,
                    run_dir=run_dir,
                    started_at=state.started_at,
                    shim_pidfd=shim_pidfd,
                    main_pidfd=open_pidfd(state.main_pid, state.main_ticks),
                )
            return _recorded_outcome(run_dir, cgroup, state.started_at)
        return _recorded_outcome(run_dir, cgroup, None, damage=state)

    def leftover_groups(self) -> list[JobCgroup]:
        """Job cgroups that exist right now: after a crash, candidates for ``adopt``."""
        return self.host.existing_job_groups()

    async def discard(self, cgroup: JobCgroup, run_dir: Path) -> None:
        """Kill and remove a leftover job nobody can adopt; return once its shim is gone.

        Waiting for the shim matters: until it exits it writes the job's outcome into
        ``run_dir``, which the caller is about to delete.
        """
        state = _shim_state(RunDir(run_dir))
        shim_pidfd = None
        if isinstance(state, ShimState):
            shim_pidfd = open_pidfd(state.shim_pid, state.shim_ticks)
        await asyncio.to_thread(cgroup.tear_down, _TEAR_DOWN_SECONDS)
        if shim_pidfd is None:
            return
        try:
            async with asyncio.timeout(_TEAR_DOWN_SECONDS):
                await _readable(shim_pidfd)
        except TimeoutError:
            pass  # a shim stuck in the kernel; its files are removed regardless
        finally:
            os.close(shim_pidfd)

    async def close(self) -> None:
        """Stop the spares, the fork server and the namespace thread; running jobs go on.

        Waits until the spare shims have exited, so nothing of ours is left running.
        """
        self._closed = True
        spares, self._spares = self._spares, []
        for connection in spares:
            with connection:
                _ready_message, fds = await _receive(connection)  # READY, or EOF if it died
            # Our end is closed now: the spare sees end of file and exits.
            for fd in fds:
                await _readable(fd)
                os.close(fd)
        self._control.close()
        await asyncio.to_thread(self._server.wait)
        self._netns.close()


class RunningJob:
    """A job whose shim is alive. Close it (or await ``wait``) to release its pidfds."""

    def __init__(
        self,
        *,
        job_id: str,
        pid: int,
        cgroup: JobCgroup,
        run_dir: Path,
        started_at: datetime,
        shim_pidfd: int,
        main_pidfd: int | None,
    ) -> None:
        self.job_id = job_id
        self.pid = pid
        self.cgroup = cgroup
        self.run_dir = run_dir
        self.started_at = started_at
        self._shim_pidfd = shim_pidfd
        self._main_pidfd = main_pidfd
        self._ended: asyncio.Future[None] | None = None
        self._outcome: asyncio.Task[Outcome] | None = None

    @property
    def output_log(self) -> Path:
        """Where the shim writes the job's output."""
        return RunDir(self.run_dir).output_log

    def signal(self, signo: int) -> bool:
        """Send ``signo`` to the job's main process; False if it has already exited.

        With a PID namespace the main process is the job's init, which passes
        the signal on to the command.
        """
        if self._main_pidfd is None:
            return False
        try:
            signal.pidfd_send_signal(self._main_pidfd, signo)
        except ProcessLookupError:
            return False
        return True

    async def stop(self, grace: float) -> Outcome:
        """SIGTERM, then after ``grace`` seconds SIGKILL to every process of the job.

        Safe to call concurrently and on a job that is already over.
        """
        if not self._ending().done():
            self.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self._ending()), timeout=grace)
            except TimeoutError:
                self.cgroup.kill()
        return await self.wait()

    async def wait(self) -> Outcome:
        """Wait until the job is completely over (cgroup removed) and return its outcome."""
        if self._outcome is None:
            self._outcome = asyncio.ensure_future(self._collect())
        return await asyncio.shield(self._outcome)

    async def _collect(self) -> Outcome:
        await self._ending()
        try:
            return await asyncio.to_thread(_recorded_outcome, self.run_dir, self.cgroup, None)
        finally:
            self._release()

    def detach(self) -> None:
        """Stop watching the job and release its descriptors; the job itself runs on.

        For a service that shuts down leaving its jobs to be adopted by its successor.
        """
        if self._ended is not None and not self._ended.done():
            asyncio.get_running_loop().remove_reader(self._shim_pidfd)
            self._ended.cancel()
        self._release()

    def _ending(self) -> asyncio.Future[None]:
        if self._ended is None:
            loop = asyncio.get_running_loop()
            self._ended = loop.create_future()
            loop.add_reader(self._shim_pidfd, self._on_shim_exit)
        return self._ended

    def _on_shim_exit(self) -> None:
        asyncio.get_running_loop().remove_reader(self._shim_pidfd)
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(None)

    def _release(self) -> None:
        if self._shim_pidfd >= 0:
            os.close(self._shim_pidfd)
            self._shim_pidfd = -1
        if self._main_pidfd is not None:
            os.close(self._main_pidfd)
            self._main_pidfd = None


def _request(spec: JobSpec, cgroup: JobCgroup) -> Request:
    """What the shim needs of ``spec``: the one place a job's spec becomes process setup."""
    namespaces, user = spec.namespaces, spec.user
    root = user is None or user.is_root
    return Request(
        job_id=spec.job_id,
        cgroup=cgroup.path,
        run_dir=RunDir(spec.run_dir),
        output_cap=spec.output_cap,
        stdin=spec.stdin,
        time_limits=spec.time_limits,
        account=user.account_lines()
        if user is not None and not user.listed and namespaces.mount
        else None,
        process=ProcessSetup(
            argv=spec.argv,
            env=job_environment(spec.job_id, spec.env, spec.user),
            cwd=spec.cwd,
            pid_namespace=namespaces.pid,
            unshare_flags=namespaces.unshare_flags(),
            private_mounts=namespaces.mount,
            hostname=spec.job_id if namespaces.uts else None,
            uid=user.uid if user else None,
            gid=user.gid if user else None,
            groups=user.groups if user else (),
            # Every job not run as root: setuid programs cannot make it root again.
            no_new_privs=not root or spec.privileges.no_new_privs,
            capabilities=tuple(sorted(spec.privileges.capabilities(root=root))),
            seccomp=spec.privileges.seccomp,
            filesystem=spec.filesystem.for_job(spec.limits.memory_bytes),
        ),
    )


def _recorded_outcome(
    run_dir: Path, cgroup: JobCgroup, started_at: datetime | None, *, damage: str | None = None
) -> Outcome:
    """How the job ended, as its shim recorded it; otherwise what can still be said.

    Never raises for a job's own files or group: a damaged outcome file, a group that
    cannot be removed, each becomes a note on an outcome whose exit status is unknown.
    """
    recorded = RunDir(run_dir).outcome
    try:
        return Outcome.from_json(recorded.read_text())
    except FileNotFoundError:
        why = damage or (
            "the job's shim ended without recording an outcome (it was killed, or the host "
            "restarted)"
        )
    except (OSError, ValueError) as error:
        why = f"the job's outcome file {recorded} is damaged ({error})"
    notes = [f"{why}; the job's exit status is unknown and anything left of it was killed"]
    try:
        remains = cgroup.tear_down(_TEAR_DOWN_SECONDS)
    except IsolationError as error:
        notes.append(f"its cgroup could not be removed: {error}")
        remains = Remains(oom_killed=False, usage=Usage(), survivors=[])
    return Outcome(
        exit_code=None,
        signal=None,
        oom_killed=remains.oom_killed,
        usage=remains.usage,
        started_at=started_at or utcnow(),
        ended_at=utcnow(),
        note="; ".join(notes),
    )


def _shim_state(run_dir: RunDir) -> ShimState | str | None:
    """The shim's state file; None if there is none, a description of the damage if damaged."""
    path = run_dir.shim_state
    try:
        return ShimState.decode(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, MalformedMessage) as error:
        return f"the job's shim state file {path} is damaged ({error}), so its shim cannot be found"


def _shim_connection() -> tuple[socket.socket, socket.socket]:
    """A new launcher-shim connection: our end (non-blocking) and the shim's.

    A request goes as one message, which the kernel refuses if it is larger than the
    sender's buffer (about 208 KiB by default): ours is made big enough for any
    request the spec allows (the service runs as root, so it may exceed wmem_max).
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, 2 * MAX_REQUEST)
    ours.setblocking(False)
    return ours, theirs


async def _started(
    spec: JobSpec, connection: socket.socket, error_r: int, shim_pidfd: int
) -> tuple[Cloned, int]:
    """Wait until the job's command runs: the shim's report and the main pidfd, or the error."""
    with connection:
        message, fds = await _receive(connection)
    if not message:
        raise InternalError(
            f"the shim of job {spec.job_id} exited without a report; see "
            f"{RunDir(spec.run_dir).shim_log}"
        )
    reply, main_pidfd = _cloned(spec, message, fds)
    try:
        # End of file: the exec succeeded. Anything else: the step that failed.
        failure = await _read_to_end(error_r)
    except BaseException:
        os.close(main_pidfd)
        raise
    if failure:
        os.close(main_pidfd)
        # The shim records the failed process's exit and removes the group: let it
        # finish, so nothing of the job is left when the caller hears of the failure.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_TEAR_DOWN_SECONDS):
                await _readable(shim_pidfd)
        raise _launch_error(spec, Failed.decode(failure))
    return reply, main_pidfd


def _cloned(spec: JobSpec, message: bytes, fds: list[int]) -> tuple[Cloned, int]:
    """The shim's report that the job's first process exists, and its pidfd.

    Any other message closes every descriptor that came with it: a failure report, or a
    damaged one, must not leak them into a long-running service.
    """
    try:
        reply = decode_reply(message)
    except MalformedMessage:
        _close_all(fds)
        raise
    if isinstance(reply, Failed):
        _close_all(fds)
        raise _launch_error(spec, reply)
    if len(fds) != 1:
        _close_all(fds)
        raise MalformedMessage(
            f"the shim of job {spec.job_id} reported the start with {len(fds)} descriptors, "
            "not the main process's pidfd alone"
        )
    return reply, fds[0]


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _launch_error(spec: JobSpec, failed: Failed) -> LaunchError:
    stage, number, reason = failed.stage, failed.errno, failed.message
    command = spec.argv[0]
    if stage == "exec" and number == errno.ENOENT:
        return CommandNotFound(f"{command}: command not found", stage=stage, errno=number)
    if stage == "exec" and number in _NOT_EXECUTABLE:
        return CommandNotExecutable(
            f"{command}: cannot execute: {reason}", stage=stage, errno=number
        )
    if stage == "chdir":
        return BadWorkingDirectory(
            f"working directory {spec.cwd}: {reason}", stage=stage, errno=number
        )
    if stage in ("clone", "fork") and number in (errno.EAGAIN, errno.ENOMEM):
        return ResourcesExhausted(
            f"cannot start the job now: no process could be made for it ({reason}); jobs "
            "together have as many processes or as much memory as the server allows them",
            stage=stage,
            errno=number,
        )
    return LaunchError(f"could not start the job ({stage}): {reason}", stage=stage, errno=number)


async def _send(sock: socket.socket, message: bytes, fds: list[int]) -> None:
    """Send one message with descriptors, waiting (not blocking) while the socket is full."""
    while True:
        try:
            socket.send_fds(sock, [message], fds)
        except BlockingIOError:
            await _ready(sock.fileno(), writable=True)
        else:
            return


async def _receive(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One message from a shim with its descriptors, without blocking the event loop."""
    while True:
        try:
            message, fds, _flags, _address = socket.recv_fds(sock, _REPORT_SIZE, 2)
        except BlockingIOError:
            await _readable(sock.fileno())
        else:
            return message, fds


async def _read_to_end(fd: int) -> bytes:
    """Everything written to a non-blocking pipe until its last writer closes it."""
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            await _readable(fd)
            continue
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


async def _readable(fd: int) -> None:
    await _ready(fd, writable=False)


async def _ready(fd: int, *, writable: bool) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    add, remove = (
        (loop.add_writer, loop.remove_writer) if writable else (loop.add_reader, loop.remove_reader)
    )

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    add(fd, wake)
    try:
        await ready
    finally:
        remove(fd)
