"""The client commands: ``run``, ``status``, ``logs``, ``stop``, ``rm`` and ``ls``.

Each takes the parsed arguments and returns the exit status; failures are raised as
``CliError`` (gRPC errors translated by ``_connection``). Standard output carries only
what a script wants (an id, the job's output, JSON); notes for people go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import grpc

from jobworker.api.pages import MAX_PAGE_SIZE
from jobworker.cli import _render as render
from jobworker.cli._connection import Connection, translate
from jobworker.cli._errors import EXIT_ERROR, EXIT_INTERRUPTED
from jobworker.cli._request import start_request
from jobworker.cli._streaming import copy_output
from jobworker.runner import defaults as runner_defaults
from jobworker.v1 import jobworker_pb2 as pb
from jobworker.v1 import jobworker_pb2_grpc as pb_grpc

CALL_TIMEOUT = 120.0
"""Seconds a unary call may take (a start in a slow VM takes a few); stop adds its grace."""
SIGNAL_EXIT_BASE = 128
"""``run --follow`` exits with 128 + N when signal N ended the job, as shells report it."""
TIMEOUT_EXIT = 124
"""``run --follow`` exits with this when the job's timeout ended it, as timeout(1) does."""
CPU_TIME_EXIT = SIGNAL_EXIT_BASE + signal.SIGXCPU
"""... and with 152 (128 + SIGXCPU, RLIMIT_CPU's signal) when its CPU time ran out."""


def connection(args: argparse.Namespace) -> Connection:
    """The connection the client flags, environment and defaults ask for."""
    return Connection.resolve(
        server=args.server,
        tls_dir=args.tls_dir,
        cert=args.cert,
        key=args.key,
        ca=args.ca,
        environ=os.environ,
    )


@contextmanager
def session(args: argparse.Namespace) -> Iterator[pb_grpc.JobServiceStub]:
    """A stub for the calls of one command; any gRPC error becomes a one-line CliError."""
    target = connection(args)
    try:
        with target.stub() as stub:
            yield stub
    except grpc.RpcError as error:
        raise translate(error, target.server) from None


def run(args: argparse.Namespace) -> int:
    """Start a job; print its id, or with --follow stream it and exit as it did."""
    request = start_request(args)
    with session(args) as stub:
        job: pb.Job = stub.StartJob(request, timeout=CALL_TIMEOUT)
        if not args.follow:
            print(job.id, flush=True)
            return 0
        print(f"jobworker: started job {job.id}", file=sys.stderr, flush=True)
        if not _follow(stub, job.id):
            return EXIT_INTERRUPTED
        return exit_status(stub.GetJob(pb.GetJobRequest(id=job.id), timeout=CALL_TIMEOUT))


def exit_status(job: pb.Job) -> int:
    """What ``run --follow`` exits with, saying on stderr how the job ended if not by exit."""
    if job.timed_out or job.cpu_time_exceeded:
        print(f"jobworker: job {job.id} {render.ending(job)}", file=sys.stderr)
        return TIMEOUT_EXIT if job.timed_out else CPU_TIME_EXIT
    if job.oom_killed:
        print(f"jobworker: job {job.id} was killed by the OOM killer", file=sys.stderr)
    if job.HasField("signal"):
        if not job.oom_killed:
            print(f"jobworker: job {job.id} {render.ending(job)}", file=sys.stderr)
        return SIGNAL_EXIT_BASE + job.signal
    if job.HasField("exit_code"):
        return job.exit_code
    print(f"jobworker: job {job.id} {render.ending(job)}", file=sys.stderr)
    return EXIT_ERROR


def status(args: argparse.Namespace) -> int:
    """Show one job."""
    with session(args) as stub:
        job = stub.GetJob(pb.GetJobRequest(id=args.id), timeout=CALL_TIMEOUT)
    if args.json:
        print(json.dumps(render.job_json(job), indent=2))
    else:
        sys.stdout.write(render.status_text(job))
    return 0


def logs(args: argparse.Namespace) -> int:
    """Copy a job's output from its first byte; with --follow, until it ends."""
    with session(args) as stub:
        if args.follow:
            return 0 if _follow(stub, args.id) else EXIT_INTERRUPTED
        responses = stub.StreamJobOutput(pb.StreamJobOutputRequest(id=args.id, follow=False))
        copy_output(responses, sys.stdout.buffer, sys.stderr.buffer)
    return 0


def stop(args: argparse.Namespace) -> int:
    """Stop a job and wait until it has ended; print how it ended."""
    request = pb.StopJobRequest(id=args.id)
    if args.grace is not None:
        request.grace_period.FromNanoseconds(round(args.grace * 1e9))
    with session(args) as stub:
        grace = runner_defaults.STOP_GRACE_SECONDS if args.grace is None else args.grace
        job = stub.StopJob(request, timeout=CALL_TIMEOUT + grace)
    print(f"{job.id}: {render.ending(job)}")
    return 0


def rm(args: argparse.Namespace) -> int:
    """Remove an ended job; silent on success, as rm is."""
    with session(args) as stub:
        stub.RemoveJob(pb.RemoveJobRequest(id=args.id), timeout=CALL_TIMEOUT)
    return 0


def ls(args: argparse.Namespace) -> int:
    """List running jobs (with --all, ended ones too), oldest first."""
    jobs: list[pb.Job] = []
    with session(args) as stub:
        token = ""
        while True:
            request = pb.ListJobsRequest(
                include_ended=args.all, page_size=MAX_PAGE_SIZE, page_token=token
            )
            page = stub.ListJobs(request, timeout=CALL_TIMEOUT)
            jobs.extend(page.jobs)
            token = page.next_page_token
            if not token:
                break
    if args.json:
        print(json.dumps([render.job_json(job) for job in jobs], indent=2))
    else:
        sys.stdout.write(render.table(jobs, datetime.now(UTC)))
    return 0


def _follow(stub: pb_grpc.JobServiceStub, job_id: str) -> bool:
    """Stream the job's output live until it ends; False if Ctrl-C detached first.

    Detaching only ends this stream (the caller's channel closes with the session):
    the job keeps running on the server.
    """
    responses = stub.StreamJobOutput(pb.StreamJobOutputRequest(id=job_id, follow=True))
    try:
        copy_output(responses, sys.stdout.buffer, sys.stderr.buffer)
    except KeyboardInterrupt:
        print(
            f"\njobworker: detached; job {job_id} keeps running "
            f"(`jobworker stop {job_id}` stops it)",
            file=sys.stderr,
        )
        return False
    return True
