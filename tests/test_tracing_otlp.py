"""Proof over the wire: spans leave through the real OTLP exporters into in-process receivers.

The receivers implement the OTLP collector protocol (gRPC ``TraceService/Export`` and
HTTP/protobuf ``POST /v1/traces``) on port 0, so what is asserted here is what a collector or
Jaeger would store: the span tree, kinds, parentage, the caller's trace id, the attributes and
the resource, and the absence of the namespace token and emails from every byte.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

import grpc
from aiohttp import web
from bluecore_sidecar.app import running_sidecar
from bluecore_sidecar.otlp_grpc import grpc_span_exporter
from bluecore_sidecar.tracing import encode_export_request, light_tracer
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from .conftest import EMAIL, NAMESPACE, make_event, serving, test_settings

DeliveryStatus = delivery_pb2.DeliveryStatus

CALLER_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"
SERVICE = "bluecore-sidecar-under-test"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """Keeps every export request it receives."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    async def Export(self, request, context):
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[Span]:
        return [
            span
            for request in self.requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]

    def resources(self) -> list[dict[str, object]]:
        return [
            attributes(resource_spans.resource.attributes)
            for request in self.requests
            for resource_spans in request.resource_spans
        ]

    def raw(self) -> bytes:
        return b"".join(request.SerializeToString() for request in self.requests)


@contextlib.asynccontextmanager
async def grpc_collector() -> AsyncIterator[tuple[Collector, str]]:
    collector = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield collector, f"http://127.0.0.1:{port}"
    finally:
        await server.stop(None)


@contextlib.asynccontextmanager
async def http_collector() -> AsyncIterator[tuple[Collector, str]]:
    collector = Collector()

    async def export(request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        message = trace_service_pb2.ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        collector.requests.append(message)
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=reply, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", export)
    async with serving(app) as base_url:
        yield collector, base_url


def attributes(items) -> dict[str, object]:
    return {item.key: value_of(item.value) for item in items}


def value_of(value: AnyValue) -> object:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


async def deliver_two(sandbox, env: Mapping[str, str]) -> list[delivery_pb2.DeliveryResult]:
    """One delivery that succeeds after a 503, one refused for good; then stop (flush)."""
    async with (
        running_sidecar(test_settings(sandbox.url), env) as sidecar,
        grpc.aio.insecure_channel(sidecar.grpc_address) as channel,
    ):
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        sandbox.fail_next(1, 503)
        retried = await stub.Deliver(
            delivery_pb2.DeliverRequest(event=make_event(messageId="otlp-retried")),
            timeout=10,
            metadata=(("traceparent", TRACEPARENT),),
        )
        sandbox.fail_next(1, 400)
        failed = await stub.Deliver(
            delivery_pb2.DeliverRequest(
                event=make_event(messageId="otlp-failed", type="identify", traits={"email": EMAIL})
            ),
            timeout=10,
        )
    return [retried.result, failed.result]


def assert_exported_tree(collector: Collector, results: list[delivery_pb2.DeliveryResult]) -> None:
    retried, failed = results
    assert retried.status == DeliveryStatus.DELIVERY_STATUS_DELIVERED
    assert retried.trace_id == CALLER_TRACE_ID
    assert failed.status == DeliveryStatus.DELIVERY_STATUS_FAILED_PERMANENT

    spans = collector.spans()
    in_caller_trace = [s for s in spans if s.trace_id.hex() == CALLER_TRACE_ID]
    [server] = [s for s in in_caller_trace if s.kind == Span.SPAN_KIND_SERVER]
    assert server.name == "datafly.bluecore.v1.DeliveryService/Deliver"
    assert server.parent_span_id.hex() == CALLER_SPAN_ID
    [deliver] = [s for s in in_caller_trace if s.parent_span_id == server.span_id]
    assert deliver.name == "bluecore.deliver"
    assert deliver.kind == Span.SPAN_KIND_INTERNAL
    assert attributes(deliver.attributes) == {
        "datafly.message_id": "otlp-retried",
        "datafly.event": "Product Viewed",
        "bluecore.event": "viewed_product",
        "delivery.status": "DELIVERED",
        "delivery.attempts": 2,
        "delivery.duplicate": False,
        "http.response.status_code": 202,
    }
    assert [event.name for event in deliver.events] == ["retry.backoff"]
    tries = sorted(
        (s for s in in_caller_trace if s.parent_span_id == deliver.span_id),
        key=lambda s: s.start_time_unix_nano,
    )
    assert [(s.name, s.kind) for s in tries] == [("POST", Span.SPAN_KIND_CLIENT)] * 2
    assert [attributes(s.attributes)["http.request.resend_count"] for s in tries] == [0, 1]
    assert [attributes(s.attributes)["http.response.status_code"] for s in tries] == [503, 202]
    assert [s.status.code for s in tries] == [Status.STATUS_CODE_ERROR, Status.STATUS_CODE_UNSET]
    assert len(in_caller_trace) == 4

    failed_trace = [s for s in spans if s.trace_id.hex() == failed.trace_id]
    [failed_deliver] = [s for s in failed_trace if s.name == "bluecore.deliver"]
    assert failed_deliver.status.code == Status.STATUS_CODE_ERROR
    assert attributes(failed_deliver.attributes)["delivery.reason"] == "HTTP_400"
    [failed_try] = [s for s in failed_trace if s.kind == Span.SPAN_KIND_CLIENT]
    assert failed_try.status.code == Status.STATUS_CODE_ERROR
    # A call without a traceparent starts a trace of its own: its server span is the root.
    [failed_server] = [s for s in failed_trace if s.kind == Span.SPAN_KIND_SERVER]
    assert failed_server.parent_span_id == b""

    for resource in collector.resources():
        assert resource["service.name"] == SERVICE
        assert resource["deployment.environment"] == "test"
    raw = collector.raw()
    assert NAMESPACE.encode() not in raw
    assert EMAIL.encode() not in raw
    texts = [str(value) for resource in collector.resources() for value in resource.values()]
    for span in spans:
        texts += [span.name, span.status.message]
        texts += [str(v) for v in attributes(span.attributes).values()]
        for event in span.events:
            texts += [event.name, *(str(v) for v in attributes(event.attributes).values())]
    assert not [text for text in texts if "@" in text]


async def test_spans_reach_an_otlp_grpc_collector_as_one_tree(sandbox, process_env):
    async with grpc_collector() as (collector, endpoint):
        env = process_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_SERVICE_NAME=SERVICE,
            OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test",
        )
        results = await deliver_two(sandbox, env)
    assert_exported_tree(collector, results)


async def test_spans_reach_an_otlp_http_protobuf_collector_as_one_tree(sandbox, process_env):
    async with http_collector() as (collector, endpoint):
        env = process_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_SERVICE_NAME=SERVICE,
            OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test",
        )
        results = await deliver_two(sandbox, env)
    assert_exported_tree(collector, results)


def spans_of_every_shape(*, light: bool = False) -> list[ReadableSpan]:
    """Finished SDK spans covering what an OTLP request can carry, over two resources.

    ``light``: the same spans from the sidecar's light tracer (plain ``ReadableSpan``s, no
    limits applied), which the encoder reads by another path.
    """
    wrap = light_tracer if light else (lambda tracer: tracer)
    exporter = InMemorySpanExporter()
    limits = SpanLimits(max_span_attributes=14, max_events=2, max_links=1)
    providers = [
        TracerProvider(
            resource=Resource({"service.name": "a", "n": 3, "f": 1.5}, schema_url="https://r"),
            span_limits=limits,
        ),
        TracerProvider(resource=Resource({"service.name": "b"})),
    ]
    for provider in providers:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    ours = wrap(providers[0].get_tracer("bluecore_sidecar", "1.2.3", schema_url="https://s"))
    other = wrap(providers[0].get_tracer("other"))
    remote = trace.SpanContext(
        int(CALLER_TRACE_ID, 16),
        int(CALLER_SPAN_ID, 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(1),
        trace_state=trace.TraceState([("vendor", "abc"), ("other", "1")]),
    )
    caller = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    values = {
        "text": "é✓",
        "empty": "",
        "negative": -5,
        "zero": 0,
        "large": 2**62,
        "false": False,
        "true": True,
        "float": 0.25,
        "texts": ("a", "b"),
        "ints": (1, -2),
        "long": "x" * 300,
        "bytes": b"\x00\xff",
        "mapping": {"nested": {"n": 1}, "list": ("x", 2.5), "none": None},
    }
    with ours.start_as_current_span(
        "server", context=caller, kind=trace.SpanKind.SERVER, attributes=values
    ) as server:
        server.set_attributes({"fourteenth": 1, "dropped": 2})  # over the limit of 14: counted
        for n in range(3):  # one more than the limit
            server.add_event("retry.backoff", {"attempt": n, "delay_seconds": 0.25})
        with other.start_as_current_span(
            "", links=[trace.Link(remote, {"k": "v"}), trace.Link(remote)]
        ) as nameless:
            nameless.set_status(trace.StatusCode.ERROR, "HTTP_400")
        with ours.start_as_current_span("POST", kind=trace.SpanKind.CLIENT) as client:
            client.set_status(trace.StatusCode.ERROR)
        with ours.start_as_current_span("ok", kind=trace.SpanKind.PRODUCER) as fine:
            fine.set_status(trace.StatusCode.OK)
            fine.add_event("")
    wrap(providers[1].get_tracer("z")).start_span("elsewhere", kind=trace.SpanKind.CONSUMER).end()
    ours.start_span("root again").end()
    made = list(exporter.get_finished_spans())
    # Made by hand: no times, no attributes, a start without an end and an end without one.
    context = trace.SpanContext(7, 8, is_remote=False)
    resource = made[0].resource
    made += [
        ReadableSpan("bare", context, resource=resource),
        ReadableSpan("started", context, resource=resource, start_time=5),
        ReadableSpan("ended", context, resource=resource, end_time=6),
    ]
    return made


class OtherSpan(ReadableSpan):
    """A ReadableSpan of another type: the encoder reads it through its properties."""

    @classmethod
    def of(cls, span: ReadableSpan) -> OtherSpan:
        return cls(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=span.attributes,
            events=span.events,
            links=span.links,
            kind=span.kind,
            status=span.status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )


def test_our_otlp_encoding_is_the_sdks_byte_for_byte():
    """The exporter's own encoder writes the very message the SDK's encoder builds."""
    spans = spans_of_every_shape()
    expected = encode_spans(spans)
    written = encode_export_request(spans)
    assert trace_service_pb2.ExportTraceServiceRequest.FromString(written) == expected
    assert written == expected.SerializeToString()
    assert len(expected.resource_spans) == 2
    server = expected.resource_spans[0].scope_spans[1].spans[-2]
    assert (server.name, server.dropped_attributes_count, server.dropped_events_count) == (
        "server",
        1,
        1,
    )
    # Encoded again (now partly from the caches), the bytes stay the same.
    assert encode_export_request(spans) == written
    assert encode_export_request([]) == b""


def test_light_spans_are_encoded_byte_for_byte_as_the_sdk_encodes_them():
    """The light tracer's spans take the encoder's short path; the bytes are the same."""
    spans = spans_of_every_shape(light=True)
    assert {type(span) for span in spans} == {ReadableSpan}
    expected = encode_spans(spans)
    written = encode_export_request(spans)
    assert written == expected.SerializeToString()
    assert encode_export_request(spans) == written
    # Mixed with the SDK's own spans and spans of another type, in one request: still the
    # SDK's grouping and bytes.
    sdk = spans_of_every_shape()
    mixed = [*spans, *sdk, *(OtherSpan.of(span) for span in sdk)]
    assert encode_export_request(mixed) == encode_spans(mixed).SerializeToString()


async def test_the_grpc_exporter_sends_our_bytes_before_and_after_it_reconnects(process_env):
    """The exporter sends the encoded request as it is; when the SDK rebuilds the channel
    (as it does after UNAVAILABLE), the new stub sends our bytes too."""
    spans = spans_of_every_shape(light=True)
    async with grpc_collector() as (collector, endpoint):
        process_env(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_EXPORTER_OTLP_INSECURE="true")
        exporter = grpc_span_exporter()
        try:
            assert await asyncio.to_thread(exporter.export, spans) is SpanExportResult.SUCCESS
            exporter._initialize_channel_and_stub()  # what the SDK's reconnect calls
            assert await asyncio.to_thread(exporter.export, spans[:1]) is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
    written = encode_export_request(spans) + encode_export_request(spans[:1])
    assert collector.raw() == written


def test_an_attribute_of_a_span_and_of_an_event_are_two_different_fields():
    """The same key and value on a span, its event and its resource are encoded for each
    place (the pair cache keys on the field too)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"attempt": 1}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = light_tracer(provider.get_tracer("bluecore_sidecar"))
    with tracer.start_as_current_span("outer", attributes={"attempt": 1}) as span:
        span.add_event("retry.backoff", {"attempt": 1})
    spans = list(exporter.get_finished_spans())
    assert encode_export_request(spans) == encode_spans(spans).SerializeToString()
