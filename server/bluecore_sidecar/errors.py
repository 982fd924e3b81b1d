"""The sidecar's own exceptions, and the one place that turns them into gRPC errors.

It imports no gRPC library at module level: ``config`` and the CLI use it without loading a
server. Each ``RequestError`` class names its status (``code_name``); reading ``code`` gives
the ``grpc.StatusCode``, and :func:`to_rpc_status` loads ``grpc_status``, both when used.

Per-event outcomes are never exceptions: they are ``DeliveryResult`` data. Exceptions are
for configuration mistakes and for requests that are unusable as a whole::

    SidecarError
    ├── ConfigError            a setting is missing or malformed (start-up stops, exit 2)
    ├── RequestError           an RPC request as a whole is unusable
    │   ├── InvalidRequest        -> INVALID_ARGUMENT (no event, bad batch, undecodable bytes)
    │   ├── Overloaded            -> RESOURCE_EXHAUSTED (too many calls in flight; retry later)
    │   ├── TooLarge              -> RESOURCE_EXHAUSTED (an HTTP body over the door's limit)
    │   ├── Forbidden             -> PERMISSION_DENIED (the HTTP door refuses browser requests)
    │   ├── Unsupported           -> UNIMPLEMENTED (an HTTP content encoding the door lacks)
    │   ├── DeadlineExceeded      -> DEADLINE_EXCEEDED (an HTTP call's own timeout ran out)
    │   ├── Unavailable           -> UNAVAILABLE (shutting down)
    │   ├── FailedPrecondition    -> FAILED_PRECONDITION (dead-letter admin without a queue)
    │   ├── NotFound              -> NOT_FOUND (no dead letter with that id)
    │   └── InternalError         -> INTERNAL (a bug below the edge; logged, never described)
    └── UpstreamError          one HTTP attempt against Bluecore failed (wraps aiohttp errors)
        ├── UpstreamTimeout       the attempt's timeout elapsed
        └── UpstreamConnectionError  connecting, sending or reading failed
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

if TYPE_CHECKING:
    import grpc

#: The ``ErrorInfo.domain`` of every error this sidecar raises (AIP-193).
ERROR_DOMAIN = "bluecore-sidecar.datafly.dev"


class _GrpcCode:
    """``RequestError.code``: the ``grpc.StatusCode`` that the class's ``code_name`` names,
    imported when first read (by the serving edge, which has grpc loaded anyway)."""

    def __get__(self, instance: object, owner: type[RequestError]) -> grpc.StatusCode:
        import grpc  # noqa: PLC0415 - so that config, which imports this module, loads no grpc

        return grpc.StatusCode[owner.code_name]


class SidecarError(Exception):
    """Base of every exception the sidecar raises on purpose."""


class ConfigError(SidecarError):
    """A setting is missing or malformed; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable} {problem}")
        self.variable = variable


class RequestError(SidecarError):
    """A whole RPC request is unusable. ``reason`` is an UPPER_SNAKE ``ErrorInfo.reason``.

    ``message`` reaches the caller: it never names a Python type, a token or an email.
    """

    #: The name of the ``grpc.StatusCode`` the error ends a call with; ``code`` is that code.
    code_name = "UNKNOWN"
    code = _GrpcCode()

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        retry_delay: timedelta | None = None,
        **metadata: str,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_delay = retry_delay
        self.metadata = metadata


class InvalidRequest(RequestError):
    """The request is malformed (INVALID_ARGUMENT)."""

    code_name = "INVALID_ARGUMENT"


class Overloaded(RequestError):
    """Too many calls are in flight; the caller should retry after ``retry_delay``."""

    code_name = "RESOURCE_EXHAUSTED"


class TooLarge(RequestError):
    """The request body is larger than the door takes (RESOURCE_EXHAUSTED, as gRPC's limit)."""

    code_name = "RESOURCE_EXHAUSTED"


class Forbidden(RequestError):
    """The caller may not use this door (PERMISSION_DENIED)."""

    code_name = "PERMISSION_DENIED"


class Unsupported(RequestError):
    """The request uses a protocol feature the door does not implement (UNIMPLEMENTED)."""

    code_name = "UNIMPLEMENTED"


class DeadlineExceeded(RequestError):
    """The caller's own timeout ran out before the answer was ready (DEADLINE_EXCEEDED)."""

    code_name = "DEADLINE_EXCEEDED"


class Unavailable(RequestError):
    """The sidecar cannot take work now, e.g. while draining (UNAVAILABLE)."""

    code_name = "UNAVAILABLE"


class FailedPrecondition(RequestError):
    """The sidecar is not set up for the request, e.g. no durable queue (FAILED_PRECONDITION)."""

    code_name = "FAILED_PRECONDITION"


class NotFound(RequestError):
    """The named thing does not exist (NOT_FOUND)."""

    code_name = "NOT_FOUND"


class InternalError(RequestError):
    """Something unexpected failed while serving the call (INTERNAL)."""

    code_name = "INTERNAL"


class UpstreamError(SidecarError):
    """One HTTP attempt against Bluecore failed without an HTTP answer."""

    reason = "UPSTREAM_ERROR"


class UpstreamTimeout(UpstreamError):
    """The attempt's timeout elapsed before Bluecore answered."""

    reason = "UPSTREAM_TIMEOUT"


class UpstreamConnectionError(UpstreamError):
    """Connecting to Bluecore, sending the body or reading the answer failed."""

    reason = "UPSTREAM_CONNECTION_ERROR"


def to_rpc_status(error: RequestError) -> grpc.Status:
    """The grpc status that ends a call refused with ``error`` (see :func:`to_status`)."""
    # Here, not at the top: only the serving edge calls this, and it has grpc loaded anyway.
    from grpc_status import rpc_status  # noqa: PLC0415

    return rpc_status.to_status(to_status(error))


def to_status(error: RequestError) -> status_pb2.Status:
    """Build the ``google.rpc.Status`` for ``error``: an ``ErrorInfo``, and a ``RetryInfo``
    when the error says when to come back (the delay is in the ErrorInfo metadata too, as
    ``retryDelay``, for callers that read only one detail)."""
    metadata = dict(error.metadata)
    details: list[any_pb2.Any] = []
    retry: error_details_pb2.RetryInfo | None = None
    if error.retry_delay is not None:
        delay = duration_pb2.Duration()
        delay.FromTimedelta(error.retry_delay)
        metadata["retryDelay"] = delay.ToJsonString()
        retry = error_details_pb2.RetryInfo(retry_delay=delay)
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata)
    for detail in (info, retry):
        if detail is not None:
            packed = any_pb2.Any()
            packed.Pack(detail)
            details.append(packed)
    return status_pb2.Status(code=error.code.value[0], message=error.message, details=details)
