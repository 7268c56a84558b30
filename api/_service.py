"""The JobService: each RPC is a thin translation of a runner call.

The caller comes from the authentication interceptor, which is also where every
error raised here becomes a status (``_interceptor``, ``_status``): the methods
just raise. A job another user owns is reported exactly like a job that does
not exist, unless the caller is an admin, so existence does not leak.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

from grpc import aio

from jobworker.api import _convert as convert
from jobworker.api._interceptor import current_caller
from jobworker.api.pages import page_size
from jobworker.api.streams import StreamSlots
from jobworker.runner.errors import JobNotFound
from jobworker.runner.records import JobRecord
from jobworker.runner.runner import Runner
from jobworker.v1 import jobworker_pb2 as pb
from jobworker.v1 import jobworker_pb2_grpc as pb_grpc

Context: TypeAlias = "aio.ServicerContext[Any, Any]"


class JobService(pb_grpc.JobServiceServicer):
    """Serves the jobworker.v1.JobService API on top of one runner."""

    def __init__(self, runner: Runner, streams: StreamSlots) -> None:
        self._runner = runner
        self._streams = streams

    async def StartJob(self, request: pb.StartJobRequest, context: Context) -> pb.Job:  # noqa: N802
        caller = current_caller()
        start = convert.start_request(request, by_admin=caller.is_admin)
        return convert.job(await self._runner.start(start, owner=caller.user))

    async def StopJob(self, request: pb.StopJobRequest, context: Context) -> pb.Job:  # noqa: N802
        record = await self._visible(request.id)
        grace = convert.grace_seconds(request)
        return convert.job(await self._runner.stop(record.id, grace, by=current_caller().user))

    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.Job:  # noqa: N802
        return convert.job(await self._visible(request.id))

    async def ListJobs(  # noqa: N802
        self, request: pb.ListJobsRequest, context: Context
    ) -> pb.ListJobsResponse:
        page = await self._runner.list_jobs(
            current_caller().owner_filter,
            include_ended=request.include_ended,
            page_size=page_size(request.page_size),
            page_token=request.page_token,
        )
        return pb.ListJobsResponse(
            jobs=[convert.job(r) for r in page.records], next_page_token=page.next_token
        )

    async def StreamJobOutput(  # noqa: N802
        self, request: pb.StreamJobOutputRequest, context: Context
    ) -> AsyncIterator[pb.StreamJobOutputResponse]:
        with self._streams.hold(current_caller().user):
            record = await self._visible(request.id)
            events = await self._runner.stream(record.id, request.offset, follow=request.follow)
            async with contextlib.aclosing(events):  # the reader goes as soon as the client does
                async for event in events:
                    yield convert.output_event(event)

    async def RemoveJob(  # noqa: N802
        self, request: pb.RemoveJobRequest, context: Context
    ) -> pb.RemoveJobResponse:
        record = await self._visible(request.id)
        await self._runner.remove(record.id)
        return pb.RemoveJobResponse()

    async def _visible(self, raw_id: str) -> JobRecord:
        """The job's record if the caller may see it; otherwise exactly like a missing job."""
        job_id = convert.job_id(raw_id)
        record = await self._runner.get(job_id)
        if not current_caller().sees(record.owner):
            raise JobNotFound(f"no job {job_id}")
        return record
