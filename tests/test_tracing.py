"""Tracing details, asserted on an in-memory exporter: tree, kinds, attributes, sampling, no PII."""

from __future__ import annotations

import dataclasses
import json
import random
import re

import grpc
import pytest
from bluecore_sidecar import __version__
from bluecore_sidecar.app import running_sidecar
from bluecore_sidecar.errors import ConfigError
from bluecore_sidecar.telemetry import configure_tracing
from bluecore_sidecar.tracing import LightTracer, light_tracer
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider, sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanKind, StatusCode

from .conftest import EMAIL, NAMESPACE, make_event, test_settings

Status = delivery_pb2.DeliveryStatus

CALLER_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"
SERVER_SPAN = "datafly.bluecore.v1.DeliveryService/Deliver"


def by_name(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def children(exporter: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    return sorted(
        (
            span
            for span in exporter.get_finished_spans()
            if span.parent is not None and span.parent.span_id == parent.context.span_id
        ),
        key=lambda span: span.start_time or 0,
    )


async def test_deliver_continues_the_callers_trace_with_one_client_span_per_try(
    stub, sandbox, span_exporter
):
    """SERVER span -> delivery span -> one CLIENT span per HTTP try, in the caller's trace."""
    sandbox.fail_next(1, 503)
    reply = await stub.Deliver(
        delivery_pb2.DeliverRequest(event=make_event(messageId="retried-1")),
        timeout=10,
        metadata=(("traceparent", TRACEPARENT),),
    )
    assert reply.result.status == Status.DELIVERY_STATUS_DELIVERED
    assert reply.result.trace_id == CALLER_TRACE_ID

    [server] = by_name(span_exporter, SERVER_SPAN)
    assert server.kind is SpanKind.SERVER
    assert format(server.context.trace_id, "032x") == CALLER_TRACE_ID
    assert server.parent is not None
    assert server.parent.is_remote
    assert format(server.parent.span_id, "016x") == CALLER_SPAN_ID
    assert server.attributes["rpc.system"] == "grpc"
    assert server.attributes["rpc.method"] == "Deliver"

    [deliver] = children(span_exporter, server)
    assert deliver.name == "bluecore.deliver"
    assert deliver.kind is SpanKind.INTERNAL
    assert dict(deliver.attributes) == {
        "datafly.message_id": "retried-1",
        "datafly.event": "Product Viewed",
        "bluecore.event": "viewed_product",
        "delivery.status": "DELIVERED",
        "delivery.attempts": 2,
        "delivery.duplicate": False,
        "http.response.status_code": 202,
    }
    assert deliver.status.status_code is StatusCode.UNSET
    assert [event.name for event in deliver.events] == ["retry.backoff"]
    assert deliver.events[0].attributes["attempt"] == 1

    first, second = children(span_exporter, deliver)
    for span in (first, second):
        assert span.name == "POST"
        assert span.kind is SpanKind.CLIENT
        assert span.attributes["http.request.method"] == "POST"
        assert span.attributes["url.full"] == sandbox.url
    assert first.attributes["http.request.resend_count"] == 0
    assert first.attributes["http.response.status_code"] == 503
    assert first.attributes["error.type"] == "503"
    assert first.status.status_code is StatusCode.ERROR
    assert second.attributes["http.request.resend_count"] == 1
    assert second.attributes["http.response.status_code"] == 202
    assert second.status.status_code is StatusCode.UNSET

    # Bluecore sees the trace too: each try carries the traceparent of its own CLIENT span.
    sent = [request.headers.get("traceparent", "") for request in sandbox.received]
    assert sent == [
        f"00-{CALLER_TRACE_ID}-{span.context.span_id:016x}-01" for span in (first, second)
    ]


async def test_the_callers_tracestate_goes_to_bluecore_with_the_traceparent(
    stub, sandbox, span_exporter
):
    """W3C trace context continues whole: a caller's ``tracestate`` rides along each try."""
    await stub.Deliver(
        delivery_pb2.DeliverRequest(event=make_event(messageId="with-state")),
        timeout=10,
        metadata=(("traceparent", TRACEPARENT), ("tracestate", "vendor=abc,other=1")),
    )
    [attempt] = by_name(span_exporter, "POST")
    [request] = sandbox.received
    assert request.headers["traceparent"] == (
        f"00-{CALLER_TRACE_ID}-{attempt.context.span_id:016x}-01"
    )
    assert request.headers["tracestate"] == "vendor=abc,other=1"
    assert "baggage" not in request.headers


async def test_tries_lost_to_a_dropped_connection_or_their_time_limit_are_error_spans(
    sandbox, span_exporter
):
    """A try with no answer is a red CLIENT span naming the error's type, with no status code."""
    settings = test_settings(sandbox.url)
    settings = dataclasses.replace(
        settings, retry=dataclasses.replace(settings.retry, attempt_timeout=0.3)
    )
    async with (
        running_sidecar(settings, {}, span_exporter=span_exporter) as sidecar,
        grpc.aio.insecure_channel(sidecar.grpc_address) as channel,
    ):
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        sandbox.reset_next(1)
        reset = await stub.Deliver(
            delivery_pb2.DeliverRequest(event=make_event(messageId="reset")), timeout=20
        )
        sandbox.delay(5.0, count=1)
        slow = await stub.Deliver(
            delivery_pb2.DeliverRequest(event=make_event(messageId="slow")), timeout=20
        )
    assert reset.result.status == slow.result.status == Status.DELIVERY_STATUS_DELIVERED
    tries = {}
    for deliver in by_name(span_exporter, "bluecore.deliver"):
        tries[deliver.attributes["datafly.message_id"]] = children(span_exporter, deliver)
    # A reset reads as either, depending on when aiohttp notices it.
    expected = {"reset": {"ClientOSError", "ServerDisconnectedError"}, "slow": {"CancelledError"}}
    for message_id, error_types in expected.items():
        lost, accepted = tries[message_id]
        assert lost.attributes["error.type"] in error_types
        assert lost.status.status_code is StatusCode.ERROR
        assert lost.status.description == lost.attributes["error.type"]
        assert "http.response.status_code" not in lost.attributes
        assert [s.attributes["http.request.resend_count"] for s in (lost, accepted)] == [0, 1]
        assert accepted.attributes["http.response.status_code"] == 202
        assert accepted.status.status_code is StatusCode.UNSET


async def test_permanent_failure_marks_delivery_and_try_as_errors(stub, sandbox, span_exporter):
    """A 400 is one try, an ERROR CLIENT span and an ERROR delivery span with the reason."""
    sandbox.fail_next(1, 400)
    reply = await stub.Deliver(delivery_pb2.DeliverRequest(event=make_event()), timeout=10)
    assert reply.result.status == Status.DELIVERY_STATUS_FAILED_PERMANENT

    [deliver] = by_name(span_exporter, "bluecore.deliver")
    assert deliver.status.status_code is StatusCode.ERROR
    assert deliver.status.description == "HTTP_400"
    assert deliver.attributes["delivery.status"] == "FAILED_PERMANENT"
    assert deliver.attributes["delivery.reason"] == "HTTP_400"
    assert deliver.attributes["delivery.attempts"] == 1
    [attempt] = children(span_exporter, deliver)
    assert attempt.status.status_code is StatusCode.ERROR
    assert attempt.attributes["http.response.status_code"] == 400
    assert reply.result.trace_id == format(deliver.context.trace_id, "032x")


async def test_skipped_event_has_a_delivery_span_and_no_client_span(stub, span_exporter):
    """A consent skip is decided without HTTP: the delivery span says why."""
    event = make_event(context={"consent": {"marketing": False}})
    reply = await stub.Deliver(delivery_pb2.DeliverRequest(event=event), timeout=10)
    assert reply.result.status == Status.DELIVERY_STATUS_SKIPPED_NO_CONSENT

    [deliver] = by_name(span_exporter, "bluecore.deliver")
    assert deliver.attributes["delivery.status"] == "SKIPPED_NO_CONSENT"
    assert deliver.attributes["delivery.reason"] == reply.result.reason
    assert deliver.attributes["delivery.attempts"] == 0
    assert children(span_exporter, deliver) == []
    assert by_name(span_exporter, "POST") == []


async def test_batch_has_one_delivery_span_per_event_under_the_rpc(stub, span_exporter):
    """DeliverBatch shows each event as its own child of the RPC span."""
    events = [make_event(messageId=f"batch-{n}") for n in range(3)]
    reply = await stub.DeliverBatch(delivery_pb2.DeliverBatchRequest(events=events), timeout=10)
    assert [r.status for r in reply.results] == [Status.DELIVERY_STATUS_DELIVERED] * 3

    [server] = by_name(span_exporter, "datafly.bluecore.v1.DeliveryService/DeliverBatch")
    assert server.attributes["datafly.batch_size"] == 3
    delivered = children(span_exporter, server)
    assert [span.name for span in delivered] == ["bluecore.deliver"] * 3
    assert sorted(span.attributes["datafly.message_id"] for span in delivered) == [
        "batch-0",
        "batch-1",
        "batch-2",
    ]
    for span in delivered:
        [attempt] = children(span_exporter, span)
        assert attempt.name == "POST"
    assert {r.trace_id for r in reply.results} == {format(server.context.trace_id, "032x")}


async def test_no_token_or_email_in_any_span_name_attribute_event_or_resource(
    stub, sandbox, span_exporter
):
    """The namespace token and emails never reach a span, even from a free-form field."""
    sandbox.fail_next(1, 503)
    events = [
        make_event(messageId=f"id-of-{EMAIL}"),
        make_event(messageId="identify-1", type="identify", traits={"email": EMAIL}),
        make_event(messageId="custom-1", event=f"Signed up {EMAIL}"),
    ]
    await stub.DeliverBatch(delivery_pb2.DeliverBatchRequest(events=events), timeout=10)

    spans = span_exporter.get_finished_spans()
    assert len(spans) >= 5
    dumped = "\n".join(span.to_json() for span in spans)
    assert NAMESPACE not in dumped
    assert EMAIL not in dumped
    assert "@" not in dumped
    message_ids = {span.attributes.get("datafly.message_id") for span in spans}
    # the email-shaped id is scrubbed to a tag, not dropped
    assert any(re.fullmatch(r"<email:[0-9a-f]{12}>", str(m)) for m in message_ids)


async def test_url_attribute_drops_query_and_credentials(sandbox, span_exporter):
    """Whatever sits in the API URL's query or userinfo stays out of ``url.full``."""
    host_part = sandbox.url.removeprefix("http://")
    # Settings refuse credentials in BLUECORE_API_URL; the span filter is a second line.
    url = f"http://user:pw@{host_part}?api_key=hidden"
    settings = dataclasses.replace(test_settings(sandbox.url), api_url=url)
    async with (
        running_sidecar(settings, {}, span_exporter=span_exporter) as sidecar,
        grpc.aio.insecure_channel(sidecar.grpc_address) as channel,
    ):
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        await stub.Deliver(delivery_pb2.DeliverRequest(event=make_event()), timeout=10)
    [attempt] = by_name(span_exporter, "POST")
    assert attempt.attributes["url.full"] == sandbox.url
    assert "hidden" not in attempt.to_json()


async def test_sampler_comes_from_the_environment(sandbox, process_env):
    """OTEL_TRACES_SAMPLER, read by the SDK, decides: always_off exports nothing."""
    exporter = InMemorySpanExporter()
    env = process_env(OTEL_TRACES_SAMPLER="always_off")
    async with (
        running_sidecar(test_settings(sandbox.url), env, span_exporter=exporter) as sidecar,
        grpc.aio.insecure_channel(sidecar.grpc_address) as channel,
    ):
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        reply = await stub.Deliver(delivery_pb2.DeliverRequest(event=make_event()), timeout=10)
    assert reply.result.status == Status.DELIVERY_STATUS_DELIVERED
    assert exporter.get_finished_spans() == ()
    assert len(reply.result.trace_id) == 32  # the trace id exists even when not sampled


async def test_parent_based_ratio_follows_a_sampled_caller(sandbox, process_env):
    """parentbased_traceidratio at 0 still records a call whose caller sampled it."""
    exporter = InMemorySpanExporter()
    env = process_env(OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0")
    async with (
        running_sidecar(test_settings(sandbox.url), env, span_exporter=exporter) as sidecar,
        grpc.aio.insecure_channel(sidecar.grpc_address) as channel,
    ):
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        await stub.Deliver(
            delivery_pb2.DeliverRequest(event=make_event(messageId="sampled")),
            timeout=10,
            metadata=(("traceparent", TRACEPARENT),),
        )
        await stub.Deliver(
            delivery_pb2.DeliverRequest(event=make_event(messageId="unsampled")), timeout=10
        )
    ids = {span.attributes.get("datafly.message_id") for span in exporter.get_finished_spans()}
    assert ids == {None, "sampled"}  # the sampled call's spans only (None: server, POST)


async def test_an_unsampled_call_sends_no_traceparent_and_keeps_its_trace_id(sandbox, process_env):
    """A call the sampler drops makes no span and no CLIENT hook runs for its tries.

    Its result still names its trace, and a sampled call on the same sidecar is traced and
    sends its traceparent as usual.
    """
    exporter = InMemorySpanExporter()
    env = process_env(OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0")
    unsampled_parent = f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-00"
    async with (
        running_sidecar(test_settings(sandbox.url), env, span_exporter=exporter) as sidecar,
        grpc.aio.insecure_channel(sidecar.grpc_address) as channel,
    ):
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        dropped = await stub.Deliver(
            delivery_pb2.DeliverRequest(event=make_event(messageId="dropped")),
            timeout=10,
            metadata=(("traceparent", unsampled_parent),),
        )
        batch = await stub.DeliverBatch(
            delivery_pb2.DeliverBatchRequest(
                events=[make_event(messageId="b-1"), make_event(messageId="b-2")]
            ),
            timeout=10,
        )
        assert exporter.get_finished_spans() == ()
        sampled = await stub.Deliver(
            delivery_pb2.DeliverRequest(event=make_event(messageId="sampled")),
            timeout=10,
            metadata=(("traceparent", TRACEPARENT),),
        )
    assert dropped.result.trace_id == CALLER_TRACE_ID
    assert all(len(result.trace_id) == 32 for result in batch.results)
    assert sampled.result.status == Status.DELIVERY_STATUS_DELIVERED
    sent = [request.headers.get("traceparent") for request in sandbox.received]
    assert sent[:3] == [None, None, None]
    assert sent[3] is not None
    assert CALLER_TRACE_ID in sent[3]
    assert {span.name for span in exporter.get_finished_spans()} == {
        SERVER_SPAN,
        "bluecore.deliver",
        "POST",
    }


async def test_tracing_off_when_no_endpoint_is_configured(sandbox):
    """With no OTEL endpoint nothing is traced and no traceparent goes to Bluecore.

    A caller's own trace id is still echoed in the result, so its trace can be found.
    """
    async with (
        running_sidecar(test_settings(sandbox.url), {}) as sidecar,
        grpc.aio.insecure_channel(sidecar.grpc_address) as channel,
    ):
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        plain = await stub.Deliver(
            delivery_pb2.DeliverRequest(event=make_event(messageId="plain")), timeout=10
        )
        traced = await stub.Deliver(
            delivery_pb2.DeliverRequest(event=make_event(messageId="traced-caller")),
            timeout=10,
            metadata=(("traceparent", TRACEPARENT),),
        )
    assert plain.result.status == Status.DELIVERY_STATUS_DELIVERED
    assert plain.result.trace_id == ""
    assert traced.result.trace_id == CALLER_TRACE_ID
    assert [r.headers.get("traceparent") for r in sandbox.received] == [None, None]


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_SERVICE_NAME": "sidecar"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_TRACES_EXPORTER": "none"},
    ],
)
def test_configure_tracing_is_off_without_endpoint_or_when_disabled(env):
    assert configure_tracing(env) is None


def test_configure_tracing_leaves_sampler_and_resource_to_the_sdk(process_env):
    """The SDK's own environment handling fills in sampler and resource; we add the version."""
    env = process_env(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4317",
        OTEL_SERVICE_NAME="sidecar-eu",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=prod,k8s.pod.name=web%2D1",
        OTEL_TRACES_SAMPLER="parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0.1",
    )
    provider = configure_tracing(env)
    assert provider is not None
    try:
        assert "TraceIdRatioBased{0.1}" in provider.sampler.get_description()
        assert provider.sampler.get_description().startswith("ParentBased")
        attributes = provider.resource.attributes
        assert attributes["service.name"] == "sidecar-eu"
        assert attributes["deployment.environment"] == "prod"
        assert attributes["k8s.pod.name"] == "web-1"
        assert attributes["service.version"] == __version__
    finally:
        provider.shutdown()


def test_service_name_defaults_to_the_sidecars_own(process_env):
    provider = configure_tracing(process_env(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4317"))
    assert provider is not None
    try:
        assert provider.resource.attributes["service.name"] == "bluecore-sidecar"
    finally:
        provider.shutdown()


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
    ],
)
def test_an_exporter_we_cannot_build_stops_start_up_naming_the_variable(env, variable):
    """Choosing the exporter is ours; the values the SDK parses (sampler, headers) are its."""
    with pytest.raises(ConfigError, match=variable):
        configure_tracing({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", **env})


async def test_console_exporter_writes_spans_to_stderr(sandbox, capsys, process_env):
    """OTEL_TRACES_EXPORTER=console prints each span as JSON on stderr, for debugging."""
    env = process_env(OTEL_TRACES_EXPORTER="console")
    async with (
        running_sidecar(test_settings(sandbox.url), env) as sidecar,
        grpc.aio.insecure_channel(sidecar.grpc_address) as channel,
    ):
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        await stub.Deliver(delivery_pb2.DeliverRequest(event=make_event()), timeout=10)
    err = capsys.readouterr().err
    names = {span["name"] for span in json_objects(err) if "context" in span}
    assert {"bluecore.deliver", "POST", SERVER_SPAN} <= names


def json_objects(text: str) -> list[dict[str, object]]:
    """Every JSON object embedded in ``text`` (the console exporter pretty-prints)."""
    decoder = json.JSONDecoder()
    found: list[dict[str, object]] = []
    index = text.find("{")
    while index != -1:
        try:
            value, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            end = index + 1
        else:
            if isinstance(value, dict):
                found.append(value)
        index = text.find("{", end)
    return found


def test_light_spans_keep_the_sdks_rules_and_reach_its_processors(process_env):
    """Status, attributes and events follow the SDK's rules; an ended span changes no more."""
    exporter = InMemorySpanExporter()
    provider = configure_tracing(process_env(), exporter)
    assert provider is not None
    tracer = light_tracer(provider.get_tracer("bluecore_sidecar"))
    assert isinstance(tracer, LightTracer)
    with tracer.start_as_current_span("outer", attributes={"a": 1}) as outer:
        inner = tracer.start_span("inner", kind=SpanKind.CLIENT)
        inner.set_status(StatusCode.OK)
        inner.set_status(StatusCode.ERROR, "ignored: OK is final")
        inner.update_name("renamed")
        inner.record_exception(ValueError(f"text with {EMAIL}"))
        inner.end()
        inner.end()
        inner.set_attribute("late", 1)
        inner.set_attributes({"late": 2})
        inner.add_event("late")
        inner.update_name("late")
        inner.set_status(StatusCode.ERROR)
        assert not inner.is_recording()
        outer.set_status(StatusCode.UNSET)
        outer.set_status(trace.Status(StatusCode.ERROR, "failed"))
        outer.set_attributes({"b": True})
    provider.shutdown()
    done = {span.name: span for span in exporter.get_finished_spans()}
    assert set(done) == {"outer", "renamed"}
    renamed, outer_span = done["renamed"], done["outer"]
    assert renamed.parent is not None
    assert renamed.parent.span_id == outer_span.context.span_id
    assert renamed.kind is SpanKind.CLIENT
    assert renamed.status.status_code is StatusCode.OK
    assert dict(renamed.attributes) == {}
    assert [(e.name, dict(e.attributes)) for e in renamed.events] == [
        ("exception", {"exception.type": "ValueError"})
    ]
    assert outer_span.status.status_code is StatusCode.ERROR
    assert outer_span.status.description == "failed"
    assert dict(outer_span.attributes) == {"a": 1, "b": True}
    assert outer_span.resource is provider.resource
    assert outer_span.instrumentation_scope.name == "bluecore_sidecar"
    assert outer_span.start_time <= renamed.start_time <= renamed.end_time <= outer_span.end_time


def test_the_sdks_own_spans_stay_where_light_spans_would_not_apply_its_limits(process_env):
    """A limit on attribute values, or a tracer that is not the SDK's, keeps the SDK's spans."""
    provider = configure_tracing(
        process_env(OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT="8"), InMemorySpanExporter()
    )
    assert provider is not None
    sdk_tracer = provider.get_tracer("bluecore_sidecar")
    assert light_tracer(sdk_tracer) is sdk_tracer
    no_op = trace.NoOpTracer()
    assert light_tracer(no_op) is no_op
    provider.shutdown()


async def test_a_dropped_root_span_is_not_recorded_and_has_a_trace_id(process_env):
    """The sampler decides for the light tracer too: always_off gives non-recording spans."""
    exporter = InMemorySpanExporter()
    provider = configure_tracing(process_env(OTEL_TRACES_SAMPLER="always_off"), exporter)
    assert provider is not None
    tracer = light_tracer(provider.get_tracer("bluecore_sidecar"))
    span = tracer.start_span("dropped")
    assert not span.is_recording()
    assert span.get_span_context().is_valid
    assert not span.get_span_context().trace_flags.sampled
    span.end()
    provider.shutdown()
    assert exporter.get_finished_spans() == ()


class _GivenIds(RandomIdGenerator):
    """The SDK's random ids, except that the next trace ids are the ones given."""

    def __init__(self) -> None:
        self.trace_ids: list[int] = []

    def generate_trace_id(self) -> int:
        return self.trace_ids.pop() if self.trace_ids else super().generate_trace_id()


def _trace_ids(bound: int, count: int) -> list[int]:
    """Random trace ids, and ids whose low 64 bits sit at and around ``bound``."""
    rng = random.Random(bound)
    low = (1 << 64) - 1
    ids = [rng.getrandbits(128) or 1 for _ in range(count)]
    for edge in (bound - 1, bound, bound + 1, 0, 1, low):
        if 0 <= edge <= low:
            ids += [(rng.getrandbits(64) << 64) | edge, edge or 1]
    return ids


def _parents(trace_id: int) -> list[trace.Span | None]:
    """No parent, and a remote and a local parent, sampled or not, in ``trace_id``."""
    state = trace.TraceState([("vendor", "x")])
    return [None] + [
        trace.NonRecordingSpan(
            trace.SpanContext(trace_id, 0xABC, remote, trace.TraceFlags(flags), state)
        )
        for remote in (True, False)
        for flags in (0, 1)
    ]


@pytest.mark.parametrize(
    "sampler",
    [
        sampling.ALWAYS_ON,
        sampling.ALWAYS_OFF,
        sampling.DEFAULT_ON,
        sampling.DEFAULT_OFF,
        *(sampling.TraceIdRatioBased(rate) for rate in (0.0, 0.1, 0.5, 1.0)),
        *(sampling.ParentBasedTraceIdRatio(rate) for rate in (0.0, 0.1, 0.5, 1.0)),
        sampling.ParentBased(sampling.TraceIdRatioBased(0.3), sampling.ALWAYS_OFF),
    ],
    ids=lambda sampler: sampler.get_description(),
)
def test_the_light_tracers_decisions_are_the_sdk_samplers_for_every_trace_id(sampler):
    """The samplers OTEL_TRACES_SAMPLER names are decided without asking them, and the
    answers are theirs: sampled or not, recording or not, the trace state, for roots and for
    remote and local parents, sampled or not, over random ids and ids at the ratio's bound."""
    ids = _GivenIds()
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler, id_generator=ids)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = light_tracer(provider.get_tracer("bluecore_sidecar"))
    assert isinstance(tracer, LightTracer)
    bound = getattr(getattr(sampler, "_root", sampler), "bound", 1 << 63)
    attributes = {"rpc.system": "grpc"}
    for trace_id in _trace_ids(bound, 300):
        for parent in _parents(trace_id):
            context = trace.set_span_in_context(parent) if parent is not None else None
            if parent is None:
                ids.trace_ids.append(trace_id)
            span = tracer.start_span("s", context, trace.SpanKind.SERVER, attributes)
            expected = sampler.should_sample(context, trace_id, "s", trace.SpanKind.SERVER)
            got = span.get_span_context()
            assert got.trace_id == trace_id
            assert span.is_recording() == expected.decision.is_recording()
            assert got.trace_flags.sampled == expected.decision.is_sampled()
            assert got.trace_state == (expected.trace_state or trace.DEFAULT_TRACE_STATE)
            assert got.is_valid
            if span.is_recording():
                span.end()
                assert exporter.get_finished_spans()[-1].attributes == attributes
    provider.shutdown()


class _Vetting(sampling.Sampler):
    """A sampler of someone else's: records some spans without sampling them, adds a mark."""

    def __init__(self) -> None:
        self.asked = 0

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None):
        self.asked += 1
        decision = sampling.Decision.RECORD_ONLY if trace_id % 2 else sampling.Decision.DROP
        state = trace.TraceState([("vetting", str(self.asked))])
        return sampling.SamplingResult(decision, {"vetted": True}, state)

    def get_description(self) -> str:
        return "Vetting"


class _Ratio(sampling.TraceIdRatioBased):
    """A ratio sampler of someone else's making (a subclass may decide differently)."""

    def __init__(self) -> None:
        super().__init__(0.5)
        self.asked = 0

    def should_sample(self, *args, **kwargs):
        self.asked += 1
        return super().should_sample(*args, **kwargs)


@pytest.mark.parametrize(
    "sampler",
    [
        _Vetting(),
        _Ratio(),
        sampling.ParentBased(_Vetting(), _Vetting(), _Vetting(), _Vetting(), _Vetting()),
    ],
    ids=["custom", "subclass", "parent-based-custom"],
)
def test_any_other_sampler_is_asked_for_every_span_that_is_not_a_sampled_child(sampler):
    """Samplers the light tracer does not know decide themselves, and their answer stands:
    recording without sampling, their attributes and their trace state."""
    provider = TracerProvider(sampler=sampler)
    tracer = light_tracer(provider.get_tracer("bluecore_sidecar"))
    delegate = getattr(sampler, "_root", sampler)
    remote = trace.NonRecordingSpan(
        trace.SpanContext(0x1234567890ABCDEF1234567890ABCDEF, 0xABC, True, trace.TraceFlags(0))
    )
    spans = [tracer.start_span(f"root {n}") for n in range(20)]
    spans += [tracer.start_span("child", trace.set_span_in_context(remote)) for _ in range(5)]
    asked = getattr(delegate, "asked", 0) + sum(
        getattr(getattr(sampler, name, None), "asked", 0)
        for name in ("_remote_parent_not_sampled",)
    )
    assert asked == 25
    for span in spans:
        ctx = span.get_span_context()
        if isinstance(sampler, _Ratio):
            assert ctx.trace_flags.sampled == (ctx.trace_id & ((1 << 64) - 1) < sampler.bound)
            continue
        assert not ctx.trace_flags.sampled
        assert span.is_recording() == bool(ctx.trace_id % 2)
        assert ctx.trace_state.get("vetting")
        if span.is_recording():
            assert span.attributes == {"vetted": True}
    provider.shutdown()


async def test_with_the_sdks_own_spans_tries_are_traced_as_with_light_ones(sandbox, process_env):
    """Where the SDK's spans stay (a value length limit), a sampled call still gets its
    CLIENT span under the delivery span and sends its traceparent; an unsampled one gets
    neither."""
    exporter = InMemorySpanExporter()
    env = process_env(OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT="64")
    unsampled = f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-00"
    async with (
        running_sidecar(test_settings(sandbox.url), env, span_exporter=exporter) as sidecar,
        grpc.aio.insecure_channel(sidecar.grpc_address) as channel,
    ):
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        for n, parent in enumerate((TRACEPARENT, unsampled)):
            reply = await stub.Deliver(
                delivery_pb2.DeliverRequest(event=make_event(messageId=f"sdk-{n}")),
                timeout=10,
                metadata=(("traceparent", parent),),
            )
            assert reply.result.status == Status.DELIVERY_STATUS_DELIVERED, reply.result
    [server] = by_name(exporter, SERVER_SPAN)
    [deliver] = children(exporter, server)
    [attempt] = children(exporter, deliver)
    assert (attempt.name, attempt.kind) == ("POST", SpanKind.CLIENT)
    assert type(attempt).__name__ != "RecordingSpan"
    sent = [request.headers.get("traceparent") for request in sandbox.received]
    assert sent[0] == f"00-{CALLER_TRACE_ID}-{attempt.context.span_id:016x}-01"
    assert sent[1] is None
    assert len(exporter.get_finished_spans()) == 3
