"""The grpc.aio servicers: delivery over the pipeline, health with ``List``, reflection v1.

The delivery servicer is thin: spans, admission and turning :class:`RequestError` into a
status all happen once, in :mod:`.interceptor`; a method here only checks its request and
calls the pipeline. The unary methods need nothing from grpc but the time left, so the HTTP
door (:mod:`.http_door`) calls the same methods.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from datetime import timedelta
from typing import Protocol

import grpc
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from opentelemetry import trace

from .delivery import Deliverer, OutcomeBus
from .errors import InvalidRequest
from .redaction import Redactor
from .results import clip

#: grpc's reflection service under its stable name; grpcio-reflection ships only v1alpha.
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


class CallContext(Protocol):
    """What a unary delivery method reads from its call; a grpc.aio context is one."""

    def time_remaining(self) -> float | None:
        """Seconds until the caller's deadline; None when the caller set none."""


#: Fields of a result whose text comes from the caller's event, scrubbed for watchers.
_CALLER_TEXTS = ("message_id", "datafly_event", "bluecore_event")


class DeliveryService(delivery_pb2_grpc.DeliveryServiceServicer):  # type: ignore[misc]
    """Implements ``datafly.bluecore.v1.DeliveryService`` over a :class:`Deliverer`."""

    def __init__(
        self,
        deliverer: Deliverer,
        bus: OutcomeBus,
        *,
        batch_limit: int,
        default_deadline: timedelta,
        redactor: Redactor | None = None,
    ) -> None:
        self._deliverer = deliverer
        self._bus = bus
        self._batch_limit = batch_limit
        self._default_deadline = default_deadline.total_seconds()
        self._redactor = redactor

    async def Deliver(
        self, request: delivery_pb2.DeliverRequest, context: CallContext
    ) -> delivery_pb2.DeliverResponse:
        """Deliver one event."""
        event = _event(request)
        result = await self._deliverer.deliver(event, self._deadline(context), request.mode)
        return delivery_pb2.DeliverResponse(result=result)

    async def DeliverBatch(
        self, request: delivery_pb2.DeliverBatchRequest, context: CallContext
    ) -> delivery_pb2.DeliverBatchResponse:
        """Deliver several events concurrently; results keep the request order."""
        trace.get_current_span().set_attribute("datafly.batch_size", len(request.events))
        if not request.events:
            raise InvalidRequest("EMPTY_BATCH", "events must hold at least one event")
        if len(request.events) > self._batch_limit:
            raise InvalidRequest(
                "BATCH_TOO_LARGE",
                f"a batch holds at most {self._batch_limit} events; got {len(request.events)}",
                limit=str(self._batch_limit),
            )
        results = await self._deliverer.deliver_batch(
            request.events, self._deadline(context), request.mode
        )
        return delivery_pb2.DeliverBatchResponse(results=results)

    async def Preview(
        self, request: delivery_pb2.PreviewRequest, context: CallContext
    ) -> delivery_pb2.PreviewResponse:
        """Decide on one event and show the bodies, sending nothing."""
        result, bodies = await self._deliverer.preview(_event(request))
        return delivery_pb2.PreviewResponse(
            result=result, bluecore_body=bodies[0] if bodies else "", additional_bodies=bodies[1:]
        )

    async def WatchDeliveries(
        self, request: delivery_pb2.WatchDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[delivery_pb2.WatchDeliveriesResponse]:
        """Stream outcomes as they happen until the caller leaves or the sidecar stops."""
        watcher = self._bus.subscribe(request.statuses)
        try:
            while (result := await watcher.next()) is not None:
                yield delivery_pb2.WatchDeliveriesResponse(
                    result=self._watched(result), dropped=watcher.dropped
                )
        finally:
            watcher.close()

    def _watched(self, result: delivery_pb2.DeliveryResult) -> delivery_pb2.DeliveryResult:
        """``result`` as watchers see it: the texts a caller chose (message id, event names)
        scrubbed of the token and emails, as in log lines; the caller's own answer keeps them.
        A result with nothing to hide is sent as it is, uncopied."""
        if self._redactor is None:
            return result
        shown = {name: self._redactor.scrub(getattr(result, name)) for name in _CALLER_TEXTS}
        if all(shown[name] == getattr(result, name) for name in _CALLER_TEXTS):
            return result
        copy = delivery_pb2.DeliveryResult()
        copy.CopyFrom(result)
        for name, text in shown.items():
            setattr(copy, name, clip(text))
        return copy

    def _deadline(self, context: CallContext) -> float:
        remaining = context.time_remaining()
        budget = self._default_deadline if remaining is None else remaining
        return time.monotonic() + budget


def _event(
    request: delivery_pb2.DeliverRequest | delivery_pb2.PreviewRequest,
) -> delivery_pb2.DataflyEvent:
    if not request.HasField("event"):
        raise InvalidRequest("EVENT_MISSING", "the request has no event; set the event field")
    return request.event


class HealthService(health.aio.HealthServicer):  # type: ignore[misc]
    """grpc's asyncio health servicer plus ``List``, which the library leaves unimplemented."""

    def __init__(self) -> None:
        super().__init__()
        # Kept here as well as in the base class, whose table is private.
        self._statuses: dict[str, health_pb2.HealthCheckResponse.ServingStatus.ValueType] = {
            "": health_pb2.HealthCheckResponse.SERVING
        }
        self._shutting_down = False

    async def set(
        self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
    ) -> None:
        """Set ``service``'s status (ignored once graceful shutdown has begun)."""
        if not self._shutting_down:
            self._statuses[service] = status
        await super().set(service, status)

    async def enter_graceful_shutdown(self) -> None:
        """Mark every service NOT_SERVING for good."""
        self._shutting_down = True
        for service in self._statuses:
            self._statuses[service] = health_pb2.HealthCheckResponse.NOT_SERVING
        await super().enter_graceful_shutdown()

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        """Every service with a status, and that status."""
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._statuses.items()
            }
        )


def add_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection as ``grpc.reflection.v1`` and ``v1alpha`` (grpcurl tries v1 first).

    The two protocols are the same messages under two package names, so one servicer
    answers both: v1 bytes decode as the v1alpha messages unchanged. The v1 descriptor is
    added to the default pool so that reflection can describe itself under both names.
    """
    _register_reflection_v1_descriptor()
    names = (*service_names, reflection.SERVICE_NAME, REFLECTION_V1)
    servicer = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.method_handlers_generic_handler(
        REFLECTION_V1,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((v1,))


def _register_reflection_v1_descriptor() -> None:
    """Add ``grpc/reflection/v1/reflection.proto`` to the default pool, built from v1alpha."""
    pool = descriptor_pool.Default()
    v1_file = "grpc/reflection/v1/reflection.proto"
    try:
        pool.FindFileByName(v1_file)
    except KeyError:
        pass
    else:
        return
    source = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(source)
    old, new = f".{source.package}.", ".grpc.reflection.v1."
    source.name = v1_file
    source.package = "grpc.reflection.v1"
    source.ClearField("options")
    for message in source.message_type:
        for field in message.field:
            if field.type_name:
                field.type_name = field.type_name.replace(old, new)
    for service in source.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool.Add(source)
