"""The gRPC edge over a real channel: undecodable requests, admission, health List,
reflection v1, the WatchDeliveries span and a drain bounded by one grace."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import timedelta

import grpc
import pytest
from bluecore_sidecar import errors
from bluecore_sidecar.errors import ERROR_DOMAIN, Unavailable
from bluecore_sidecar.interceptor import Admission, EdgeHandlers
from bluecore_sidecar.telemetry import Metrics
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from .conftest import EMAIL, error_details, error_info, eventually, make_event
from .test_metrics import scrape

Status = delivery_pb2.DeliveryStatus
SERVICE = "datafly.bluecore.v1.DeliveryService"
DEAD_LETTERS = "datafly.bluecore.v1.DeadLetterService"
DELIVER = f"/{SERVICE}/Deliver"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


# -- hand-encoded protobuf wire format ---------------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def length_delimited(field: int, payload: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def nested_struct(levels: int) -> bytes:
    """A ``Struct`` holding ``{"a": {"a": ...}}`` ``levels`` objects deep."""
    struct = b""
    for _ in range(levels):
        value = length_delimited(5, struct)  # Value.struct_value
        entry = length_delimited(1, b"a") + length_delimited(2, value)  # map entry key, value
        struct = length_delimited(1, entry)  # Struct.fields
    return struct


def deliver_request_bytes(event_bytes: bytes) -> bytes:
    return length_delimited(1, event_bytes)  # DeliverRequest.event


def event_with_deep_properties(levels: int) -> bytes:
    """A deliverable event whose properties also hold a ``levels``-deep object.

    Protobuf merges a repeated occurrence of a message field, so appending a second
    ``properties`` adds the nested key to the ones the event already has.
    """
    properties = delivery_pb2.DataflyEvent.DESCRIPTOR.fields_by_name["properties"].number
    event = make_event().SerializeToString()
    return deliver_request_bytes(event + length_delimited(properties, nested_struct(levels)))


def invalid_utf8_request() -> bytes:
    message_id = delivery_pb2.DataflyEvent.DESCRIPTOR.fields_by_name["message_id"].number
    return deliver_request_bytes(length_delimited(message_id, b"msg-\xff\xfe"))


def truncated_request() -> bytes:
    whole = delivery_pb2.DeliverRequest(event=make_event()).SerializeToString()
    return whole[: len(whole) - 7]


UNDECODABLE = {
    "random bytes": (random.Random(7).randbytes(64), "MALFORMED_REQUEST"),
    "truncated": (truncated_request(), "MALFORMED_REQUEST"),
    "invalid UTF-8": (invalid_utf8_request(), "MALFORMED_REQUEST"),
    "Struct 40 levels deep": (event_with_deep_properties(40), "TOO_DEEP"),
}


# -- undecodable requests ----------------------------------------------------------------------


@pytest.mark.parametrize("case", list(UNDECODABLE))
async def test_undecodable_request_is_invalid_argument_with_a_reason_and_counted(
    case, sidecar, sandbox
):
    raw, reason = UNDECODABLE[case]
    with pytest.raises(DecodeError):  # the bytes really are undecodable
        delivery_pb2.DeliverRequest.FromString(raw)

    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        send_bytes = channel.unary_unary(DELIVER, request_serializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await send_bytes(raw, timeout=5)

    error = refused.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(error)
    assert (info.reason, info.domain) == (reason, ERROR_DOMAIN)
    details = error.details() or ""
    assert "datafly.bluecore.v1.DeliverRequest" in details
    for python_words in ("class", "Error", "google.protobuf", "upb"):
        assert python_words not in details
    _, samples = await scrape(sidecar.ops_url)
    key = (
        "bluecore_sidecar_calls_refused_total",
        (("code", "INVALID_ARGUMENT"), ("method", "Deliver"), ("reason", reason)),
    )
    assert samples[key] == 1
    assert sandbox.received == []


async def test_a_struct_20_levels_deep_is_still_delivered(sidecar, sandbox):
    """The depth limit refuses only what protobuf cannot decode, not ordinary nesting."""
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        send_bytes = channel.unary_unary(
            DELIVER,
            request_serializer=None,
            response_deserializer=delivery_pb2.DeliverResponse.FromString,
        )
        reply = await send_bytes(event_with_deep_properties(20), timeout=10)
    assert reply.result.status == Status.DELIVERY_STATUS_DELIVERED
    [received] = sandbox.received
    nested = received.body["properties"]
    assert isinstance(nested, dict)


async def test_undecodable_health_check_is_invalid_argument_too(sidecar):
    """Every RPC decodes through the edge, not only the delivery service's."""
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        send_bytes = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await send_bytes(b"\x0a\x05ab", timeout=5)  # says 5 bytes of service name, has 2
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(refused.value).reason == "MALFORMED_REQUEST"
    assert "grpc.health.v1.HealthCheckRequest" in (refused.value.details() or "")


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_undecodable_reflection_request_ends_the_stream_with_invalid_argument(
    version, sidecar
):
    method = f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        # "list services", then a message cut short (it claims 32 bytes and has 3).
        call = channel.stream_stream(method, request_serializer=None)(
            iter([b"\x3a\x00", b"\x3a\x20abc"]), timeout=5
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            _ = [reply async for reply in call]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(refused.value).reason == "MALFORMED_REQUEST"
    assert "ServerReflectionRequest" in (refused.value.details() or "")


# -- health List and reflection v1 -------------------------------------------------------------


async def test_health_list_answers_every_service(sidecar):
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).List(
            health_pb2.HealthListRequest(), timeout=5
        )
    assert {name: status.status for name, status in reply.statuses.items()} == {
        "": health_pb2.HealthCheckResponse.SERVING,
        SERVICE: health_pb2.HealthCheckResponse.SERVING,
        DEAD_LETTERS: health_pb2.HealthCheckResponse.SERVING,
    }


def reflection_v1_messages() -> tuple[type, type]:
    """The ``grpc.reflection.v1`` request and response classes, from the default pool."""
    pool = descriptor_pool.Default()
    return (
        message_factory.GetMessageClass(
            pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionRequest")
        ),
        message_factory.GetMessageClass(
            pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionResponse")
        ),
    )


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_reflection_lists_services_under_v1_and_v1alpha(version, sidecar):
    if version == "v1":
        request_type, response_type = reflection_v1_messages()
    else:
        from grpc_reflection.v1alpha import reflection_pb2  # noqa: PLC0415

        request_type = reflection_pb2.ServerReflectionRequest
        response_type = reflection_pb2.ServerReflectionResponse
    method = f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        call = channel.stream_stream(
            method,
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )(
            iter(
                [
                    request_type(list_services=""),
                    request_type(file_containing_symbol="grpc.reflection.v1.ServerReflection"),
                ]
            ),
            timeout=5,
        )
        listed, described = [reply async for reply in call]
    assert (
        type(listed).DESCRIPTOR.full_name == f"grpc.reflection.{version}.ServerReflectionResponse"
    )
    assert {s.name for s in listed.list_services_response.service} == {
        SERVICE,
        DEAD_LETTERS,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    v1 = next(f for f in files if f.name == "grpc/reflection/v1/reflection.proto")
    assert v1.package == "grpc.reflection.v1"
    assert [m.input_type for m in v1.service[0].method] == [
        ".grpc.reflection.v1.ServerReflectionRequest"
    ]


# -- spans -------------------------------------------------------------------------------------


async def test_watch_deliveries_has_a_server_span_in_the_callers_trace(
    sidecar, stub, span_exporter
):
    watch = stub.WatchDeliveries(
        delivery_pb2.WatchDeliveriesRequest(), metadata=(("traceparent", TRACEPARENT),)
    )
    await eventually(lambda: sidecar.bus.watcher_count >= 1, timeout=10)
    async with asyncio.timeout(10):
        await stub.Deliver(delivery_pb2.DeliverRequest(event=make_event()), timeout=10)
        assert (await watch.read()).result.status == Status.DELIVERY_STATUS_DELIVERED
    watch.cancel()
    name = f"{SERVICE}/WatchDeliveries"
    [span] = await eventually(
        lambda: [s for s in span_exporter.get_finished_spans() if s.name == name], timeout=10
    )
    assert span.kind is SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == TRACEPARENT.split("-")[1]
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == TRACEPARENT.split("-")[2]
    assert span.attributes is not None
    assert span.attributes["rpc.method"] == "WatchDeliveries"


async def test_a_refused_call_has_an_error_span_with_its_reason(stub, span_exporter):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Deliver(delivery_pb2.DeliverRequest(), timeout=5)
    assert error_info(refused.value).reason == "EVENT_MISSING"
    # The status reaches the caller before the handler's span has ended: wait for the span.
    name = f"{SERVICE}/Deliver"
    [span] = await eventually(
        lambda: [s for s in span_exporter.get_finished_spans() if s.name == name], timeout=10
    )
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "EVENT_MISSING"
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]


@contextlib.asynccontextmanager
async def serving_probe(server: grpc.aio.Server) -> AsyncIterator[grpc.aio.Channel]:
    """Start ``server`` on a free loopback port; a channel to it; stop it afterwards."""
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


@pytest.mark.parametrize("registration", ["generic", "registered"])
async def test_an_unexpected_exception_is_internal_logged_by_type_and_never_described(
    captured_logs, registration
):
    """The edge on its own, over a handler that fails with data in its message, registered
    either way grpc.aio knows (a generic handler, or registered method handlers)."""
    metrics = Metrics()
    edge = EdgeHandlers(
        "test.Probe", Admission(10, timedelta(seconds=1)), metrics, trace.NoOpTracer()
    )

    async def fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise RuntimeError(f"cannot handle {EMAIL}")

    server = grpc.aio.server()
    handlers = {"Fail": grpc.unary_unary_rpc_method_handler(fail)}
    if registration == "generic":
        edge.server(server).add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Probe", handlers),)
        )
    else:
        edge.server(server).add_registered_method_handlers("test.Probe", handlers)
    async with serving_probe(server) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await channel.unary_unary("/test.Probe/Fail")(b"", timeout=5)
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    assert error_info(failed.value).reason == "INTERNAL_ERROR"
    details = failed.value.details() or ""
    assert EMAIL not in details
    assert "RuntimeError" not in details
    logged = captured_logs.getvalue()
    assert EMAIL not in logged
    [entry] = [json.loads(line) for line in logged.splitlines()]
    assert (entry["message"], entry["error_type"]) == (
        "unexpected error serving a call",
        "RuntimeError",
    )
    refused = metrics.registry.get_sample_value(
        "bluecore_sidecar_calls_refused_total",
        {"method": "Fail", "code": "INTERNAL", "reason": "INTERNAL_ERROR"},
    )
    assert refused == 1


class _RecordingServer:
    """Stands in for grpc's server: records what is registered, and how."""

    def __init__(self) -> None:
        self.generic: list[grpc.GenericRpcHandler] = []
        self.registered: dict[str, set[str]] = {}

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        self.registered[service] = set(handlers)


async def test_only_the_listed_methods_are_registered_the_others_answer_as_generic_ones():
    """`registered` keeps grpc's per-call work to the busy methods; a method left out is
    still served, by the generic handler the generated code adds as well, through the edge."""
    edge = EdgeHandlers(
        "test.Probe",
        Admission(10, timedelta(seconds=1)),
        Metrics(),
        trace.NoOpTracer(),
        registered=frozenset({"/test.Probe/Hot"}),
    )

    async def hot(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b"hot"

    async def cold(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise RuntimeError("cold")  # the edge turns it into INTERNAL: it went through the edge

    handlers = {
        "Hot": grpc.unary_unary_rpc_method_handler(hot),
        "Cold": grpc.unary_unary_rpc_method_handler(cold),
    }
    recording = _RecordingServer()
    server = grpc.aio.server()
    for target in (recording, server):
        wrapping = edge.server(target)  # type: ignore[arg-type]
        wrapping.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Probe", handlers),)
        )
        wrapping.add_registered_method_handlers("test.Probe", handlers)
    assert recording.registered == {"test.Probe": {"Hot"}}
    assert len(recording.generic) == 1
    async with serving_probe(server) as channel:
        assert await channel.unary_unary("/test.Probe/Hot")(b"", timeout=5) == b"hot"
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await channel.unary_unary("/test.Probe/Cold")(b"", timeout=5)
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    assert error_info(failed.value).reason == "INTERNAL_ERROR"


# -- admission ---------------------------------------------------------------------------------


async def test_over_the_admission_limit_calls_are_shed_and_admitted_ones_answer_in_time(
    start_sidecar, sandbox
):
    """Hanging upstream, limit 50, 200 concurrent calls with a 2 s deadline: every caller
    gets a DeliveryResult before its deadline or RESOURCE_EXHAUSTED OVERLOADED at once."""
    sandbox.delay(5)
    sidecar = await start_sidecar(max_inflight_calls=50)
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        await channel.channel_ready()
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)

        async def call(n: int) -> tuple[object, float]:
            started = time.monotonic()
            request = delivery_pb2.DeliverRequest(event=make_event(messageId=f"m-{n}"))
            try:
                reply = await stub.Deliver(request, timeout=2)
            except grpc.aio.AioRpcError as error:
                return error, time.monotonic() - started
            return reply.result, time.monotonic() - started

        outcomes = await asyncio.gather(*(call(n) for n in range(200)))

    results = [(o, t) for o, t in outcomes if isinstance(o, delivery_pb2.DeliveryResult)]
    errors = [(o, t) for o, t in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(results) + len(errors) == 200
    assert {e.code() for e, _ in errors} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert (len(results), len(errors)) == (50, 150)
    # grpc enforces the deadline itself: a late answer would have been DEADLINE_EXCEEDED.
    assert {r.status for r, _ in results} == {Status.DELIVERY_STATUS_FAILED_RETRYABLE}
    # Shedding is immediate: nobody waits for a slot that will not free up in time. Every
    # refusal came back before the first admitted call gave up on the hanging upstream (an
    # order, not a wall-clock bound, so a busy machine cannot fail it).
    assert max(elapsed for _, elapsed in errors) < min(elapsed for _, elapsed in results)

    shed = errors[0][0]
    details = error_details(shed)
    info = next(d for d in details if isinstance(d, error_details_pb2.ErrorInfo))
    retry = next(d for d in details if isinstance(d, error_details_pb2.RetryInfo))
    assert (info.reason, info.domain) == ("OVERLOADED", ERROR_DOMAIN)
    assert dict(info.metadata) == {"limit": "50", "retryDelay": "1s"}
    assert retry.retry_delay.ToTimedelta() == timedelta(seconds=1)

    _, samples = await scrape(sidecar.ops_url)
    assert samples[("bluecore_sidecar_calls_admitted_total", (("method", "Deliver"),))] == 50
    overloaded = (
        "bluecore_sidecar_calls_refused_total",
        (("code", "RESOURCE_EXHAUSTED"), ("method", "Deliver"), ("reason", "OVERLOADED")),
    )
    assert samples[overloaded] == 150


def test_admission_refuses_every_call_once_draining():
    admission = Admission(limit=2, retry_delay=timedelta(seconds=1))
    with admission.admit(bounded=True):
        assert admission.in_flight == 1
    admission.draining = True
    for bounded in (True, False):
        with pytest.raises(Unavailable) as refused, admission.admit(bounded=bounded):
            pass  # pragma: no cover - never admitted
        assert refused.value.reason == "SHUTTING_DOWN"
    assert admission.in_flight == 0


# -- drain -------------------------------------------------------------------------------------


async def test_drain_waits_one_grace_for_work_in_flight_then_stops(
    start_sidecar, sandbox, captured_logs
):
    """A call that outlives the grace is cut when the grace ends, not a second later."""
    sandbox.delay(5)
    sidecar = await start_sidecar(shutdown_grace=timedelta(seconds=1))
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        in_flight = asyncio.ensure_future(
            stub.Deliver(delivery_pb2.DeliverRequest(event=make_event()), timeout=20)
        )
        await eventually(lambda: sandbox.received)
        started = time.monotonic()
        await sidecar.drain()
        took = time.monotonic() - started
        with pytest.raises(grpc.aio.AioRpcError) as cut:
            await in_flight
    # Cut at the grace (1 s), well before the hanging upstream (5 s) would have answered.
    assert 0.9 <= took < 4.0
    assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
    logged = [json.loads(line) for line in captured_logs.getvalue().splitlines()]
    [cut_off] = [e for e in logged if e["message"] == "grace period over with calls in flight"]
    assert cut_off["in_flight"] == 1


async def test_drain_with_only_watchers_connected_does_not_wait_for_the_grace(
    start_sidecar,
):
    sidecar = await start_sidecar(shutdown_grace=timedelta(seconds=5))
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        watch = delivery_pb2_grpc.DeliveryServiceStub(channel).WatchDeliveries(
            delivery_pb2.WatchDeliveriesRequest()
        )
        await eventually(lambda: sidecar.bus.watcher_count >= 1, timeout=10)
        started = time.monotonic()
        await sidecar.drain()
        took = time.monotonic() - started
        rest = [item async for item in watch]
    # Far below the 5 s grace: an idle stream is not work in flight.
    assert took < 4.0
    assert rest == []
    assert await watch.code() == grpc.StatusCode.OK


def test_each_request_error_ends_a_call_with_the_grpc_code_it_names():
    """errors.py imports no grpc, yet ``code`` is a real grpc.StatusCode, read from the class
    or an instance, and it is the status the error tree in errors.py draws for the class."""
    assert errors.InvalidRequest.code is grpc.StatusCode.INVALID_ARGUMENT
    assert errors.RequestError("R", "m").code is grpc.StatusCode.UNKNOWN
    kinds = errors.RequestError.__subclasses__()
    for kind in kinds:
        kinds.extend(kind.__subclasses__())
        assert kind.code is grpc.StatusCode[kind.code_name], kind
        assert kind("REASON", "message").code is kind.code, kind
        drawn = rf"{kind.__name__}\s+-> {kind.code_name}\b"
        assert re.search(drawn, errors.__doc__ or ""), kind
    assert len(kinds) >= 4
