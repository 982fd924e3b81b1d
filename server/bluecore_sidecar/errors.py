"""The sidecar's own exceptions, and the one place that turns them into gRPC errors.

It imports no gRPC library: ``config`` and the CLI use it without loading a server. A
``RequestError``'s ``code`` is an :class:`RpcCode`, with the names and values of
``grpc.StatusCode``; only :func:`to_rpc_status` loads ``grpc_status``, when it is called.

Per-event outcomes are never exceptions: they are ``DeliveryResult`` data. Exceptions are
for configuration mistakes and for requests that are unusable as a whole::

    SidecarError
    ├── ConfigError            a setting is missing or malformed (start-up stops, exit 2)
    ├── RequestError           an RPC request as a whole is unusable
    │   ├── InvalidRequest        -> INVALID_ARGUMENT (no event, bad batch, undecodable bytes)
    │   ├── Overloaded            -> RESOURCE_EXHAUSTED (too many calls in flight; retry later)
    │   ├── Unavailable           -> UNAVAILABLE (shutting down)
    │   └── InternalError         -> INTERNAL (a bug below the edge; logged, never described)
    └── UpstreamError          one HTTP attempt against Bluecore failed (wraps aiohttp errors)
        ├── UpstreamTimeout       the attempt's timeout elapsed
        └── UpstreamConnectionError  connecting, sending or reading failed
"""

from __future__ import annotations

import enum
from datetime import timedelta
from typing import TYPE_CHECKING

from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

if TYPE_CHECKING:
    import grpc

#: The ``ErrorInfo.domain`` of every error this sidecar raises (AIP-193).
ERROR_DOMAIN = "bluecore-sidecar.datafly.dev"


class RpcCode(enum.Enum):
    """The gRPC status codes, named and valued as ``grpc.StatusCode`` (``(number, text)``),
    so ``code.name`` and ``code.value[0]`` read the same without importing grpc."""

    OK = (0, "ok")
    CANCELLED = (1, "cancelled")
    UNKNOWN = (2, "unknown")
    INVALID_ARGUMENT = (3, "invalid argument")
    DEADLINE_EXCEEDED = (4, "deadline exceeded")
    NOT_FOUND = (5, "not found")
    ALREADY_EXISTS = (6, "already exists")
    PERMISSION_DENIED = (7, "permission denied")
    RESOURCE_EXHAUSTED = (8, "resource exhausted")
    FAILED_PRECONDITION = (9, "failed precondition")
    ABORTED = (10, "aborted")
    OUT_OF_RANGE = (11, "out of range")
    UNIMPLEMENTED = (12, "unimplemented")
    INTERNAL = (13, "internal")
    UNAVAILABLE = (14, "unavailable")
    DATA_LOSS = (15, "data loss")
    UNAUTHENTICATED = (16, "unauthenticated")


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

    code = RpcCode.UNKNOWN

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

    code = RpcCode.INVALID_ARGUMENT


class Overloaded(RequestError):
    """Too many calls are in flight; the caller should retry after ``retry_delay``."""

    code = RpcCode.RESOURCE_EXHAUSTED


class Unavailable(RequestError):
    """The sidecar cannot take work now, e.g. while draining (UNAVAILABLE)."""

    code = RpcCode.UNAVAILABLE


class InternalError(RequestError):
    """Something unexpected failed while serving the call (INTERNAL)."""

    code = RpcCode.INTERNAL


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
    status = status_pb2.Status(code=error.code.value[0], message=error.message, details=details)
    # Here, not at the top: only the serving edge calls this, and it has grpc loaded anyway.
    from grpc_status import rpc_status  # noqa: PLC0415

    return rpc_status.to_status(status)
