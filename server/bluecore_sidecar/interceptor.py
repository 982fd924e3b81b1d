"""The edge every call passes through: :class:`Edge`, and its gRPC adapter.

:class:`Edge` is the part that does not depend on the wire: the SERVER span (continuing the
caller's W3C ``traceparent``), admission control, safe decoding of request bytes, and turning
whatever went wrong into one :class:`RequestError`, counted and marked on the span. The gRPC
server interceptor and the HTTP door (:mod:`.http_door`) both use it, so a call is traced,
admitted and refused the same way whichever door it came in by.

:class:`EdgeInterceptor` adapts it to grpc.aio: for each method of the delivery service it
wraps the handler in the span and admission and answers a refusal with a ``google.rpc.Status``
carrying an ``ErrorInfo``. For every method, health and reflection included, it also decodes
the requests itself, so bytes that are not a valid message become ``INVALID_ARGUMENT`` rather
than grpc's ``UNKNOWN`` "Unexpected <class ...>" (grpc.aio treats any exception from a
deserializer that way).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message import DecodeError, Message
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .errors import (
    InternalError,
    InvalidRequest,
    Overloaded,
    RequestError,
    Unavailable,
    to_rpc_status,
)
from .telemetry import LOGGER_NAME, Metrics

if TYPE_CHECKING:
    from prometheus_client import Counter

_W3C = TraceContextTextMapPropagator()
_SERVER = trace.SpanKind.SERVER
log = logging.getLogger(LOGGER_NAME)

#: What upb says when a message nests deeper than its limit of 100 levels; a ``Struct`` costs
#: three levels per JSON object (Struct, map entry, Value), so about 33 objects deep.
_TOO_DEEP_HINT = "MaxDepth"
_BAD_UTF8_HINT = "UTF-8"


class Admission:
    """Bounds the calls being served, and refuses everything once draining has begun."""

    def __init__(self, limit: int, retry_delay: timedelta) -> None:
        self.limit = limit
        self.retry_delay = retry_delay
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def admit(self, *, bounded: bool) -> Iterator[None]:
        """Hold a slot for one call (``bounded``) or only check that the sidecar is serving.

        Raises :class:`Unavailable` while draining and :class:`Overloaded` when ``limit``
        calls are already in flight: answering at once beats queueing a call past its deadline.
        """
        if self.draining:
            raise Unavailable("SHUTTING_DOWN", "the sidecar is shutting down; send to another")
        if bounded and self.in_flight >= self.limit:
            raise Overloaded(
                "OVERLOADED",
                f"the sidecar is serving its limit of {self.limit} calls; retry after "
                f"{self.retry_delay.total_seconds():g}s",
                retry_delay=self.retry_delay,
                limit=str(self.limit),
            )
        if bounded:
            self.in_flight += 1
            self._idle.clear()
        try:
            yield
        finally:
            if bounded:
                self.in_flight -= 1
                if not self.in_flight:
                    self._idle.set()

    async def busy_after(self, timeout: float) -> int:
        """How many calls are still in flight ``timeout`` seconds from now (0 once idle)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return self.in_flight
        return 0


class Edge:
    """Spans, admission and refusals for the calls of one service, whatever the wire."""

    def __init__(
        self, service: str, admission: Admission, metrics: Metrics, tracer: trace.Tracer
    ) -> None:
        self.service = service
        self.admission = admission
        self._metrics = metrics
        self._tracer = tracer
        # With tracing off no SERVER span is started at all, not even a no-op one.
        self._tracing = not isinstance(tracer, trace.NoOpTracer)
        # One counter child per method name, looked up once (the names are the service's).
        self._admitted_counters: dict[str, Counter] = {}

    @contextlib.contextmanager
    def call(
        self, name: str, carrier: Mapping[str, str], attributes: Mapping[str, str]
    ) -> Iterator[trace.Span]:
        """The SERVER span ``name`` of one call, continuing the trace context in ``carrier``.

        ``carrier`` holds the call's metadata or HTTP headers, keys in lower case. Only W3C
        trace context is read: the caller's baggage could carry anything, and what is in the
        context is injected into the requests to Bluecore. ``attributes`` are set only on a
        span that records.

        With tracing off no span is made, not even a no-op one: only a caller's
        ``traceparent`` is made current, so results and log lines still name the caller's
        trace. A call the sampler drops gets a span that only carries the trace id (made
        current, so the results name it); ending it does nothing.
        """
        caller = _W3C.extract(carrier) if "traceparent" in carrier else None
        if not self._tracing:
            token = otel_context.attach(caller) if caller is not None else None
            try:
                yield trace.get_current_span()
            finally:
                if token is not None:
                    otel_context.detach(token)
            return
        # The attributes go in at the start, in one piece: the SDK keeps them only when the
        # sampler records the span. The span is made current by hand, in one attach, rather
        # than through trace.use_span's generator (the adapter sets the status of a refusal).
        span = self._tracer.start_span(name, caller, _SERVER, attributes)
        token = otel_context.attach(trace.set_span_in_context(span, caller))
        try:
            yield span
        finally:
            otel_context.detach(token)
            span.end()

    @contextlib.contextmanager
    def admitted(self, method: str, *, bounded: bool) -> Iterator[None]:
        """Hold an admission slot for one call of ``method`` (see :meth:`Admission.admit`)."""
        with self.admission.admit(bounded=bounded):
            if bounded:
                counter = self._admitted_counters.get(method)
                if counter is None:
                    counter = self._metrics.calls_admitted.labels(method=method)
                    self._admitted_counters[method] = counter
                counter.inc()
            yield

    def refusal(self, method: str, error: Exception, span: trace.Span) -> RequestError:
        """The :class:`RequestError` to answer ``error`` with, counted and marked on ``span``.

        Anything that is not a :class:`RequestError` is a bug: logged by type and answered
        INTERNAL without details (its text could carry data).
        """
        if not isinstance(error, RequestError):
            log.error(
                "unexpected error serving a call",
                extra={"fields": {"method": method, "error_type": type(error).__name__}},
            )
            span.set_attribute("error.type", type(error).__name__)
            error = InternalError("INTERNAL_ERROR", "the sidecar failed unexpectedly; it is logged")
        self._metrics.calls_refused.labels(
            method=method, code=error.code.name, reason=error.reason
        ).inc()
        span.set_status(trace.StatusCode.ERROR, error.reason)
        return error


def decode_request(message_type: type[Message], data: bytes) -> Message:
    """``data`` parsed as ``message_type``; :class:`InvalidRequest` when it does not decode."""
    try:
        return message_type.FromString(data)
    except DecodeError as error:
        raise _decode_problem(str(error), message_type.DESCRIPTOR.full_name) from None


@dataclasses.dataclass(frozen=True, slots=True)
class _Undecodable:
    """Stands in for a request whose bytes did not decode; the handler refuses it."""

    error: InvalidRequest


@dataclasses.dataclass(frozen=True, slots=True)
class _Method:
    """What the interceptor knows about one RPC method."""

    path: str  # "/package.Service/Method"
    service: str
    name: str
    traced: bool  # a SERVER span, admission, and request errors as statuses
    bounded: bool  # counts against the admission limit
    span_name: str = ""  # "package.Service/Method"
    span_attributes: Mapping[str, str] = dataclasses.field(default_factory=dict)


class EdgeInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Spans, admission and error statuses for ``service``; safe decoding for everything."""

    def __init__(
        self,
        service: str,
        admission: Admission,
        metrics: Metrics,
        tracer: trace.Tracer,
        *,
        unbounded: frozenset[str] = frozenset(),
    ) -> None:
        self.edge = Edge(service, admission, metrics, tracer)
        self._unbounded = unbounded
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Wrap the method's handler (built once per method, then reused)."""
        path: str = handler_call_details.method
        wrapped = self._handlers.get(path)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None or (
                handler.request_streaming
                and not (
                    handler.response_streaming and inspect.isasyncgenfunction(handler.stream_stream)
                )
            ):
                # Unknown methods stay UNIMPLEMENTED; there is no other streamed kind to wrap.
                return handler
            service, _, name = path.lstrip("/").partition("/")
            traced = service == self.edge.service
            method = _Method(
                path,
                service,
                name,
                traced,
                traced and name not in self._unbounded,
                span_name=f"{service}/{name}",
                span_attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
            )
            wrapped = self._wrap(method, handler)
            self._handlers[path] = wrapped
        return wrapped

    def _wrap(self, method: _Method, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        deserializer = _tolerant(method, handler.request_deserializer)
        if handler.request_streaming:
            # Reflection: each undecodable message in the stream ends the call with a status.
            bidi = handler.stream_stream

            async def both(
                requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                with self._rpc(method, context) as span:
                    try:
                        async for response in bidi(_checked(requests), context):
                            yield response
                    except Exception as error:  # noqa: BLE001 - every failure becomes a status
                        await self._refuse(method, error, context, span)

            return grpc.stream_stream_rpc_method_handler(
                both,
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if not handler.response_streaming:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                with self._rpc(method, context) as span:
                    try:
                        with self._admitted(method, request):
                            return await inner(request, context)
                    except Exception as error:  # noqa: BLE001 - every failure becomes a status
                        await self._refuse(method, error, context, span)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )

        stream = handler.unary_stream
        if inspect.isasyncgenfunction(stream):

            async def streaming(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                with self._rpc(method, context) as span:
                    try:
                        with self._admitted(method, request):
                            async for response in stream(request, context):
                                yield response
                    except Exception as error:  # noqa: BLE001 - every failure becomes a status
                        await self._refuse(method, error, context, span)

            behaviour: Callable[..., Any] = streaming
        else:
            # A handler that writes with ``context.write`` (grpc's health Watch) stays a
            # coroutine: grpc.aio tells the two kinds apart by their function type.
            async def writing(request: Any, context: grpc.aio.ServicerContext) -> None:
                with self._rpc(method, context) as span:
                    try:
                        with self._admitted(method, request):
                            await stream(request, context)
                    except Exception as error:  # noqa: BLE001 - every failure becomes a status
                        await self._refuse(method, error, context, span)

            behaviour = writing
        return grpc.unary_stream_rpc_method_handler(
            behaviour,
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )

    @contextlib.contextmanager
    def _admitted(self, method: _Method, request: Any) -> Iterator[None]:
        if isinstance(request, _Undecodable):
            raise request.error
        if not method.traced:
            yield
            return
        with self.edge.admitted(method.name, bounded=method.bounded):
            yield

    @contextlib.contextmanager
    def _rpc(self, method: _Method, context: grpc.aio.ServicerContext) -> Iterator[trace.Span]:
        """The SERVER span of one traced RPC, continuing the caller's W3C trace context."""
        if not method.traced:
            yield trace.INVALID_SPAN
            return
        carrier = _trace_headers(context.invocation_metadata())
        with self.edge.call(method.span_name, carrier, method.span_attributes) as span:
            yield span

    async def _refuse(
        self,
        method: _Method,
        error: Exception,
        context: grpc.aio.ServicerContext,
        span: trace.Span,
    ) -> NoReturn:
        """Count ``error``, mark the span and end the RPC with its status (always raises).

        A handler's own ``context.abort`` passes through unchanged. Anything else that is not
        a :class:`RequestError` is answered INTERNAL (grpc would answer UNKNOWN naming the
        Python type).
        """
        if isinstance(error, grpc.aio.AbortError):
            raise error
        refusal = self.edge.refusal(method.name, error, span)
        span.set_attribute("rpc.grpc.status_code", refusal.code.value[0])
        await context.abort_with_status(to_rpc_status(refusal))
        raise AssertionError("abort_with_status returned")  # pragma: no cover - it raises


def _trace_headers(metadata: Any) -> dict[str, str]:
    """The caller's ``traceparent`` and ``tracestate`` (all :meth:`Edge.call` reads)."""
    return {
        key: value for key, value in metadata or () if key in _W3C_KEYS and isinstance(value, str)
    }


_W3C_KEYS = frozenset(_W3C.fields)


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """``requests``, raising the decoding error in place of an undecodable one."""
    async for request in requests:
        if isinstance(request, _Undecodable):
            raise request.error
        yield request


def _tolerant(
    method: _Method, deserializer: Callable[[bytes], Any] | None
) -> Callable[[bytes], Any] | None:
    """``deserializer``, except that undecodable bytes yield an :class:`_Undecodable`."""
    if deserializer is None:
        return None
    expected = _request_type(method)

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as error:
            return _Undecodable(_decode_problem(str(error), expected))

    return deserialize


def _decode_problem(text: str, expected: str) -> InvalidRequest:
    # upb's message names the problem; it is summarised, never echoed (it names types).
    if _TOO_DEEP_HINT in text:
        return InvalidRequest(
            "TOO_DEEP",
            f"the request is not a valid {expected}: it nests messages deeper than the "
            "protobuf limit of 100 levels (a Struct holds at most 33 levels of JSON objects)",
        )
    problem = (
        "a string field holds invalid UTF-8"
        if _BAD_UTF8_HINT in text
        else "the bytes are truncated or not protobuf"
    )
    return InvalidRequest("MALFORMED_REQUEST", f"the request is not a valid {expected}: {problem}")


def _request_type(method: _Method) -> str:
    """The protobuf name of ``method``'s request message, for error messages."""
    try:
        found = descriptor_pool.Default().FindMethodByName(f"{method.service}.{method.name}")
    except KeyError:
        return "request message"
    return str(found.input_type.full_name)
