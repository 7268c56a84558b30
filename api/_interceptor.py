"""Authentication, authorization and the error boundary, in one place for every call.

The TLS layer has already verified the client's certificate against our CA.
This interceptor reads the verified certificate from the call's auth context,
takes the user name, role and serial number from it, refuses it if the serial is
revoked, checks the method against the policy table, and makes the caller
available to the service through a context variable. It wraps unary and
streaming handlers alike, so no RPC can forget it, and it is the one place
where an exception from a handler (a stream's loop included) becomes a gRPC
status (see ``_status``): handlers just raise.

Revocation is checked here, on every call, rather than in the TLS handshake:
gRPC Python's server credentials take no revocation list (the C core's CRL
support is not exposed to Python), and a check at the handshake would let a
channel opened before the revocation go on working for as long as it stays open.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from grpc import aio

from jobworker.api._identity import Identity, read_identity, serial_text
from jobworker.api._policy import Caller
from jobworker.api._status import status_for
from jobworker.api.errors import CertificateError

_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("jobworker_caller")


def current_caller() -> Caller:
    """The authenticated caller of the RPC being served."""
    return _caller.get()


class AuthInterceptor(aio.ServerInterceptor):  # type: ignore[type-arg]
    """Refuses unauthenticated, revoked and unauthorized calls before any handler runs."""

    def __init__(self, revoked: frozenset[int] = frozenset()) -> None:
        self.revoked = revoked
        """Serial numbers of revoked client certificates; replaced whole when the list is
        reloaded, and looked up on every call, so a reload applies to the next call."""
        self._guarded: dict[str, grpc.RpcMethodHandler] = {}  # type: ignore[type-arg]
        """Guarded handlers by method, built once: rebuilding them per call showed in the
        start-latency profile."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],  # type: ignore[type-arg]
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:  # type: ignore[type-arg]
        method = handler_call_details.method
        guarded = self._guarded.get(method)
        if guarded is not None:
            return guarded
        # None for a method no service has; gRPC then answers UNIMPLEMENTED. Such
        # names come from clients, so only methods that exist are remembered.
        handler: grpc.RpcMethodHandler | None = await continuation(handler_call_details)  # type: ignore[type-arg]
        if handler is None:
            return handler  # type: ignore[return-value]
        guarded = self._guarded[method] = _guard(method, handler, self.authenticate)
        return guarded

    async def authenticate(self, method: str, context: aio.ServicerContext) -> Caller:  # type: ignore[type-arg]
        """The caller, or an aborted call: UNAUTHENTICATED or PERMISSION_DENIED."""
        pem = b"".join(context.auth_context().get("x509_pem_cert", ()))
        try:
            identity = _identity(pem)
        except CertificateError as error:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, f"client certificate refused: {error}"
            )
        if identity.serial in self.revoked:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"client certificate revoked (serial {serial_text(identity.serial)})",
            )
        caller = Caller(user=identity.user, role=identity.role)
        if not caller.may(method):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"role {identity.role.value} of {identity.user} may not call "
                f"{method.rsplit('/', 1)[-1]}",
            )
        _caller.set(caller)
        return caller


_Authenticate = Callable[[str, aio.ServicerContext], Awaitable[Caller]]  # type: ignore[type-arg]


def _guard(
    method: str,
    handler: grpc.RpcMethodHandler,  # type: ignore[type-arg]
    authenticate: _Authenticate,
) -> grpc.RpcMethodHandler:  # type: ignore[type-arg]
    """``handler`` with ``authenticate`` (and so the policy check) in front of it."""
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _guard_unary(method, handler.unary_unary, authenticate),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _guard_stream(method, handler.unary_stream, authenticate),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_stream is not None:  # server reflection
        return grpc.stream_stream_rpc_method_handler(
            _guard_stream(method, handler.stream_stream, authenticate),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return _refuse_all(method)


@functools.lru_cache(maxsize=1024)
def _identity(certificate_pem: bytes) -> Identity:
    """``read_identity``, remembered per certificate.

    A client presents the same certificate on every call, and parsing it each time
    showed in the start-latency profile. Refusals are exceptions, which
    are never cached; nor is revocation, which is checked against the serial on
    every call.
    """
    return read_identity(certificate_pem)


def _guard_unary(
    method: str, behavior: Callable[..., Any], authenticate: _Authenticate
) -> Callable[..., Any]:
    async def guarded(request: Any, context: aio.ServicerContext) -> Any:  # type: ignore[type-arg]
        await authenticate(method, context)
        try:
            return await behavior(request, context)
        except Exception as error:  # the boundary: every error becomes a status
            await _abort_with_status(context, error)

    return guarded


def _guard_stream(
    method: str, behavior: Callable[..., Any], authenticate: _Authenticate
) -> Callable[..., Any]:
    async def guarded(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:  # type: ignore[type-arg]
        await authenticate(method, context)
        try:
            async for response in behavior(request, context):
                yield response
        except Exception as error:  # the boundary, for the whole stream too
            await _abort_with_status(context, error)

    return guarded


async def _abort_with_status(context: aio.ServicerContext, error: Exception) -> NoReturn:  # type: ignore[type-arg]
    """End the call with the status ``error`` stands for; an abort already under way goes on.

    Without this, gRPC would answer anything unexpected with UNKNOWN and the
    exception's text (a path on the server, say) for the client to read.
    """
    if isinstance(error, aio.AbortError):
        raise error
    code, message = status_for(error)
    await context.abort(code, message)
    raise AssertionError("context.abort returned")  # it raises; this keeps mypy honest


def _refuse_all(method: str) -> grpc.RpcMethodHandler:  # type: ignore[type-arg]
    async def refuse(request: Any, context: aio.ServicerContext) -> Any:  # type: ignore[type-arg]
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{method} is not allowed")

    return grpc.stream_unary_rpc_method_handler(refuse)
