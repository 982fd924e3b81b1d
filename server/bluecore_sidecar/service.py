"""The grpc.aio servicer: a thin layer that checks requests and calls the delivery pipeline."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import grpc
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .delivery import Deliverer, OutcomeBus
from .errors import InvalidRequest, RequestError, Unavailable, to_rpc_status

_SERVICE = "datafly.bluecore.v1.DeliveryService"
_W3C = TraceContextTextMapPropagator()


class Lifecycle:
    """Tracks in-flight calls and whether the sidecar still takes new work."""

    def __init__(self) -> None:
        self.draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one in-flight slot, or refuse with UNAVAILABLE when draining."""
        if self.draining:
            raise Unavailable("SHUTTING_DOWN", "the sidecar is shutting down; send to another")
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    @property
    def in_flight(self) -> int:
        """Calls currently being served."""
        return self._in_flight

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is in flight; False if ``timeout`` seconds passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


class DeliveryService(delivery_pb2_grpc.DeliveryServiceServicer):  # type: ignore[misc]
    """Implements ``datafly.bluecore.v1.DeliveryService`` over a :class:`Deliverer`."""

    def __init__(
        self,
        deliverer: Deliverer,
        bus: OutcomeBus,
        lifecycle: Lifecycle,
        *,
        batch_limit: int,
        default_deadline: timedelta,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._deliverer = deliverer
        self._bus = bus
        self._lifecycle = lifecycle
        self._batch_limit = batch_limit
        self._default_deadline = default_deadline.total_seconds()
        self._tracer = tracer or trace.NoOpTracer()

    async def Deliver(
        self, request: delivery_pb2.DeliverRequest, context: grpc.aio.ServicerContext
    ) -> delivery_pb2.DeliverResponse:
        """Deliver one event."""
        with _server_span(self._tracer, "Deliver", context):
            try:
                with self._lifecycle.admit():
                    _require_event(request)
                    result = await self._deliverer.deliver(
                        request.event, self._deadline(context), request.mode
                    )
            except RequestError as error:
                await _abort(context, error)
            return delivery_pb2.DeliverResponse(result=result)

    async def DeliverBatch(
        self, request: delivery_pb2.DeliverBatchRequest, context: grpc.aio.ServicerContext
    ) -> delivery_pb2.DeliverBatchResponse:
        """Deliver several events concurrently; results keep the request order."""
        with _server_span(self._tracer, "DeliverBatch", context) as span:
            span.set_attribute("datafly.batch_size", len(request.events))
            try:
                with self._lifecycle.admit():
                    if not request.events:
                        raise InvalidRequest("EMPTY_BATCH", "events must hold at least one event")
                    if len(request.events) > self._batch_limit:
                        raise InvalidRequest(
                            "BATCH_TOO_LARGE",
                            f"a batch holds at most {self._batch_limit} events; "
                            f"got {len(request.events)}",
                            limit=str(self._batch_limit),
                        )
                    deadline = self._deadline(context)
                    results = await asyncio.gather(
                        *(
                            self._deliverer.deliver(event, deadline, request.mode)
                            for event in request.events
                        )
                    )
            except RequestError as error:
                await _abort(context, error)
            return delivery_pb2.DeliverBatchResponse(results=results)

    async def Preview(
        self, request: delivery_pb2.PreviewRequest, context: grpc.aio.ServicerContext
    ) -> delivery_pb2.PreviewResponse:
        """Decide on one event and show the bodies, sending nothing."""
        with _server_span(self._tracer, "Preview", context):
            try:
                _require_event(request)
            except RequestError as error:
                await _abort(context, error)
            result, bodies = self._deliverer.preview(request.event)
            return delivery_pb2.PreviewResponse(
                result=result,
                bluecore_body=bodies[0] if bodies else "",
                additional_bodies=bodies[1:],
            )

    async def WatchDeliveries(
        self, request: delivery_pb2.WatchDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[delivery_pb2.WatchDeliveriesResponse]:
        """Stream outcomes as they happen until the caller leaves or the sidecar stops."""
        if self._lifecycle.draining:
            await _abort(context, Unavailable("SHUTTING_DOWN", "the sidecar is shutting down"))
        watcher = self._bus.subscribe(request.statuses)
        try:
            while (result := await watcher.next()) is not None:
                yield delivery_pb2.WatchDeliveriesResponse(result=result, dropped=watcher.dropped)
        finally:
            watcher.close()

    def _deadline(self, context: grpc.aio.ServicerContext) -> float:
        remaining = context.time_remaining()
        budget = self._default_deadline if remaining is None else remaining
        return time.monotonic() + budget


def _require_event(
    request: delivery_pb2.DeliverRequest | delivery_pb2.PreviewRequest,
) -> None:
    if not request.HasField("event"):
        raise InvalidRequest("EVENT_MISSING", "the request has no event; set the event field")


async def _abort(context: grpc.aio.ServicerContext, error: RequestError) -> None:
    trace.get_current_span().set_status(trace.StatusCode.ERROR, error.reason)
    await context.abort_with_status(to_rpc_status(error))


@contextlib.contextmanager
def _server_span(
    tracer: trace.Tracer, method: str, context: grpc.aio.ServicerContext
) -> Iterator[trace.Span]:
    """A SERVER span for one RPC that continues the caller's W3C ``traceparent``."""
    carrier = {
        key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)
    }
    # Only W3C trace context: the caller's baggage could carry anything, and what is in the
    # context is injected into the requests to Bluecore.
    parent = _W3C.extract(carrier)
    token = otel_context.attach(parent)
    try:
        with tracer.start_as_current_span(
            f"{_SERVICE}/{method}",
            kind=trace.SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": _SERVICE,
                "rpc.method": method,
            },
            record_exception=False,
        ) as span:
            yield span
    finally:
        otel_context.detach(token)
