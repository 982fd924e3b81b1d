"""Delivery end to end: the real sidecar on port 0 against the sandbox Bluecore (or a closed
port, or a tiny echoing server), asserting what a caller and Bluecore would see."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import io
import json
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from bluecore_sidecar.app import running_sidecar
from bluecore_sidecar.retry import RetryPolicy
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from google.protobuf import descriptor_pb2, json_format
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from .conftest import EMAIL, NAMESPACE, make_event, seed_purchase_body, serving, test_settings

Status = delivery_pb2.DeliveryStatus
Stub = delivery_pb2_grpc.DeliveryServiceStub
SERVICE = "datafly.bluecore.v1.DeliveryService"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "events"
NOT_DELIVERABLE = {
    "reject_missing_order_id.json": Status.DELIVERY_STATUS_REJECTED_INVALID,
    "skip_no_consent.json": Status.DELIVERY_STATUS_SKIPPED_NO_CONSENT,
    "skip_unmapped_event.json": Status.DELIVERY_STATUS_SKIPPED_UNMAPPED,
}
DELIVERABLE = sorted(p.name for p in EXAMPLES.glob("*.json") if p.name not in NOT_DELIVERABLE)

# The seed's "Order Completed is delivered to Bluecore as" body, with our test namespace.
SEED_PURCHASE_BODY = seed_purchase_body(NAMESPACE)


def example(name: str) -> delivery_pb2.DataflyEvent:
    event = delivery_pb2.DataflyEvent()
    raw = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    json_format.ParseDict(raw, event, ignore_unknown_fields=True)
    return event


async def deliver(
    stub: delivery_pb2_grpc.DeliveryServiceStub,
    event: delivery_pb2.DataflyEvent,
    timeout: float = 10.0,
) -> delivery_pb2.DeliveryResult:
    reply = await stub.Deliver(delivery_pb2.DeliverRequest(event=event), timeout=timeout)
    return reply.result


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo of the google.rpc.Status the sidecar attached to an RPC error."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            assert status.code == error.code().value[0]
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info
    raise AssertionError("no google.rpc.Status with an ErrorInfo in the trailing metadata")


@contextlib.asynccontextmanager
async def stub_for(api_url: str, **overrides: Any) -> AsyncIterator[Stub]:
    """A sidecar talking to ``api_url`` (not the sandbox fixture), and a client for it."""
    async with (
        running_sidecar(test_settings(api_url, **overrides), {}) as sidecar,
        grpc.aio.insecure_channel(sidecar.grpc_address) as channel,
    ):
        yield delivery_pb2_grpc.DeliveryServiceStub(channel)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def policy(**fields: Any) -> RetryPolicy:
    base = RetryPolicy(max_attempts=5, base=0.01, cap=0.05, attempt_timeout=2.0)
    return dataclasses.replace(base, **fields)


def with_token(body: str) -> dict[str, Any]:
    """A redacted Preview body as Bluecore should receive it: with the real token."""
    parsed = json.loads(body)
    assert parsed["properties"]["token"] == "***"
    parsed["properties"]["token"] = NAMESPACE
    return parsed  # type: ignore[no-any-return]


async def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.005)


# -- every mapping row, exactly as received ---------------------------------------------------


@pytest.mark.parametrize("name", DELIVERABLE)
async def test_each_deliverable_example_arrives_exactly_as_previewed(name, stub, sandbox):
    """Bluecore receives the Preview body(ies) with the token filled in, as JSON, no auth."""
    event = example(name)
    preview = await stub.Preview(delivery_pb2.PreviewRequest(event=event), timeout=10)
    expected = [with_token(b) for b in [preview.bluecore_body, *preview.additional_bodies]]
    assert preview.result.status == Status.DELIVERY_STATUS_DELIVERED

    result = await deliver(stub, event)

    assert result.status == Status.DELIVERY_STATUS_DELIVERED, result.detail
    assert result.attempts == len(expected)
    assert result.http_status == 202
    assert result.bluecore_event == preview.result.bluecore_event
    received = sandbox.received
    assert [r.body for r in received] == expected
    for record in received:
        assert record.status == 202
        assert record.method == "POST"
        assert record.headers["Content-Type"].startswith("application/json")
        assert "Authorization" not in record.headers


@pytest.mark.parametrize(("name", "status"), sorted(NOT_DELIVERABLE.items()))
async def test_skip_and_reject_examples_send_nothing(name, status, stub, sandbox):
    result = await deliver(stub, example(name))
    assert result.status == status
    assert result.reason
    assert result.attempts == 0
    assert sandbox.received == []


async def test_seed_order_completed_arrives_as_the_seed_body(stub, sandbox):
    result = await deliver(stub, example("order_completed.json"))
    assert result.status == Status.DELIVERY_STATUS_DELIVERED
    assert result.bluecore_event == "purchase"
    [record] = sandbox.received
    assert record.body == SEED_PURCHASE_BODY
    assert list(record.body["properties"]) == list(SEED_PURCHASE_BODY["properties"])


async def test_add_to_cart_with_two_products_sends_two_requests(stub, sandbox):
    result = await deliver(stub, example("add_to_cart_ga4_two_items.json"))
    assert result.status == Status.DELIVERY_STATUS_DELIVERED
    assert result.attempts == 2
    received = sandbox.received_events("add_to_cart")
    assert len(received) == 2
    assert sorted(r.body["properties"]["products"][0]["id"] for r in received) == [
        "SKU123",
        "SKU456",
    ]
    assert all(len(r.body["properties"]["products"]) == 1 for r in received)


# -- retries and their limits -----------------------------------------------------------------


async def test_503_503_202_is_delivered_on_the_third_attempt(stub, sandbox):
    sandbox.fail_next(2, 503)
    result = await deliver(stub, make_event())
    assert result.status == Status.DELIVERY_STATUS_DELIVERED
    assert result.attempts == 3
    assert result.http_status == 202
    assert result.reason == ""
    assert [r.status for r in sandbox.received] == [503, 503, 202]


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_429_with_retry_after_1_waits_at_least_a_second(form, stub, sandbox):
    sandbox.fail_next(1, 429, retry_after=1 if form == "seconds" else timedelta(seconds=1))
    result = await deliver(stub, make_event())
    assert result.status == Status.DELIVERY_STATUS_DELIVERED
    assert result.attempts == 2
    first, second = sandbox.received
    assert first.status == 429
    assert second.received_at - first.received_at >= 0.95


@pytest.mark.parametrize("status", [429, 503])
async def test_a_slow_down_answer_holds_back_later_events_too(status, sidecar, stub, sandbox):
    """An event sent right after another got a 429 (or a 503 with Retry-After: 1) waits too."""
    sandbox.fail_next(1, status, retry_after=1)
    first = asyncio.create_task(deliver(stub, make_event(messageId="first")))

    def answered() -> bool:
        value = sidecar.metrics.registry.get_sample_value(
            "bluecore_sidecar_upstream_responses_total", {"code": str(status)}
        )
        return value == 1.0

    await wait_until(answered)
    second = await deliver(stub, make_event(messageId="second"))
    assert (await first).status == Status.DELIVERY_STATUS_DELIVERED
    assert second.status == Status.DELIVERY_STATUS_DELIVERED
    assert second.attempts == 1
    rate_limited = sandbox.received[0]
    later = [r for r in sandbox.received if r.status == 202]
    assert rate_limited.status == status
    assert len(later) == 2
    assert all(r.received_at - rate_limited.received_at >= 0.95 for r in later)


async def test_400_is_not_retried(stub, sandbox):
    sandbox.fail_next(1, 400)
    result = await deliver(stub, make_event())
    assert result.status == Status.DELIVERY_STATUS_FAILED_PERMANENT
    assert result.attempts == 1
    assert result.http_status == 400
    assert result.reason == "HTTP_400"
    assert "sandbox fault" in result.detail
    assert len(sandbox.received) == 1


@pytest.mark.parametrize("status", [401, 403])
async def test_401_and_403_are_permanent(status, stub, sandbox):
    sandbox.set_token_status(NAMESPACE, status)
    result = await deliver(stub, make_event())
    assert result.status == Status.DELIVERY_STATUS_FAILED_PERMANENT
    assert result.attempts == 1
    assert result.http_status == status
    assert result.reason == f"HTTP_{status}"


async def test_an_unknown_namespace_gets_403_from_bluecore(start_sidecar, sandbox):
    sidecar = await start_sidecar(namespace="not-our-namespace")
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        result = await deliver(delivery_pb2_grpc.DeliveryServiceStub(channel), make_event())
    assert result.status == Status.DELIVERY_STATUS_FAILED_PERMANENT
    assert result.http_status == 403
    assert "not-our-namespace" not in result.detail


@pytest.fixture
async def echoing_bluecore() -> AsyncIterator[str]:
    """A Bluecore stand-in that answers 400 and echoes the request body back."""

    async def handle(request: web.Request) -> web.Response:
        return web.Response(status=400, text="rejected: " + await request.text())

    app = web.Application()
    app.router.add_post("/api/track/mobile/v1", handle)
    async with serving(app) as base_url:
        yield f"{base_url}/api/track/mobile/v1"


async def test_a_400_detail_quotes_bluecore_without_token_or_email(echoing_bluecore, captured_logs):
    async with stub_for(echoing_bluecore) as stub:
        result = await deliver(stub, make_event())
    assert result.status == Status.DELIVERY_STATUS_FAILED_PERMANENT
    assert result.http_status == 400
    assert "rejected:" in result.detail
    assert "viewed_product" in result.detail
    assert NAMESPACE not in result.detail
    assert EMAIL not in result.detail
    assert NAMESPACE not in captured_logs.getvalue()
    assert EMAIL not in captured_logs.getvalue()


@pytest.fixture
async def redirecting_bluecore(sandbox) -> AsyncIterator[str]:
    """A Bluecore stand-in that answers 307 pointing at the sandbox."""

    async def handle(_: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": sandbox.url})

    app = web.Application()
    app.router.add_post("/api/track/mobile/v1", handle)
    async with serving(app) as base_url:
        yield f"{base_url}/api/track/mobile/v1"


async def test_a_redirect_is_not_followed_so_the_token_goes_nowhere_else(
    redirecting_bluecore, sandbox
):
    async with stub_for(redirecting_bluecore) as stub:
        result = await deliver(stub, make_event())
    assert result.status == Status.DELIVERY_STATUS_FAILED_PERMANENT
    assert result.http_status == 307
    assert result.attempts == 1
    assert sandbox.received == []


async def test_a_too_long_message_id_is_rejected(stub, sandbox):
    result = await deliver(stub, make_event(messageId="m" * 257))
    assert result.status == Status.DELIVERY_STATUS_REJECTED_INVALID
    assert result.reason == "MESSAGE_ID_TOO_LONG"
    assert sandbox.received == []


async def test_a_deadline_shorter_than_the_backoff_ends_in_time(stub, sandbox):
    """503 with Retry-After: 5 and a 1 s deadline: FAILED_RETRYABLE arrives, not an RPC error."""
    sandbox.fail_next(1, 503, retry_after=5)
    result = await deliver(stub, make_event(), timeout=1.0)
    assert result.status == Status.DELIVERY_STATUS_FAILED_RETRYABLE
    assert result.attempts == 1
    assert result.http_status == 503
    assert result.reason == "HTTP_503"
    assert result.retry_after.ToTimedelta() == timedelta(seconds=5)
    assert len(sandbox.received) == 1


async def test_connection_refused_fails_retryably_after_every_attempt():
    url = f"http://127.0.0.1:{closed_port()}/api/track/mobile/v1"
    async with stub_for(url, retry=policy()) as stub:
        result = await deliver(stub, make_event())
    assert result.status == Status.DELIVERY_STATUS_FAILED_RETRYABLE
    assert result.reason == "UPSTREAM_CONNECTION_ERROR"
    assert result.attempts == 5
    assert result.http_status == 0


async def test_a_hung_upstream_times_out_each_attempt(start_sidecar, sandbox):
    sandbox.delay(10)
    sidecar = await start_sidecar(retry=policy(max_attempts=2, attempt_timeout=0.2))
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        result = await deliver(delivery_pb2_grpc.DeliveryServiceStub(channel), make_event())
    assert result.status == Status.DELIVERY_STATUS_FAILED_RETRYABLE
    assert result.reason == "UPSTREAM_TIMEOUT"
    assert result.attempts == 2
    assert len(sandbox.received) == 2


async def test_a_backlog_behind_the_concurrency_limit_ends_before_the_deadline(
    start_sidecar, sandbox
):
    """With one upstream slot held by a slow request, a second call still answers in time."""
    sandbox.delay(1.5, count=1)  # shorter than the 2 s try limit: the slow call is not retried
    sidecar = await start_sidecar(max_concurrency=1)
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        slow = asyncio.ensure_future(deliver(stub, make_event(messageId="slow")))
        while not sandbox.received:  # noqa: ASYNC110 - the record offers no event to await
            await asyncio.sleep(0.01)
        queued = await deliver(stub, make_event(messageId="queued"), timeout=1.0)
        assert (await slow).status == Status.DELIVERY_STATUS_DELIVERED
    assert queued.status == Status.DELIVERY_STATUS_FAILED_RETRYABLE
    assert queued.reason == "CONCURRENCY_LIMIT"
    assert queued.attempts == 0
    assert [r.body["properties"]["distinct_id"] for r in sandbox.received] == [EMAIL]


async def test_a_connection_reset_is_retried(stub, sandbox):
    sandbox.reset_next(1)
    result = await deliver(stub, make_event())
    assert result.status == Status.DELIVERY_STATUS_DELIVERED
    assert result.attempts == 2
    assert [r.status for r in sandbox.received] == [None, 202]


async def test_exhausted_attempts_fail_retryably(start_sidecar, sandbox):
    sandbox.fail_next(10, 503)
    sidecar = await start_sidecar(retry=policy(max_attempts=3))
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        result = await deliver(delivery_pb2_grpc.DeliveryServiceStub(channel), make_event())
    assert result.status == Status.DELIVERY_STATUS_FAILED_RETRYABLE
    assert result.attempts == 3
    assert result.http_status == 503
    assert result.reason == "HTTP_503"
    assert len(sandbox.received) == 3


# -- duplicates -------------------------------------------------------------------------------


async def test_a_repeated_message_id_is_skipped_and_sent_once(stub, sandbox):
    first = await deliver(stub, make_event(messageId="dup-1"))
    second = await deliver(stub, make_event(messageId="dup-1"))
    assert first.status == Status.DELIVERY_STATUS_DELIVERED
    assert second.status == Status.DELIVERY_STATUS_SKIPPED_DUPLICATE
    assert second.reason == "DUPLICATE_MESSAGE_ID"
    assert second.http_status == 202
    assert second.attempts == first.attempts == 1
    assert len(sandbox.received) == 1


async def test_concurrent_duplicates_send_once_and_share_the_outcome(stub, sandbox):
    sandbox.delay(0.3, count=1)
    first, second = await asyncio.gather(
        deliver(stub, make_event(messageId="dup-2")),
        deliver(stub, make_event(messageId="dup-2")),
    )
    statuses = sorted([first.status, second.status])
    assert statuses == [Status.DELIVERY_STATUS_DELIVERED, Status.DELIVERY_STATUS_SKIPPED_DUPLICATE]
    assert first.http_status == second.http_status == 202
    assert len(sandbox.received) == 1


async def test_a_duplicate_whose_deadline_ends_first_still_gets_an_answer(stub, sandbox):
    """The second caller's short deadline ends while the first is in flight: a result, no error."""
    sandbox.delay(1.5, count=1)
    first = asyncio.create_task(deliver(stub, make_event(messageId="dup-3")))
    await wait_until(lambda: len(sandbox.received) == 1)
    second = await deliver(stub, make_event(messageId="dup-3"), timeout=0.5)
    assert second.status == Status.DELIVERY_STATUS_FAILED_RETRYABLE
    assert second.reason == "DUPLICATE_IN_FLIGHT"
    assert (await first).status == Status.DELIVERY_STATUS_DELIVERED
    assert len(sandbox.received) == 1


async def test_a_failed_first_try_does_not_block_a_resend(start_sidecar, sandbox):
    sandbox.fail_next(2, 503)
    sidecar = await start_sidecar(retry=policy(max_attempts=2))
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        first = await deliver(stub, make_event(messageId="dup-4"))
        again = await deliver(stub, make_event(messageId="dup-4"))
    assert first.status == Status.DELIVERY_STATUS_FAILED_RETRYABLE
    assert again.status == Status.DELIVERY_STATUS_DELIVERED
    assert [r.status for r in sandbox.received] == [503, 503, 202]


async def test_a_permanent_failure_is_not_remembered_as_delivered(stub, sandbox):
    sandbox.fail_next(1, 400)
    first = await deliver(stub, make_event(messageId="dup-5"))
    again = await deliver(stub, make_event(messageId="dup-5"))
    assert first.status == Status.DELIVERY_STATUS_FAILED_PERMANENT
    assert again.status == Status.DELIVERY_STATUS_DELIVERED


# -- requests as a whole ----------------------------------------------------------------------


async def test_missing_message_id_is_rejected(stub, sandbox):
    result = await deliver(stub, make_event(messageId=""))
    assert result.status == Status.DELIVERY_STATUS_REJECTED_INVALID
    assert result.reason == "MISSING_MESSAGE_ID"
    assert sandbox.received == []


async def test_deliver_without_an_event_is_invalid_argument(stub):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Deliver(delivery_pb2.DeliverRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).reason == "EVENT_MISSING"


async def test_a_10_mb_event_is_refused_whole_by_the_message_size_limit(stub, sandbox):
    """Over gRPC's 8 MiB receive limit the call fails RESOURCE_EXHAUSTED; nothing is sent."""
    event = make_event(properties={"product_id": "SKU123", "blob": "x" * (10 * 1024 * 1024)})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await deliver(stub, event)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (caught.value.details() or "")
    assert sandbox.received == []


async def test_an_event_over_the_event_size_limit_is_rejected_inside_a_batch(stub, sandbox):
    """A 100 KB event in a batch is REJECTED_INVALID (EVENT_TOO_LARGE); its neighbour goes."""
    big = make_event(messageId="big", properties={"product_id": "SKU1", "blob": "x" * 100_000})
    reply = await stub.DeliverBatch(
        delivery_pb2.DeliverBatchRequest(events=[big, make_event(messageId="small")]), timeout=10
    )
    statuses = [(r.message_id, r.status, r.reason) for r in reply.results]
    assert statuses == [
        ("big", Status.DELIVERY_STATUS_REJECTED_INVALID, "EVENT_TOO_LARGE"),
        ("small", Status.DELIVERY_STATUS_DELIVERED, ""),
    ]
    assert len(sandbox.received) == 1


async def test_preview_without_an_event_is_invalid_argument(stub):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Preview(delivery_pb2.PreviewRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).reason == "EVENT_MISSING"


async def test_batch_results_keep_request_order_with_mixed_outcomes(stub, sandbox):
    no_consent = make_event(messageId="b-3", context={"consent": {"marketing": False}})
    events = [
        make_event(messageId="b-0"),
        make_event(messageId="b-1", event="Checkout Started"),
        make_event(messageId="b-2", anonymousId="", traits={}),
        no_consent,
        make_event(messageId="b-4", event="Products Searched", properties={"query": "shoes"}),
    ]
    reply = await stub.DeliverBatch(delivery_pb2.DeliverBatchRequest(events=events), timeout=10)
    assert [r.message_id for r in reply.results] == ["b-0", "b-1", "b-2", "b-3", "b-4"]
    assert [r.status for r in reply.results] == [
        Status.DELIVERY_STATUS_DELIVERED,
        Status.DELIVERY_STATUS_SKIPPED_UNMAPPED,
        Status.DELIVERY_STATUS_REJECTED_INVALID,
        Status.DELIVERY_STATUS_SKIPPED_NO_CONSENT,
        Status.DELIVERY_STATUS_DELIVERED,
    ]
    assert reply.results[2].reason == "MISSING_IDENTITY"
    assert sorted(r.body["event"] for r in sandbox.received) == ["search", "viewed_product"]


async def test_a_failing_event_does_not_fail_the_batch(stub, sandbox):
    sandbox.fail_next(1, 400)
    events = [make_event(messageId="f-0"), make_event(messageId="f-1")]
    reply = await stub.DeliverBatch(delivery_pb2.DeliverBatchRequest(events=events), timeout=10)
    assert sorted(r.status for r in reply.results) == [
        Status.DELIVERY_STATUS_DELIVERED,
        Status.DELIVERY_STATUS_FAILED_PERMANENT,
    ]


async def test_an_empty_batch_is_invalid_argument(stub):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.DeliverBatch(delivery_pb2.DeliverBatchRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).reason == "EMPTY_BATCH"


async def test_a_batch_over_the_limit_is_invalid_argument(start_sidecar, sandbox):
    sidecar = await start_sidecar(batch_limit=2)
    events = [make_event(messageId=f"o-{i}") for i in range(3)]
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.DeliverBatch(delivery_pb2.DeliverBatchRequest(events=events), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(caught.value)
    assert info.reason == "BATCH_TOO_LARGE"
    assert info.metadata["limit"] == "2"
    assert sandbox.received == []


# -- preview ----------------------------------------------------------------------------------


async def test_preview_sends_nothing_and_redacts_the_token(stub, sandbox):
    reply = await stub.Preview(
        delivery_pb2.PreviewRequest(event=example("order_completed.json")), timeout=10
    )
    assert reply.result.status == Status.DELIVERY_STATUS_DELIVERED
    assert reply.result.attempts == 0
    assert NAMESPACE not in reply.bluecore_body
    assert json.loads(reply.bluecore_body)["properties"]["token"] == "***"
    assert sandbox.received == []


async def test_preview_does_not_count_as_a_delivery(stub, sandbox):
    """Previewing a message id first leaves a later Deliver of it free to send."""
    event = make_event(messageId="pv-1")
    await stub.Preview(delivery_pb2.PreviewRequest(event=event), timeout=10)
    result = await deliver(stub, event)
    assert result.status == Status.DELIVERY_STATUS_DELIVERED
    assert len(sandbox.received) == 1


def same_answer(preview: delivery_pb2.DeliveryResult, delivered: delivery_pb2.DeliveryResult):
    """Preview and Deliver agree on everything but timing and tracing."""
    for result in (preview, delivered):
        result.ClearField("latency")
        result.ClearField("trace_id")
    assert preview == delivered


@pytest.mark.parametrize(
    ("message_id", "reason"), [("", "MISSING_MESSAGE_ID"), ("m" * 257, "MESSAGE_ID_TOO_LONG")]
)
async def test_preview_answers_as_deliver_for_an_unusable_message_id(
    message_id, reason, stub, sandbox
):
    event = make_event(messageId=message_id)
    preview = await stub.Preview(delivery_pb2.PreviewRequest(event=event), timeout=10)
    delivered = await deliver(stub, event)
    assert preview.result.status == Status.DELIVERY_STATUS_REJECTED_INVALID
    assert preview.result.reason == reason
    assert preview.bluecore_body == ""
    same_answer(preview.result, delivered)
    assert sandbox.received == []


async def test_preview_answers_as_deliver_for_an_id_already_delivered(stub, sandbox):
    event = make_event(messageId="pv-dup")
    first = await deliver(stub, event)
    assert first.status == Status.DELIVERY_STATUS_DELIVERED
    preview = await stub.Preview(delivery_pb2.PreviewRequest(event=event), timeout=10)
    again = await deliver(stub, event)
    assert preview.result.status == Status.DELIVERY_STATUS_SKIPPED_DUPLICATE
    assert preview.result.reason == "DUPLICATE_MESSAGE_ID"
    assert preview.bluecore_body == ""
    same_answer(preview.result, again)
    assert len(sandbox.received) == 1


async def test_preview_of_two_products_lists_the_further_bodies(stub):
    reply = await stub.Preview(
        delivery_pb2.PreviewRequest(event=example("add_to_cart_ga4_two_items.json")), timeout=10
    )
    assert reply.bluecore_body
    assert len(reply.additional_bodies) == 1


# -- health, reflection, ops HTTP -------------------------------------------------------------


@pytest.mark.parametrize("service", ["", SERVICE])
async def test_health_reports_serving(service, sidecar):
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_delivery_service(sidecar):
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = [
            service.name
            async for response in call
            for service in response.list_services_response.service
        ]
    assert SERVICE in names
    assert "grpc.health.v1.Health" in names


async def test_reflection_describes_the_contract(sidecar):
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE)]),
            timeout=5,
        )
        protos = [r.file_descriptor_response.file_descriptor_proto async for r in call]
    files = [descriptor_pb2.FileDescriptorProto.FromString(raw) for rs in protos for raw in rs]
    contract = next(f for f in files if f.name == "datafly/bluecore/v1/delivery.proto")
    assert [s.name for s in contract.service] == ["DeliveryService", "DeadLetterService"]
    assert {m.name for m in contract.service[0].method} == {
        "Deliver",
        "DeliverBatch",
        "Preview",
        "WatchDeliveries",
    }


async def test_ops_http_health_and_readiness_until_drain(sidecar):
    async with aiohttp.ClientSession() as http:
        async with http.get(sidecar.ops_url + "/healthz") as response:
            assert response.status == 200
        async with http.get(sidecar.ops_url + "/readyz") as response:
            assert response.status == 200
        await sidecar.drain()
        async with http.get(sidecar.ops_url + "/readyz") as response:
            assert response.status == 503
        async with http.get(sidecar.ops_url + "/healthz") as response:
            assert response.status == 200


async def test_metrics_count_outcomes_by_status(sidecar, stub):
    await deliver(stub, make_event())
    async with aiohttp.ClientSession() as http, http.get(sidecar.ops_url + "/metrics") as response:
        text = await response.text()
    assert response.status == 200
    assert (
        'bluecore_sidecar_deliveries_total{bluecore_event="viewed_product",status="DELIVERED"}'
        in text
    )


# -- no secrets in logs -----------------------------------------------------------------------


async def test_logs_carry_outcomes_but_never_the_token_or_email(stub, sandbox, captured_logs):
    await deliver(stub, make_event(messageId="log-ok"))
    sandbox.fail_next(1, 400)
    await deliver(stub, make_event(messageId="log-400"))
    sandbox.fail_next(2, 503)
    await deliver(
        stub,
        make_event(
            messageId="log-retry",
            context={"consent": {"marketing": True}, "traits": {"email": "other@example.com"}},
        ),
    )
    await deliver(stub, example("signed_up.json"))

    text = captured_logs.getvalue()
    assert NAMESPACE not in text
    assert EMAIL not in text
    assert "other@example.com" not in text
    lines = [json.loads(line) for line in io.StringIO(text) if line.strip()]
    outcomes = {line["message_id"]: line for line in lines if "status" in line}
    assert {"log-ok", "log-400", "log-retry"} <= set(outcomes)
    for line in outcomes.values():
        assert {"message_id", "status", "attempts", "trace_id"} <= set(line)
        assert len(line["trace_id"]) == 32
    assert outcomes["log-ok"]["status"] == "DELIVERED"
    assert outcomes["log-400"]["status"] == "FAILED_PERMANENT"
    assert outcomes["log-retry"]["attempts"] == 3


async def test_results_never_carry_the_token_or_email(stub, sandbox):
    sandbox.fail_next(1, 503)
    results = [
        await deliver(stub, make_event(messageId="r-1")),
        await deliver(stub, make_event(messageId="r-2", traits={"email": "not-an-email"})),
        await deliver(stub, copy.deepcopy(example("identify.json"))),
    ]
    for result in results:
        text = json_format.MessageToJson(result)
        assert NAMESPACE not in text
        assert EMAIL not in text
