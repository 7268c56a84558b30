"""The runner: start, stop, inspect and stream jobs; keep their records across restarts.

Concurrency model: one asyncio event loop, no thread per job or per reader.
Each running job costs one small task that waits on its shim's pidfd, and two
descriptors; each reader is an async generator with one descriptor. Record
writes go to the database through one dedicated thread, in order, so the loop
never waits on fsync.

State directory (mode 0700: job records name commands, which may be confidential)::

    <state>/jobworker.db        job records (SQLite, WAL, fsync on commit; mode 0600)
    <state>/jobs/<id>/          the job's run directory: its output, outcome, ... (see ``RunDir``)

Transient users' home directories live apart, in ``<state>-home/<id>`` by
default (mode 0711: a job can reach its own home without seeing the others).

Restart: jobs are left running when the service stops (unless configured
otherwise) and re-adopted when it starts again: the shim of each job kept
capturing output and, if the job ended meanwhile, recorded its outcome. Jobs
whose end nobody observed (the shim was killed, the host restarted) become
``lost``. Job cgroups and run directories that have no record (the service
died between launching a job and recording it) are killed and removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import resource
import shutil
import stat
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from jobworker.isolation import errors as isolation
from jobworker.isolation.capacity import HostCapacity
from jobworker.isolation.cgroups import CgroupHost, Usage
from jobworker.isolation.filesystem import Filesystem
from jobworker.isolation.launcher import Launcher, RunningJob
from jobworker.isolation.limits import Limits
from jobworker.isolation.namespaces import Namespaces
from jobworker.isolation.outcome import Outcome, utcnow
from jobworker.isolation.privileges import Privileges
from jobworker.isolation.rundir import RunDir
from jobworker.isolation.spec import JobSpec, ValidSpec
from jobworker.isolation.timelimits import TimeLimits
from jobworker.runner import defaults
from jobworker.runner._inotify import FileWatcher
from jobworker.runner._job_limits import LimitPolicy
from jobworker.runner._quota import OutputQuota
from jobworker.runner._retention import Retention
from jobworker.runner._store import RecordStore
from jobworker.runner._users import IdRange, TransientUsers, UserPolicy
from jobworker.runner.errors import (
    CapacityExhausted,
    HostUnsupported,
    InternalError,
    InvalidConfiguration,
    InvalidRequest,
    JobNotFound,
    JobStillRunning,
    LimitUnenforceable,
    OptionNotAllowed,
    StartFailed,
    StartFailure,
    StorageError,
    StorageFull,
)
from jobworker.runner.host import JobPlacement, discover
from jobworker.runner.output import OutputEvent, read_output
from jobworker.runner.pages import JobPage, Position
from jobworker.runner.records import JobRecord, JobState

log = logging.getLogger("jobworker.runner")
T = TypeVar("T")

SHUTDOWN_STOPPER = "jobworker (shutdown)"
_SAVE_RETRY_SECONDS = 1.0
_SAVE_RETRY_MAX_SECONDS = 30.0


@dataclass(frozen=True)
class RunnerConfig:
    """How the runner is set up; the defaults suit a single host."""

    state_dir: Path
    cgroup_parent: str | None = None
    output_cap_bytes: int | None = defaults.OUTPUT_CAP_BYTES
    """Per job; output past it is dropped and the stream says so. None means no cap."""
    output_quota_bytes: int | None = None
    """Output of all jobs together, ended ones included (see ``_quota``); None: no quota."""
    min_free_bytes: int = defaults.MIN_FREE_BYTES
    """New jobs are refused while less is free under the state directory: records and the
    output of running jobs need the rest."""
    max_running_jobs: int = defaults.MAX_RUNNING_JOBS
    max_stdin_bytes: int = defaults.MAX_STDIN_BYTES
    """Standard input a job may be given at start; 0: none."""
    stop_jobs_on_close: bool = False
    """Default False: jobs outlive a clean shutdown and are re-adopted at the next start."""
    shutdown_grace_seconds: float = defaults.STOP_GRACE_SECONDS
    limit_grace_seconds: float = defaults.STOP_GRACE_SECONDS
    """Between SIGTERM and the kill when a job reaches its timeout or CPU time."""
    keep_ended_seconds: float | None = defaults.KEEP_ENDED_SECONDS
    """How long an ended job's record and output are kept (None: until removed by hand)."""
    default_user: str | None = None
    """Who a job runs as when its request names nobody: USER or USER:GROUP, or None for a
    transient user of its own (see ``_users``). Resolved once, when the runner opens."""
    allowed_users: tuple[str, ...] = ()
    """Accounts (USER or USER:GROUP) that non-admins may name besides the default user."""
    transient_ids: tuple[int, int] = defaults.TRANSIENT_IDS
    """First and last uid (and gid) of transient users; checked to be free at open."""
    default_limits: Limits = field(default_factory=Limits)
    """Limits of a job that sets none of its own, field by field. Without a default pids
    limit a job gets a share of the kernel's task limit (``defaults.JOB_TASKS_PERCENT``)."""
    max_limits: Limits = field(default_factory=Limits)
    """Limits no job may exceed; a job that asks for nothing gets the maximum if no default."""
    jobs_memory_bytes: int | None = None
    """Memory of all jobs together; None: the machine's less a reserve for the service."""
    jobs_pids: int | None = None
    """Processes and threads of all jobs together; None: the kernel's less a reserve."""
    home_root: Path | None = None
    """Where transient users' homes go; None: ``<state_dir>-home`` beside the state directory.
    Every directory above it must be searchable by others, or jobs could not reach them."""

    @property
    def homes(self) -> Path:
        """The directory that holds transient users' home directories."""
        return self.home_root or self.state_dir.with_name(self.state_dir.name + "-home")


@dataclass(frozen=True)
class StartRequest:
    """What to run; ``environment`` adds to the fixed minimal one every job gets."""

    command: str
    args: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    namespaces: Namespaces = field(default_factory=Namespaces)
    working_directory: str = "/"
    environment: Mapping[str, str] = field(default_factory=dict)
    user: str = ""
    """USER or USER:GROUP, names or numbers; empty means the configured default user."""
    stdin: bytes = b""
    """The job's standard input, read to its end at start; empty: /dev/null."""
    filesystem: Filesystem = field(default_factory=Filesystem)
    privileges: Privileges = field(default_factory=Privileges)
    by_admin: bool = False
    """Whether an admin asks: a job may then run as any user (others: the default or an
    allowed one), see host paths and choose its root (``Filesystem.admin_option``), and
    get capabilities added or the syscall filter lifted (``Privileges.widened``)."""
    timeout: float | None = None
    """Seconds of wall-clock time, then the job is ended as a stop would (see ``timelimits``)."""
    cpu_time: float | None = None
    """Seconds of CPU time of all the job's processes together, then the same."""


class _Active:
    """A job that is running, as the runner tracks it."""

    def __init__(self, record: JobRecord, handle: RunningJob) -> None:
        self.record = record
        self.handle = handle
        self.ended = asyncio.Event()


class Runner:
    """Owns every job of one state directory. Create with ``await Runner.open(config)``."""

    def __init__(
        self,
        config: RunnerConfig,
        launcher: Launcher,
        store: RecordStore,
        users: UserPolicy,
        limits: LimitPolicy,
    ) -> None:
        self.config = config
        self._users = users
        self._limits = limits
        self._quota = OutputQuota(config.output_quota_bytes, config.output_cap_bytes)
        self._unsaved: dict[str, JobRecord] = {}
        """Final records of ended jobs that could not be stored yet (a full disk)."""
        self._space_freed = asyncio.Event()
        self._saving: asyncio.Task[None] | None = None
        self._transient = TransientUsers(IdRange(*config.transient_ids), config.homes)
        self._launcher = launcher
        self._store = store
        self._db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobworker-db")
        self._watcher = FileWatcher()
        self._active: dict[str, _Active] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self._starting = 0
        self._always_ended = asyncio.Event()
        self._always_ended.set()
        self._closing = asyncio.Event()
        self._retention = Retention(config.keep_ended_seconds, self._remove)

    @property
    def placement(self) -> JobPlacement:
        """Where this runner's jobs go, and which limits the kernel enforces on them."""
        return JobPlacement.of(self._launcher.host)

    @property
    def jobs_dir(self) -> Path:
        """Where each job's run directory lives."""
        return self.config.state_dir / "jobs"

    def _run_dir(self, job_id: str) -> RunDir:
        return RunDir(self.jobs_dir / job_id)

    @classmethod
    async def open(cls, config: RunnerConfig) -> Runner:
        """Check the host, prepare the state directory, and re-adopt jobs of an earlier run."""
        host = discover(config.cgroup_parent)
        users = await asyncio.to_thread(_prepare_users, config)
        _prepare_state_dir(config.state_dir)
        store = RecordStore(config.state_dir / "jobworker.db")
        try:
            launcher = Launcher.start(host)
        except BaseException as error:
            store.close()
            if isinstance(error, isolation.HostUnsupported):
                raise HostUnsupported(str(error)) from None
            raise
        try:
            limits = _limit_jobs(config, launcher.host)
        except BaseException as error:
            await launcher.close()
            store.close()
            raise _translate(error) from error
        # Only now: the fork server, and so every shim and job, keeps the limit we were given.
        _raise_open_file_limit()
        runner = cls(config, launcher, store, users, limits)
        try:
            await runner._recover()
        except BaseException:
            await runner.close()
            raise
        return runner

    async def start(self, request: StartRequest, owner: str) -> JobRecord:
        """Launch a job; returns its record once the command is running."""
        if not owner:
            raise InvalidRequest("owner", "a job needs an owner")
        if len(request.stdin) > self.config.max_stdin_bytes:
            raise InvalidRequest(
                "stdin",
                f"{len(request.stdin)} bytes is more than the server's limit of "
                f"{self.config.max_stdin_bytes} bytes",
            )
        admin_option = request.filesystem.admin_option()
        if admin_option is not None and not request.by_admin:
            raise OptionNotAllowed(
                f"filesystem.{admin_option}: only admins may show host paths to a job"
            )
        if len(self._active) + self._starting >= self.config.max_running_jobs:
            raise CapacityExhausted(
                f"{self.config.max_running_jobs} jobs are running, the configured maximum"
            )
        self._starting += 1
        try:
            return await self._start(request, owner)
        finally:
            self._starting -= 1

    async def _start(self, request: StartRequest, owner: str) -> JobRecord:
        job_id = str(uuid.uuid4())
        spec = JobSpec(
            job_id=job_id,
            argv=(request.command, *request.args),
            run_dir=self.jobs_dir / job_id,
            env=request.environment,
            cwd=request.working_directory,
            limits=self._limits.apply(request.limits),
            namespaces=request.namespaces,
            output_cap=self._quota.start(job_id),
            stdin=bool(request.stdin),
            filesystem=request.filesystem,
            privileges=request.privileges,
            time_limits=TimeLimits(
                request.timeout, request.cpu_time, grace=self.config.limit_grace_seconds
            ),
        )
        # Off the event loop: user lookups may ask a directory server, validation
        # stats device paths, and the job's directories are made on disk.
        try:
            valid = await asyncio.to_thread(self._prepare, spec, request)
        except BaseException:
            self._quota.release(job_id)
            raise
        spec = valid.spec
        assert spec.user is not None
        record = JobRecord(
            id=job_id,
            owner=owner,
            argv=spec.argv,
            working_directory=spec.cwd,
            user=spec.user.name,
            uid=spec.user.uid,
            gid=spec.user.gid,
            limits=spec.limits,
            namespaces=spec.namespaces,
            filesystem=spec.filesystem,
            privileges=spec.privileges,
            time_limits=spec.time_limits,
            state=JobState.RUNNING,
            created_at=utcnow(),
            stdin_bytes=len(request.stdin),
        )
        # The record becomes durable while the job launches, not after: the commit's
        # fsync is then off the launch path. A successor that finds it without a
        # start time takes that from the job's shim when it re-adopts the job.
        stored = asyncio.ensure_future(self._db(self._store.put, record))
        try:
            handle = await self._launcher.launch(valid)
        except BaseException as error:
            await self._forget(record, stored)
            raise _translate(error) from error
        try:
            await stored
        except BaseException:
            await handle.stop(grace=0)
            await self._forget(record, stored)
            raise
        record = replace(record, started_at=handle.started_at)
        self._track(record, handle)
        log.info("job %s started for %s: %s", job_id, owner, " ".join(spec.argv))
        return record

    def _prepare(self, spec: JobSpec, request: StartRequest) -> ValidSpec:
        """The job validated, with the user it runs as; its directories made (blocking).

        Nothing exists yet when a check fails; once the directories are being made,
        a failure removes them and gives a transient user back.
        """
        try:
            user = self._users.choose(request.user, anyone=request.by_admin)
            valid = spec.validate()  # before anything exists, the record included
            if spec.privileges.widened and not request.by_admin:
                raise OptionNotAllowed(
                    "privileges: only an admin may add capabilities (cap_add) or lift the "
                    "syscall filter (seccomp unconfined)"
                )
            spec.privileges.check_user(root=user is not None and user.is_root)
        except isolation.InvalidSpec as error:
            raise _translate(error) from error
        _check_free_space(self.config.state_dir, self.config.min_free_bytes + len(request.stdin))
        if user is None:
            user = self._transient.allocate(spec.job_id)
        try:
            spec.run_dir.mkdir(mode=0o700)
            if request.stdin:
                _write_stdin(RunDir(spec.run_dir).stdin, request.stdin)
            if not user.listed:
                home = Path(user.home)
                home.mkdir(mode=0o700)
                os.chown(home, user.uid, user.gid)
        except BaseException:
            self._clean_up_user(spec.job_id, user.uid)
            shutil.rmtree(spec.run_dir, ignore_errors=True)
            raise
        return valid.as_user(user)

    async def _forget(self, record: JobRecord, stored: asyncio.Future[None]) -> None:
        """Undo a start that failed: no record and no files are left of it."""
        self._quota.release(record.id)
        with contextlib.suppress(Exception):
            await stored  # the delete must come after the write
        await asyncio.to_thread(self._clean_up_user, record.id, record.uid)
        try:
            await self._remove(record.id)
        except StorageError as error:  # the start's own error is what the caller must see
            log.warning("job %s did not start, and its record stays: %s", record.id, error)

    def _clean_up_user(self, job_id: str, uid: int | None) -> None:
        """Remove a transient user's home and give its uid back (blocking).

        Only for a job whose cgroup is gone: nothing of it can still run as that uid.
        """
        if uid is None or uid not in self._transient.ids:
            return
        shutil.rmtree(self._transient.home_of(job_id), ignore_errors=True)
        self._transient.release(uid)

    async def _remove(self, job_id: str) -> None:
        """Delete a job's run directory, then its record.

        Files first: on a full disk, SQLite needs space even to delete a record, and
        removing the output frees it. Off the database thread, which would otherwise
        hold every record write behind deleting up to a whole output cap. A crash in
        between leaves a record whose output is gone, which retention removes when due.
        """
        rmtree = functools.partial(shutil.rmtree, self.jobs_dir / job_id, ignore_errors=True)
        await asyncio.to_thread(rmtree)
        self._quota.release(job_id)
        self._space_freed.set()  # records waiting for space may fit now
        self._unsaved.pop(job_id, None)
        await self._db(self._store.delete, job_id)

    async def stop(self, job_id: str, grace: float, by: str) -> JobRecord:
        """Stop a job and return its final record once it has ended.

        SIGTERM, then after ``grace`` seconds SIGKILL to everything left in the
        job. Stopping a job that has already ended changes nothing and returns its
        final record; concurrent stops are safe and return the same record.
        """
        if grace < 0:
            raise InvalidRequest("grace", "the grace period cannot be negative")
        if not by:
            raise InvalidRequest("by", "say who stops the job")
        active = self._active.get(job_id)
        if active is None or active.record.ended:
            return await self.get(job_id)
        if active.record.stopped_by is None:
            active.record = active.record.stop_requested(by)
            # Durable before acting: after a crash, the successor knows it was a stop.
            # On a full disk, stop all the same: the final record, retried until it is
            # stored, says who stopped the job.
            try:
                await self._db(self._store.put, active.record)
            except StorageError as error:
                log.warning("job %s: stopping it, though %s", job_id, error)
        await active.handle.stop(grace)
        await active.ended.wait()
        return active.record

    async def get(self, job_id: str) -> JobRecord:
        """The current record of a job."""
        active = self._active.get(job_id)
        if active is not None:
            return active.record
        if job_id in self._unsaved:
            return self._unsaved[job_id]
        record = await self._db(self._store.get, job_id)
        if record is None:
            raise JobNotFound(f"no job {job_id}")
        return record

    async def list_jobs(
        self,
        owner: str | None = None,
        *,
        include_ended: bool = True,
        page_size: int,
        page_token: str = "",
    ) -> JobPage:
        """A page of jobs, oldest first, optionally only one owner's (see ``pages``).

        ``page_token`` is the ``next_token`` of the page before; ``InvalidRequest`` for
        anything else.
        """
        if page_size < 1:
            raise InvalidRequest("page_size", "a page holds at least one job")
        after = Position.from_token(page_token) if page_token else None
        read_page = functools.partial(self._store.page, owner=owner, running_only=not include_ended)
        listed: list[JobRecord] = []
        while True:  # reads on only to make up for records left out, which are few
            stored = await self._db(read_page, after, page_size - len(listed))
            for record in map(self._current, stored.records):
                # A running record of no tracked job is a start still in flight (its record
                # is written while it launches): it is not listed until it has started.
                shown = include_ended if record.ended else record.id in self._active
                if shown:
                    listed.append(record)
            after = stored.last or after
            if not stored.more or len(listed) == page_size:
                break
        next_token = after.token() if stored.more and after is not None else ""
        return JobPage(tuple(listed), next_token)

    def _current(self, stored: JobRecord) -> JobRecord:
        """A job's record as it is now, which may be newer than the one stored."""
        active = self._active.get(stored.id)
        if active is not None:
            return active.record
        return self._unsaved.get(stored.id, stored)

    async def remove(self, job_id: str) -> None:
        """Remove an ended job's record and output now, before retention would."""
        active = self._active.get(job_id)
        if active is not None:
            if not active.record.ended:
                raise JobStillRunning(f"job {job_id} is running; stop it first")
            await active.ended.wait()  # its final record is being stored: after that
        await self.get(job_id)  # JobNotFound if there is no such job
        self._retention.forget(job_id)
        await self._remove(job_id)
        log.info("job %s removed on request", job_id)

    async def stream(
        self, job_id: str, offset: int = 0, *, follow: bool = True
    ) -> AsyncGenerator[OutputEvent, None]:
        """The job's output from ``offset``; with ``follow``, live until the job ends.

        Raises ``JobNotFound`` here, before any output, for an unknown job.
        """
        if offset < 0:
            raise InvalidRequest("offset", "the offset cannot be negative")
        active = self._active.get(job_id)
        if active is None:
            await self.get(job_id)
        ended = active.ended if active is not None else self._always_ended
        return read_output(
            self._run_dir(job_id).output_log,
            offset,
            follow=follow,
            watcher=self._watcher,
            ended=ended,
            closing=self._closing,
        )

    def running(self) -> int:
        """How many jobs are running now."""
        return len(self._active)

    async def close(self) -> None:
        """Shut down: stop the jobs if so configured, else leave them for the next start.

        Streams following a job that keeps running end here, without its end.
        """
        self._closing.set()
        self._retention.close()
        if self._saving is not None:
            self._saving.cancel()  # what is not stored yet, a successor learns from the shims
        self._watcher.wake_all()  # followers look at ``closing`` only when woken
        if self.config.stop_jobs_on_close:
            await asyncio.gather(
                *(
                    self.stop(job_id, self.config.shutdown_grace_seconds, SHUTDOWN_STOPPER)
                    for job_id in list(self._active)
                )
            )
        for task in list(self._watchers):
            task.cancel()
        for active in self._active.values():
            active.handle.detach()
        await self._launcher.close()
        self._watcher.close()
        await self._db(self._store.close)
        self._db_thread.shutdown()

    def _track(self, record: JobRecord, handle: RunningJob) -> None:
        active = _Active(record, handle)
        self._active[record.id] = active
        task = asyncio.create_task(self._watch(active), name=f"job-{record.id}")
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _watch(self, active: _Active) -> None:
        try:
            outcome = await active.handle.wait()
        except Exception as error:
            # Whatever broke, the job gets a final record: it must never stay "running".
            log.exception("job %s: watching its end failed", active.record.id)
            outcome = _unobserved(
                active.record,
                f"jobworker failed while the job ended ({error}); its exit status "
                "is unknown and anything left of it was killed",
            )
        # No await between reading and replacing the record: a concurrent stop()
        # then sees the final record and does not write over it.
        active.record = final = active.record.finished(outcome)
        try:
            await self._save_final(final)
        finally:
            del self._active[final.id]
            try:  # before anyone may remove the job: what its output holds from now on
                size = await asyncio.to_thread(_log_size, self._run_dir(final.id))
                self._quota.hold(final.id, size)
            finally:
                active.ended.set()
                self._watcher.wake(self._run_dir(final.id).output_log)  # followers look now
            if not active.handle.cgroup.path.exists():  # else its uid stays taken until a restart
                await asyncio.to_thread(self._clean_up_user, final.id, final.uid)
        log.info("job %s %s: %s", final.id, final.state.value, _describe_end(final))

    async def _save_final(self, record: JobRecord) -> None:
        """Store a job's final record; if the disk is full, keep retrying in the background.

        Meanwhile the record in memory is the job's: it has ended for everyone who
        asks, and it becomes durable once there is space again (a removal frees some,
        and wakes the retries at once).
        """
        try:
            await self._db(self._store.put, record)
        except StorageError as error:
            log.warning("job %s: its final record waits for space: %s", record.id, error)
            self._unsaved[record.id] = record
            if self._saving is None or self._saving.done():
                self._saving = asyncio.create_task(self._save_later(), name="save-records")
            return
        self._retention.schedule(record)

    async def _save_later(self) -> None:
        delay = _SAVE_RETRY_SECONDS
        while self._unsaved:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._space_freed.wait()
            self._space_freed.clear()
            delay = min(delay * 2, _SAVE_RETRY_MAX_SECONDS)
            for record in list(self._unsaved.values()):
                try:
                    await self._db(self._store.put, record)
                except StorageError:
                    break
                if self._unsaved.pop(record.id, None) is not None:
                    self._retention.schedule(record)
                    log.info("job %s: its final record is stored now", record.id)
                delay = _SAVE_RETRY_SECONDS

    async def _recover(self) -> None:
        """Take over what an earlier run left; one job's damage never stops the service."""
        for record in await self._db(self._store.running):
            await self._readopt(record)
        for group in self._launcher.leftover_groups():
            if group.name not in self._active:
                log.warning("killing job %s: it has no running record", group.name)
                try:
                    await self._launcher.discard(group, self.jobs_dir / group.name)
                except Exception:
                    log.exception("job %s: its leftovers could not be removed", group.name)
        for record in await self._db(self._store.records):
            if record.ended:
                self._quota.hold(record.id, _log_size(self._run_dir(record.id)))
                await self._retention.remove_or_schedule(record)
            elif record.id in self._active:  # its cap is what it may still write
                self._quota.hold(record.id, self.config.output_cap_bytes or 0)
            if record.uid is not None:
                self._transient.continue_after(record.uid)  # the newest record's comes last
        for run_dir in self.jobs_dir.iterdir():
            if await self._db(self._store.get, run_dir.name) is None:
                shutil.rmtree(run_dir, ignore_errors=True)
        for home in self._transient.home_root.iterdir():
            if home.name not in self._active:  # its job is over: give nothing of it to the next
                shutil.rmtree(home, ignore_errors=True)

    async def _readopt(self, record: JobRecord) -> None:
        """Track a job that was running when the service last stopped, or record its end."""
        if record.ended:  # a damaged record, read as lost: its cgroup is killed below
            await self._db(self._store.put, record)
            return
        try:
            adopted = self._launcher.adopt(record.id, self.jobs_dir / record.id)
        except Exception as error:  # its cgroup is killed with the jobs that have no record
            log.exception("job %s could not be re-adopted", record.id)
            adopted = _unobserved(
                record,
                f"the job could not be re-adopted after a restart of jobworker ({error}); its "
                "exit status is unknown and anything left of it was killed",
            )
        if isinstance(adopted, RunningJob):
            if record.uid is not None:
                self._transient.keep(record.uid)
            self._track(replace(record, started_at=adopted.started_at), adopted)
            log.info("job %s re-adopted", record.id)
            return
        final = record.finished(adopted)
        await self._db(self._store.put, final)
        log.info("job %s ended while the service was down: %s", record.id, final.state)

    async def _db(self, call: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db_thread, call, *args)


def _translate(error: BaseException) -> BaseException:
    """The runner's error for an isolation error; anything else unchanged."""
    match error:
        case isolation.ResourcesExhausted():
            return CapacityExhausted(str(error))
        case isolation.InvalidSpec():  # FAILED_PRECONDITION or INVALID_ARGUMENT, in the API
            unenforceable = isinstance(error, isolation.LimitUnenforceable)
            return (LimitUnenforceable if unenforceable else InvalidRequest)(
                error.field, error.reason
            )
        case isolation.LaunchError():
            return StartFailed(str(error), _start_failure(error))
        case isolation.HostUnsupported():
            return HostUnsupported(str(error))
        case isolation.IsolationError():
            return InternalError(str(error))
    return error


def _start_failure(error: isolation.LaunchError) -> StartFailure:
    for kind, reason in (
        (isolation.CommandNotFound, StartFailure.COMMAND_NOT_FOUND),
        (isolation.CommandNotExecutable, StartFailure.COMMAND_NOT_EXECUTABLE),
        (isolation.BadWorkingDirectory, StartFailure.BAD_WORKING_DIRECTORY),
    ):
        if isinstance(error, kind):
            return reason
    return StartFailure.SETUP_FAILED


def _unobserved(record: JobRecord, note: str) -> Outcome:
    """How a job ended when that could not be observed: exit status unknown, ``note`` why."""
    return Outcome(
        exit_code=None,
        signal=None,
        oom_killed=False,
        usage=Usage(),
        started_at=record.started_at or record.created_at,
        ended_at=utcnow(),
        note=note,
    )


def _limit_jobs(config: RunnerConfig, host: CgroupHost) -> LimitPolicy:
    """Limit all jobs together to leave the service a reserve; the policy for each job."""
    capacity = HostCapacity.read()
    host.limit_jobs(
        memory_bytes=config.jobs_memory_bytes or capacity.jobs_memory_bytes,
        pids=config.jobs_pids or capacity.jobs_tasks,
    )
    default_limits = config.default_limits
    if default_limits.pids is None:
        default_limits = replace(default_limits, pids=capacity.default_job_tasks)
    return LimitPolicy(default_limits, config.max_limits)


def _prepare_users(config: RunnerConfig) -> UserPolicy:
    """Resolve the configured users, check the transient range and its homes (blocking)."""
    policy = UserPolicy.resolve(config.default_user, config.allowed_users)
    first, last = config.transient_ids
    if not 0 < first <= last <= 2**32 - 2:
        raise InvalidConfiguration(f"transient user ids {first}-{last} are not a range of uids")
    IdRange(first, last).check_unused()
    _prepare_home_root(config.homes)
    return policy


def _prepare_home_root(root: Path) -> None:
    """Make the directory of transient users' homes, reachable by them and by nobody else.

    Mode 0711: a job may enter its own home inside, but not list the others. Every
    directory above must let others search it too, or no job could reach its home.
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
        info = root.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0:
            raise InvalidConfiguration(
                f"{root} must be a directory owned by root, to hold transient users' homes"
            )
        root.chmod(0o711)
    except OSError as error:
        raise InvalidConfiguration(
            f"cannot prepare {root} for transient users' homes: {error.strerror}"
        ) from None
    for directory in root.absolute().parents:
        if not directory.stat().st_mode & stat.S_IXOTH:
            raise InvalidConfiguration(
                f"jobs could not reach their home directories under {root}: {directory} is "
                "not searchable by other users; choose another place with --home-root"
            )


def _check_free_space(state_dir: Path, reserve: int) -> None:
    """Refuse new jobs while less than ``reserve`` bytes are free under the state directory."""
    stats = os.statvfs(state_dir)
    free = stats.f_bavail * stats.f_frsize
    if free < reserve:
        raise StorageFull(
            f"no new jobs while {free >> 20} MiB are free under {state_dir}, less than the "
            f"{reserve >> 20} MiB kept for records and running jobs; remove ended jobs "
            "(`jobworker rm`) or free space"
        )


def _write_stdin(path: Path, data: bytes) -> None:
    """The job's standard input on disk, readable by the service alone (blocking).

    Its shim opens it for the job, so the job needs no access to the run directory.
    """
    try:
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
            file.write(data)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull(f"no space for the job's standard input: {error.strerror}") from None
        raise StorageError(f"cannot store the job's standard input: {error.strerror}") from None


def _log_size(run_dir: RunDir) -> int:
    """Bytes a job's output log takes now; 0 if it has none."""
    try:
        return run_dir.output_log.stat().st_size
    except OSError:
        return 0


def _prepare_state_dir(state_dir: Path) -> None:
    """The state directory and its jobs folder, private to the service (mode 0700)."""
    try:
        (state_dir / "jobs").mkdir(parents=True, exist_ok=True, mode=0o700)
        state_dir.chmod(0o700)
        (state_dir / "jobs").chmod(0o700)
    except OSError as error:
        raise StorageError(
            f"cannot prepare the state directory {state_dir}: {error.strerror}"
        ) from None


def _describe_end(record: JobRecord) -> str:
    if record.signal is not None:
        return f"signal {record.signal}" + (" (OOM killer)" if record.oom_killed else "")
    if record.exit_code is not None:
        return f"exit code {record.exit_code}"
    return record.note or "unknown"


def _raise_open_file_limit() -> None:
    """Each running job holds two pidfds and each reader one file: lift our soft limit.

    Jobs keep the limit the service was started with (systemd's default soft limit
    is 1024, which is what programs expect): a soft limit of a million makes those
    that close every possible descriptor, or size a table by it, very slow.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
