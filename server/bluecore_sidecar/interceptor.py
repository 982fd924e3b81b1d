"""The edge every call passes through: :class:`Edge`, and its gRPC adapter.

:class:`Edge` is the part that does not depend on the wire: the SERVER span (continuing the
caller's W3C ``traceparent``), admission control, safe decoding of request bytes, and turning
whatever went wrong into one :class:`RequestError`, counted and marked on the span. The gRPC
adapter and the HTTP door (:mod:`.http_door`) both use it, so a call is traced, admitted and
refused the same way whichever door it came in by.

:class:`EdgeHandlers` adapts it to grpc.aio: when a servicer is registered, it wraps the
handler of each method of the delivery service in the span and admission, and answers a
refusal with a ``google.rpc.Status`` carrying an ``ErrorInfo``. For every method, health and
reflection included, it also decodes the requests itself, so bytes that are not a valid
message become ``INVALID_ARGUMENT`` rather than grpc's ``UNKNOWN`` "Unexpected <class ...>"
(grpc.aio treats any exception from a deserializer that way).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextvars import Token
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn, cast

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
from .tracing import CURRENT_SPAN, NO_SPAN

if TYPE_CHECKING:
    from .telemetry import CounterChild

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

    def enter(self, *, bounded: bool) -> None:
        """Take a slot for one call (``bounded``) or only check that the sidecar is serving.

        Raises :class:`Unavailable` while draining and :class:`Overloaded` when ``limit``
        calls are already in flight: answering at once beats queueing a call past its deadline.
        Every successful ``enter(bounded=True)`` must be paired with one :meth:`leave`.
        """
        if self.draining:
            raise Unavailable("SHUTTING_DOWN", "the sidecar is shutting down; send to another")
        if bounded:
            if self.in_flight >= self.limit:
                raise Overloaded(
                    "OVERLOADED",
                    f"the sidecar is serving its limit of {self.limit} calls; retry after "
                    f"{self.retry_delay.total_seconds():g}s",
                    retry_delay=self.retry_delay,
                    limit=str(self.limit),
                )
            self.in_flight += 1
            self._idle.clear()

    def leave(self, *, bounded: bool) -> None:
        """Give back the slot :meth:`enter` took (nothing for an unbounded call)."""
        if bounded:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()

    @contextlib.contextmanager
    def admit(self, *, bounded: bool) -> Iterator[None]:
        """:meth:`enter` and :meth:`leave` around a block."""
        self.enter(bounded=bounded)
        try:
            yield
        finally:
            self.leave(bounded=bounded)

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
        self._admitted_counters: dict[str, CounterChild] = {}

    def call(
        self, name: str, carrier: Mapping[str, str], attributes: Mapping[str, str]
    ) -> contextlib.AbstractContextManager[trace.Span]:
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
        if not self._tracing and "traceparent" not in carrier:
            return NO_SPAN  # nothing to continue, nothing to record: the usual untraced call
        return self._call(name, carrier, attributes)

    def open(
        self, name: str, carrier: Mapping[str, str], attributes: Mapping[str, str]
    ) -> tuple[trace.Span, Token[otel_context.Context] | None]:
        """What :meth:`call` does on entry: the span, made current; the token :meth:`close` takes.

        For the hot path, where a generator context manager costs more than the span: every
        :meth:`open` must be paired with one :meth:`close`, in a ``finally``.
        """
        caller = _W3C.extract(carrier) if "traceparent" in carrier else None
        if not self._tracing:
            if caller is None:
                return trace.INVALID_SPAN, None
            return trace.get_current_span(caller), otel_context.attach(caller)
        # The current context is read once and handed to both steps (each would read it
        # again). The attributes go in at the start, in one piece: they are kept only when
        # the sampler records the span.
        context = caller if caller is not None else otel_context.get_current()
        span = self._tracer.start_span(name, context, _SERVER, attributes)
        # trace.set_span_in_context(span, context), one call shorter.
        return span, otel_context.attach(otel_context.set_value(CURRENT_SPAN, span, context))

    @staticmethod
    def close(span: trace.Span, token: Token[otel_context.Context] | None) -> None:
        """What :meth:`call` does on exit: detach the span, then end it."""
        if token is not None:
            otel_context.detach(token)
            span.end()  # a span of ours, or the caller's (non-recording: ending does nothing)

    @contextlib.contextmanager
    def _call(
        self, name: str, carrier: Mapping[str, str], attributes: Mapping[str, str]
    ) -> Iterator[trace.Span]:
        span, token = self.open(name, carrier, attributes)
        try:
            yield span
        finally:
            self.close(span, token)

    def enter(self, method: str, *, bounded: bool) -> None:
        """Admit one call of ``method`` (see :meth:`Admission.enter`) and count it."""
        self.admission.enter(bounded=bounded)
        if bounded:
            counter = self._admitted_counters.get(method)
            if counter is None:
                counter = self._metrics.calls_admitted.labels(method=method)
                self._admitted_counters[method] = counter
            counter.inc()

    def leave(self, *, bounded: bool) -> None:
        """End a call :meth:`enter` admitted."""
        self.admission.leave(bounded=bounded)

    @contextlib.contextmanager
    def admitted(self, method: str, *, bounded: bool) -> Iterator[None]:
        """Hold an admission slot for one call of ``method`` (see :meth:`Admission.admit`)."""
        self.enter(method, bounded=bounded)
        try:
            yield
        finally:
            self.leave(bounded=bounded)

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
    """What the edge knows about one RPC method."""

    path: str  # "/package.Service/Method"
    service: str
    name: str
    traced: bool  # a SERVER span, admission, and request errors as statuses
    bounded: bool  # counts against the admission limit
    span_name: str = ""  # "package.Service/Method"
    span_attributes: Mapping[str, str] = dataclasses.field(default_factory=dict)


class EdgeHandlers:
    """Spans, admission and error statuses for ``service``; safe decoding for everything.

    Not a ``grpc.aio.ServerInterceptor``: grpc.aio awaits an interceptor's
    ``intercept_service`` (and builds its continuation) on every call, only to be handed the
    same wrapped handler each time. Here each method's handler is wrapped once, when it is
    registered: register every servicer through :meth:`server` (the generated
    ``add_*_to_server`` functions and :func:`.service.add_reflection` take it in place of the
    server), and the server itself runs without interceptors.

    ``registered`` (method paths, "/package.Service/Method"), when given, are the only
    methods handed to grpc as registered methods; the others are served by the generic
    handlers that the generated ``add_*_to_server`` functions add as well. grpc.aio keeps one
    waiting task per registered method (plus one for generic calls) and, for every call that
    arrives, waits on all of them at once: each registered method costs every call some work,
    so only the busy ones should be registered.
    """

    def __init__(
        self,
        service: str,
        admission: Admission,
        metrics: Metrics,
        tracer: trace.Tracer,
        *,
        unbounded: frozenset[str] = frozenset(),
        registered: frozenset[str] | None = None,
    ) -> None:
        self.edge = Edge(service, admission, metrics, tracer)
        self._unbounded = unbounded
        self.registered = registered

    def server(self, server: grpc.aio.Server) -> grpc.aio.Server:
        """A stand-in for ``server`` that registers handlers wrapped by this edge."""
        # Only the two registration calls are used by the generated code and reflection;
        # the stand-in has no other method, so anything else fails loudly.
        return cast("grpc.aio.Server", _WrappingServer(server, self))

    def generic(self, handler: grpc.GenericRpcHandler) -> grpc.GenericRpcHandler:
        """``handler`` with every method it serves wrapped (once per method)."""
        return _WrappedGeneric(handler, self)

    def wrap(self, path: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler of the method at ``path`` ("/package.Service/Method"), wrapped."""
        if handler.request_streaming and not (
            handler.response_streaming and inspect.isasyncgenfunction(handler.stream_stream)
        ):
            # There is no other streamed kind to wrap.
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
        return self._wrap(method, handler)

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
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
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

    def _unary(
        self, method: _Method, inner: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        """The unary behaviour: the hot path, so plain code rather than context managers."""
        edge = self.edge
        name, bounded = method.name, method.bounded
        if not method.traced:

            async def untraced(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    if type(request) is _Undecodable:
                        raise request.error
                    return await inner(request, context)
                except Exception as error:  # noqa: BLE001 - every failure becomes a status
                    await self._refuse(method, error, context, trace.INVALID_SPAN)

            return untraced

        span_name, attributes = method.span_name, method.span_attributes

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            carrier = _trace_headers(context.invocation_metadata())
            span, token = edge.open(span_name, carrier, attributes)
            try:
                if type(request) is _Undecodable:
                    raise request.error
                edge.enter(name, bounded=bounded)
                try:
                    return await inner(request, context)
                finally:
                    edge.leave(bounded=bounded)
            except Exception as error:  # noqa: BLE001 - every failure becomes a status
                await self._refuse(method, error, context, span)
            finally:
                edge.close(span, token)

        return unary

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


class _WrappedGeneric(grpc.GenericRpcHandler):  # type: ignore[misc]
    """A generic handler whose method handlers come out wrapped, each wrapped once."""

    def __init__(self, inner: grpc.GenericRpcHandler, edge: EdgeHandlers) -> None:
        self._inner = inner
        self._edge = edge
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        """The wrapped handler of the called method, or None (grpc: UNIMPLEMENTED)."""
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        path: str = handler_call_details.method
        known = self._wrapped.get(path)
        if known is None or known[0] is not handler:
            known = self._wrapped[path] = (handler, self._edge.wrap(path, handler))
        return known[1]


class _WrappingServer:
    """What the generated ``add_*_to_server`` functions call, wrapping before registering."""

    def __init__(self, server: grpc.aio.Server, edge: EdgeHandlers) -> None:
        self._server = server
        self._edge = edge

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(tuple(self._edge.generic(h) for h in handlers))

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        kept = self._edge.registered
        wrapped = {
            name: self._edge.wrap(f"/{service}/{name}", handler)
            for name, handler in handlers.items()
            if kept is None or f"/{service}/{name}" in kept
        }
        if wrapped:
            self._server.add_registered_method_handlers(service, wrapped)


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
