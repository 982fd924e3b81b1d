"""The JSON door over a real socket, with aiohttp's client: the Connect protocol (JSON and
binary) and POST /v1/events, answered by the same edge and pipeline as gRPC."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from bluecore_sidecar.config import Settings
from bluecore_sidecar.errors import ERROR_DOMAIN, ConfigError, DeadlineExceeded
from bluecore_sidecar.http_door import HttpDoor, _until, connect_code, http_status
from bluecore_sidecar.interceptor import Admission, Edge
from bluecore_sidecar.service import DeliveryService, HealthService
from bluecore_sidecar.telemetry import Metrics
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from .conftest import EMAIL, NAMESPACE, eventually, make_event, seed_purchase_body, serving
from .test_metrics import scrape

SERVICE = "datafly.bluecore.v1.DeliveryService"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
EVENTS = Path(__file__).resolve().parents[1] / "examples" / "events"
CONNECT_JSON = {"Content-Type": "application/json", "Connect-Protocol-Version": "1"}


def seed_event() -> dict[str, Any]:
    """The seed's Order Completed event as Signal writes it (examples/events/)."""
    event: dict[str, Any] = json.loads((EVENTS / "order_completed.json").read_text())
    return event


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"a": value}
    return value


async def post(
    url: str, body: bytes | str | dict[str, Any] | list[Any], headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=data, headers=headers) as response,
    ):
        return response.status, dict(response.headers), await response.read()


def error_info(body: bytes) -> tuple[dict[str, Any], error_details_pb2.ErrorInfo]:
    """The Connect error JSON and its ErrorInfo, decoded from the detail's base64 value."""
    error = json.loads(body)
    [detail] = [d for d in error["details"] if d["type"] == "google.rpc.ErrorInfo"]
    value = detail["value"]
    assert "=" not in value  # unpadded, as the protocol asks
    info = error_details_pb2.ErrorInfo.FromString(base64.b64decode(value + "=" * (-len(value) % 4)))
    return error, info


# -- Connect ---------------------------------------------------------------------------------


async def test_connect_json_deliver_sends_the_seed_body_and_continues_the_trace(
    sidecar, sandbox, span_exporter
):
    status, headers, body = await post(
        f"{sidecar.http_url}/{SERVICE}/Deliver",
        {"event": seed_event()},
        {**CONNECT_JSON, "traceparent": TRACEPARENT, "Connect-Timeout-Ms": "10000"},
    )
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    result = json.loads(body)["result"]
    assert result["status"] == "DELIVERY_STATUS_DELIVERED"
    assert result["traceId"] == TRACE_ID
    [received] = sandbox.received_events("purchase")
    assert received.body == seed_purchase_body(NAMESPACE)
    [server] = [s for s in span_exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert server.name == f"{SERVICE}/Deliver"
    assert server.context.trace_id == int(TRACE_ID, 16)
    assert server.attributes["rpc.system"] == "connect_rpc"
    assert server.status.status_code != StatusCode.ERROR


async def test_connect_binary_deliver_answers_protobuf(sidecar, sandbox):
    request = delivery_pb2.DeliverRequest(event=make_event(messageId="bin-1"))
    status, headers, body = await post(
        f"{sidecar.http_url}/{SERVICE}/Deliver",
        request.SerializeToString(),
        {"Content-Type": "application/proto", "Connect-Protocol-Version": "1"},
    )
    assert (status, headers["Content-Type"]) == (200, "application/proto")
    result = delivery_pb2.DeliverResponse.FromString(body).result
    assert result.status == delivery_pb2.DELIVERY_STATUS_DELIVERED
    assert len(sandbox.received) == 1


async def test_connect_preview_shows_the_body_with_the_token_redacted_and_sends_nothing(
    sidecar, sandbox
):
    status, _, body = await post(
        f"{sidecar.http_url}/{SERVICE}/Preview", {"event": seed_event()}, CONNECT_JSON
    )
    assert status == 200
    answer = json.loads(body)
    assert json.loads(answer["bluecoreBody"])["event"] == "purchase"
    assert NAMESPACE not in body.decode()
    assert sandbox.received == []


async def test_connect_errors_carry_the_same_code_and_error_info_as_grpc(sidecar, stub):
    status, headers, body = await post(f"{sidecar.http_url}/{SERVICE}/Deliver", {}, CONNECT_JSON)
    assert (status, headers["Content-Type"]) == (400, "application/json")
    error, info = error_info(body)
    assert error["code"] == "invalid_argument"

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Deliver(delivery_pb2.DeliverRequest(), timeout=5)
    grpc_status = rpc_status.from_call(refused.value)
    assert grpc_status is not None
    grpc_info = error_details_pb2.ErrorInfo()
    grpc_status.details[0].Unpack(grpc_info)
    assert info == grpc_info
    assert (info.reason, info.domain) == ("EVENT_MISSING", ERROR_DOMAIN)
    assert error["message"] == grpc_status.message


async def test_connect_batch_over_the_limit_is_refused_as_grpc_refuses_it(start_sidecar):
    sidecar = await start_sidecar(batch_limit=2)
    events = [{"messageId": f"m-{i}"} for i in range(3)]
    status, _, body = await post(
        f"{sidecar.http_url}/{SERVICE}/DeliverBatch", {"events": events}, CONNECT_JSON
    )
    assert status == 400
    error, info = error_info(body)
    assert (error["code"], info.reason, info.metadata["limit"]) == (
        "invalid_argument",
        "BATCH_TOO_LARGE",
        "2",
    )


async def test_connect_timeout_bounds_the_delivery(sidecar, sandbox):
    """Connect-Timeout-Ms is the call's deadline: retries stop before it, as under gRPC."""
    sandbox.delay(5.0)
    started = time.monotonic()
    status, _, body = await post(
        f"{sidecar.http_url}/{SERVICE}/Deliver",
        {"event": seed_event()},
        {**CONNECT_JSON, "Connect-Timeout-Ms": "500"},
    )
    elapsed = time.monotonic() - started
    # Bounded by the 500 ms Connect deadline, not the upstream's 5 s delay.
    assert elapsed < 4.0
    # The pipeline answers before the deadline, as over gRPC: an outcome, not an error.
    assert status == 200
    assert json.loads(body)["result"]["status"] == "DELIVERY_STATUS_FAILED_RETRYABLE"


async def test_a_call_that_outlives_its_timeout_is_cut_with_deadline_exceeded():
    """The door's backstop when a handler would not answer in time, as gRPC cuts the call."""
    loop = asyncio.get_running_loop()
    with pytest.raises(DeadlineExceeded):
        async with _until(loop.time() + 0.05):
            await asyncio.sleep(5)
    assert connect_code(DeadlineExceeded("X", "y").code) == "deadline_exceeded"
    assert http_status(DeadlineExceeded("X", "y")) == 504


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        ({"Connect-Protocol-Version": "2"}, "{}", "UNSUPPORTED_PROTOCOL_VERSION"),
        ({"Connect-Timeout-Ms": "soon"}, "{}", "BAD_TIMEOUT"),
        ({"Connect-Timeout-Ms": "12345678901"}, "{}", "BAD_TIMEOUT"),
        ({}, b"\xff\xfe{}", "MALFORMED_REQUEST"),
        ({}, "[]", "MALFORMED_REQUEST"),
        ({}, '{"event": {"timestamp": 5}}', "MALFORMED_REQUEST"),
        ({}, "{} {}", "MALFORMED_REQUEST"),
    ],
)
async def test_connect_requests_that_are_unusable_as_a_whole(
    sidecar, sandbox, headers, body, reason
):
    status, _, answer = await post(
        f"{sidecar.http_url}/{SERVICE}/Deliver", body, {**CONNECT_JSON, **headers}
    )
    assert status == 400
    error, info = error_info(answer)
    assert (error["code"], info.reason) == ("invalid_argument", reason)
    assert sandbox.received == []


@pytest.mark.parametrize(
    ("body", "problem"),
    [("", "empty"), ("  \n", "empty"), ('[{"messageId": "a"}, 7]', "event 2 of the batch")],
)
async def test_events_bodies_that_are_not_events(sidecar, body, problem):
    status, _, answer = await post(
        f"{sidecar.http_url}/v1/events", body, {"Content-Type": "application/json"}
    )
    assert status == 400
    assert problem in json.loads(answer)["message"]


async def test_connect_overload_is_429_with_retry_after(start_sidecar, sandbox):
    sidecar = await start_sidecar(max_inflight_calls=1)
    sandbox.delay(1.0, count=1)
    url = f"{sidecar.http_url}/{SERVICE}/Deliver"
    slow = asyncio.create_task(post(url, {"event": seed_event()}, CONNECT_JSON))
    await eventually(lambda: sidecar.admission.in_flight, what="the slow call admitted")
    status, headers, body = await post(url, {"event": make_event_json("m-2")}, CONNECT_JSON)
    assert (status, headers["Retry-After"]) == (429, "1")
    error, info = error_info(body)
    assert (error["code"], info.reason) == ("resource_exhausted", "OVERLOADED")
    assert (await slow)[0] == 200


def make_event_json(message_id: str) -> dict[str, Any]:
    event = seed_event()
    event["messageId"] = message_id
    return event


@pytest.mark.parametrize("levels", [31, 32])
async def test_connect_json_refuses_exactly_the_depth_grpc_refuses(sidecar, levels):
    """31 nested objects under a property still decode over gRPC, 32 are TOO_DEEP: same here."""
    event = make_event_json(f"deep-{levels}")
    event["properties"]["nested"] = deep(levels)
    request = delivery_pb2.DeliverRequest()
    json_format.ParseDict({"event": event}, request)
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        send_bytes = channel.unary_unary(f"/{SERVICE}/Deliver", request_serializer=None)
        try:
            await send_bytes(request.SerializeToString(), timeout=10)
            grpc_reason = None
        except grpc.aio.AioRpcError as refused:
            grpc_reason = "TOO_DEEP" if "deeper" in (refused.details() or "") else "other"
    assert grpc_reason == (None if levels == 31 else "TOO_DEEP")  # the boundary is real

    event["messageId"] += "-door"
    status, _, body = await post(
        f"{sidecar.http_url}/{SERVICE}/Deliver", {"event": event}, CONNECT_JSON
    )
    door_reason = None if status == 200 else error_info(body)[1].reason
    assert door_reason == grpc_reason


async def test_hostile_nesting_is_a_clean_too_deep(sidecar):
    text = '{"event": {"properties": ' + '{"a":' * 5000 + "{}" + "}" * 5000 + "}}"
    status, _, body = await post(f"{sidecar.http_url}/{SERVICE}/Deliver", text, CONNECT_JSON)
    assert status == 400
    assert error_info(body)[1].reason == "TOO_DEEP"


async def test_connect_unknown_content_type_is_415(sidecar):
    status, headers, _ = await post(
        f"{sidecar.http_url}/{SERVICE}/Deliver", "{}", {"Content-Type": "text/plain"}
    )
    assert status == 415
    assert "application/json" in headers["Accept-Post"]


async def test_watch_deliveries_is_not_on_the_door(sidecar):
    """Server streaming needs Connect's streaming protocol: gRPC only."""
    status, _, _ = await post(f"{sidecar.http_url}/{SERVICE}/WatchDeliveries", {}, CONNECT_JSON)
    assert status == 404


# -- /v1/events ------------------------------------------------------------------------------


async def test_events_takes_signals_json_as_is_and_answers_the_result(sidecar, sandbox):
    event = seed_event()
    event |= {"channel": "web", "sentAt": "2026-01-01T00:00:00Z", "integrations": {"All": True}}
    event["context"] |= {"library": {"name": "analytics.js", "version": "4.1"}, "unknown": 1}
    status, _, body = await post(
        f"{sidecar.http_url}/v1/events", event, {"Content-Type": "application/json"}
    )
    assert status == 200
    result = json.loads(body)
    assert (result["messageId"], result["status"]) == (
        event["messageId"],
        "DELIVERY_STATUS_DELIVERED",
    )
    [received] = sandbox.received_events("purchase")
    assert received.body == seed_purchase_body(NAMESPACE)


@pytest.mark.parametrize("form", ["array", "lines"])
async def test_events_batch_answers_every_result_in_order(sidecar, sandbox, form):
    """Per-event outcomes are data: one event without consent does not fail the others."""
    first, second, third = (make_event_json(f"{form}-{i}") for i in range(3))
    second["context"]["consent"]["marketing"] = False
    if form == "array":
        body, media = json.dumps([first, second, third]), "application/json"
    else:
        body, media = (
            "\n".join(json.dumps(e) for e in (first, second, third)) + "\n",
            ("application/x-ndjson"),
        )
    status, _, answer = await post(f"{sidecar.http_url}/v1/events", body, {"Content-Type": media})
    assert status == 200
    results = json.loads(answer)["results"]
    assert [(r["messageId"], r["status"]) for r in results] == [
        (first["messageId"], "DELIVERY_STATUS_DELIVERED"),
        (second["messageId"], "DELIVERY_STATUS_SKIPPED_NO_CONSENT"),
        (third["messageId"], "DELIVERY_STATUS_DELIVERED"),
    ]


async def test_events_bad_json_is_400_with_one_line_that_says_where(sidecar, sandbox):
    status, _, body = await post(
        f"{sidecar.http_url}/v1/events",
        '{"type": "track",, }',
        {"Content-Type": "application/json"},
    )
    assert status == 400
    error, info = error_info(body)
    assert info.reason == "MALFORMED_REQUEST"
    assert "\n" not in error["message"]
    assert "line 1 column 18" in error["message"]
    assert sandbox.received == []


async def test_events_field_errors_never_echo_an_email(sidecar):
    event = make_event_json("bad-ts") | {"timestamp": EMAIL}
    status, _, body = await post(
        f"{sidecar.http_url}/v1/events", event, {"Content-Type": "application/json"}
    )
    assert status == 400
    assert "timestamp" in json.loads(body)["message"]
    assert EMAIL not in body.decode()


async def test_events_body_over_the_limit_is_413_before_it_is_read(start_sidecar):
    """A declared Content-Length over the limit is answered without reading the body."""
    sidecar = await start_sidecar(max_event_bytes=256, batch_limit=2)
    host, port = sidecar.http_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n{"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 413 ")


async def test_events_chunked_body_is_cut_at_the_limit(start_sidecar, sandbox):
    sidecar = await start_sidecar(max_event_bytes=256, batch_limit=2)

    async def chunks():
        for _ in range(100):
            yield b" " * 100

    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{sidecar.http_url}/v1/events",
            data=chunks(),
            headers={"Content-Type": "application/json"},
        ) as response,
    ):
        assert response.status == 413
        assert json.loads(await response.read())["code"] == "resource_exhausted"
    assert sandbox.received == []


async def test_requests_from_web_pages_are_refused(sidecar, sandbox):
    status, _, body = await post(
        f"{sidecar.http_url}/v1/events",
        seed_event(),
        {"Content-Type": "application/json", "Origin": "https://evil.example"},
    )
    assert status == 403
    assert error_info(body)[1].reason == "BROWSER_REQUEST"
    assert sandbox.received == []


async def test_door_refusals_are_counted_like_grpc_ones(sidecar):
    await post(f"{sidecar.http_url}/{SERVICE}/Deliver", {}, CONNECT_JSON)
    _, samples = await scrape(sidecar.ops_url)
    key = (
        "bluecore_sidecar_calls_refused_total",
        (("code", "INVALID_ARGUMENT"), ("method", "Deliver"), ("reason", "EVENT_MISSING")),
    )
    assert samples[key] == 1


async def test_the_door_is_off_with_an_empty_address(start_sidecar):
    sidecar = await start_sidecar(http_address="")
    assert sidecar.http_url == ""


@pytest.mark.parametrize(
    ("value", "address"),
    [(None, "127.0.0.1:50080"), ("", ""), ("off", ""), ("127.0.0.1:8081", "127.0.0.1:8081")],
)
def test_http_address_setting(value, address):
    env = {"BLUECORE_NAMESPACE": NAMESPACE}
    if value is not None:
        env["SIDECAR_HTTP_ADDRESS"] = value
    assert Settings.from_env(env).http_address == address


def test_a_bad_http_address_stops_start_up_naming_the_variable():
    with pytest.raises(ConfigError, match=r"^SIDECAR_HTTP_ADDRESS "):
        Settings.from_env({"BLUECORE_NAMESPACE": NAMESPACE, "SIDECAR_HTTP_ADDRESS": "8080"})


async def test_events_span_names_the_route_and_the_rpc_it_became(sidecar, span_exporter):
    await post(
        f"{sidecar.http_url}/v1/events",
        seed_event(),
        {"Content-Type": "application/json", "traceparent": TRACEPARENT},
    )
    [server] = [s for s in span_exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert server.name == "POST /v1/events"
    assert (server.attributes["http.route"], server.attributes["rpc.method"]) == (
        "/v1/events",
        "Deliver",
    )
    assert server.context.trace_id == int(TRACE_ID, 16)
    [deliver] = [s for s in span_exporter.get_finished_spans() if s.name == "bluecore.deliver"]
    assert deliver.parent is not None
    assert deliver.parent.span_id == server.context.span_id


async def test_drain_answers_late_callers_lets_the_call_in_flight_finish_and_closes_the_door(
    sidecar, sandbox
):
    sandbox.delay(0.5, count=1)
    url = f"{sidecar.http_url}/v1/events"
    headers = {"Content-Type": "application/json"}
    slow = asyncio.create_task(post(url, seed_event(), headers))
    await eventually(lambda: sidecar.admission.in_flight, what="the call in flight")
    drain = asyncio.create_task(sidecar.drain())
    await asyncio.sleep(0.05)
    status, _, body = await post(url, make_event_json("late"), headers)
    assert status == 503
    assert error_info(body)[1].reason == "SHUTTING_DOWN"
    status, _, body = await slow
    assert (status, json.loads(body)["status"]) == (200, "DELIVERY_STATUS_DELIVERED")
    await drain
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(url, seed_event(), headers)


async def test_a_gzip_body_is_read_and_other_encodings_are_unimplemented(sidecar, sandbox):
    body = gzip.compress(json.dumps({"event": make_event_json("gz-1")}).encode())
    url = f"{sidecar.http_url}/{SERVICE}/Deliver"
    status, _, answer = await post(url, body, {**CONNECT_JSON, "Content-Encoding": "gzip"})
    assert (status, json.loads(answer)["result"]["status"]) == (200, "DELIVERY_STATUS_DELIVERED")
    status, _, answer = await post(url, body, {**CONNECT_JSON, "Content-Encoding": "snappy"})
    assert (status, json.loads(answer)["code"]) == (501, "unimplemented")


async def test_more_services_are_served_through_their_own_edge():
    """The dead-letter admin service will plug in like this: here grpc's health service."""
    metrics = Metrics()
    admission = Admission(10, timedelta(seconds=1))
    health = HealthService()
    door = HttpDoor(
        Edge(SERVICE, admission, metrics, trace.NoOpTracer()),
        DeliveryService(None, None, batch_limit=1, default_deadline=timedelta(seconds=1)),
        max_message_bytes=1024,
        max_events_bytes=1024,
        more=[(Edge("grpc.health.v1.Health", admission, metrics, trace.NoOpTracer()), health)],
    )
    async with serving(door.application()) as url:
        status, _, body = await post(f"{url}/grpc.health.v1.Health/Check", {}, CONNECT_JSON)
        assert (status, json.loads(body)) == (200, {"status": "SERVING"})
        status, _, _ = await post(f"{url}/grpc.health.v1.Health/Watch", {}, CONNECT_JSON)
        assert status == 404  # streaming


async def test_an_unexpected_failure_is_internal_and_says_nothing_of_it(captured_logs):
    """As over gRPC: logged by type, answered INTERNAL, the exception's text kept out."""

    class Broken:
        async def Check(self, request, context):
            raise RuntimeError(f"boom for {EMAIL}")

        List = Check

    admission = Admission(10, timedelta(seconds=1))
    metrics = Metrics()
    door = HttpDoor(
        Edge(SERVICE, admission, metrics, trace.NoOpTracer()),
        DeliveryService(None, None, batch_limit=1, default_deadline=timedelta(seconds=1)),
        max_message_bytes=1024,
        max_events_bytes=1024,
        more=[(Edge("grpc.health.v1.Health", admission, metrics, trace.NoOpTracer()), Broken())],
    )
    async with serving(door.application()) as url:
        status, _, body = await post(f"{url}/grpc.health.v1.Health/Check", {}, CONNECT_JSON)
    assert status == 500
    error, info = error_info(body)
    assert (error["code"], info.reason) == ("internal", "INTERNAL_ERROR")
    assert EMAIL not in body.decode()
    assert "RuntimeError" in captured_logs.getvalue()
    assert EMAIL not in captured_logs.getvalue()
    assert admission.in_flight == 0


async def test_the_dead_letter_admin_rpcs_answer_over_connect_as_over_grpc(sidecar):
    """ListDeadLetters through the door gives what the gRPC stub gives (answer or error)."""
    admin = "datafly.bluecore.v1.DeadLetterService"
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        stub = delivery_pb2_grpc.DeadLetterServiceStub(channel)
        try:
            reply = await stub.ListDeadLetters(delivery_pb2.ListDeadLettersRequest(), timeout=5)
            expected: Any = (200, json_format.MessageToDict(reply))
        except grpc.aio.AioRpcError as refused:
            expected = (refused.code().name.lower(), refused.details())
    status, _, body = await post(f"{sidecar.http_url}/{admin}/ListDeadLetters", {}, CONNECT_JSON)
    answer = json.loads(body)
    got = (200, answer) if status == 200 else (answer["code"], answer["message"])
    assert got == expected
