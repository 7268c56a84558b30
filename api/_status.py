"""The one place where errors become gRPC status codes: the runner's, and the API's own.

The API's own is ``TooManyStreams``; an error not listed here is a bug. Clients get
a standard code and a specific message; internal errors are logged in full and
answered with a generic message, never a traceback.
"""

from __future__ import annotations

import logging

import grpc

from jobworker.api.errors import TooManyStreams
from jobworker.runner import errors

log = logging.getLogger("jobworker.api")

_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (TooManyStreams, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.JobNotFound, grpc.StatusCode.NOT_FOUND),
    (errors.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.UserNotAllowed, grpc.StatusCode.PERMISSION_DENIED),
    (errors.PrivilegesNotAllowed, grpc.StatusCode.PERMISSION_DENIED),
    (errors.LimitUnenforceable, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.StartFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.HostUnsupported, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.JobStillRunning, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.CapacityExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.StorageFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    # Records that cannot be written now are retried; the caller may retry too.
    (errors.StorageError, grpc.StatusCode.UNAVAILABLE),
)


def status_for(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client gets for ``error``.

    Anything not in ``_CODES`` (the runner's ``InternalError`` among them) is a bug: it
    is logged in full, with its cause, and the client only learns that something went
    wrong inside.
    """
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code, str(error)
    log.error("internal error: %s", error, exc_info=error)
    return grpc.StatusCode.INTERNAL, "internal error in the jobworker service; see its log"
