"""What one ``Deliver`` call answers and what Bluecore receives for it: every sample event
arrives exactly as previewed, skips and rejects send nothing, requests without a usable event
are refused, and no result carries the token or an email."""

from __future__ import annotations

import copy
import json
from typing import Any

import grpc
import pytest
from datafly.bluecore.v1 import delivery_pb2
from google.protobuf import json_format

from .conftest import (
    EMAIL,
    EXAMPLE_EVENTS,
    NAMESPACE,
    deliver,
    error_info,
    example_event,
    make_event,
    seed_purchase_body,
)

Status = delivery_pb2.DeliveryStatus


NOT_DELIVERABLE = {
    "reject_missing_order_id.json": Status.DELIVERY_STATUS_REJECTED_INVALID,
    "skip_no_consent.json": Status.DELIVERY_STATUS_SKIPPED_NO_CONSENT,
    "skip_unmapped_event.json": Status.DELIVERY_STATUS_SKIPPED_UNMAPPED,
}
DELIVERABLE = sorted(p.name for p in EXAMPLE_EVENTS.glob("*.json") if p.name not in NOT_DELIVERABLE)
# The seed's "Order Completed is delivered to Bluecore as" body, with our test namespace.
SEED_PURCHASE_BODY = seed_purchase_body(NAMESPACE)


def with_token(body: str) -> dict[str, Any]:
    """A redacted Preview body as Bluecore should receive it: with the real token."""
    parsed = json.loads(body)
    assert parsed["properties"]["token"] == "***"
    parsed["properties"]["token"] = NAMESPACE
    return parsed  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", DELIVERABLE)
async def test_each_deliverable_example_arrives_exactly_as_previewed(name, stub, sandbox):
    """Bluecore receives the Preview body(ies) with the token filled in, as JSON, no auth."""
    event = example_event(name)
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
    result = await deliver(stub, example_event(name))
    assert result.status == status
    assert result.reason
    assert result.attempts == 0
    assert sandbox.received == []


async def test_seed_order_completed_arrives_as_the_seed_body(stub, sandbox):
    result = await deliver(stub, example_event("order_completed.json"))
    assert result.status == Status.DELIVERY_STATUS_DELIVERED
    assert result.bluecore_event == "purchase"
    [record] = sandbox.received
    assert record.body == SEED_PURCHASE_BODY
    assert list(record.body["properties"]) == list(SEED_PURCHASE_BODY["properties"])


async def test_add_to_cart_with_two_products_sends_two_requests(stub, sandbox):
    result = await deliver(stub, example_event("add_to_cart_ga4_two_items.json"))
    assert result.status == Status.DELIVERY_STATUS_DELIVERED
    assert result.attempts == 2
    received = sandbox.received_events("add_to_cart")
    assert len(received) == 2
    assert sorted(r.body["properties"]["products"][0]["id"] for r in received) == [
        "SKU123",
        "SKU456",
    ]
    assert all(len(r.body["properties"]["products"]) == 1 for r in received)


async def test_missing_message_id_is_rejected(stub, sandbox):
    result = await deliver(stub, make_event(messageId=""))
    assert result.status == Status.DELIVERY_STATUS_REJECTED_INVALID
    assert result.reason == "MISSING_MESSAGE_ID"
    assert sandbox.received == []


async def test_a_too_long_message_id_is_rejected(stub, sandbox):
    result = await deliver(stub, make_event(messageId="m" * 257))
    assert result.status == Status.DELIVERY_STATUS_REJECTED_INVALID
    assert result.reason == "MESSAGE_ID_TOO_LONG"
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


async def test_results_never_carry_the_token_or_email(stub, sandbox):
    sandbox.fail_next(1, 503)
    results = [
        await deliver(stub, make_event(messageId="r-1")),
        await deliver(stub, make_event(messageId="r-2", traits={"email": "not-an-email"})),
        await deliver(stub, copy.deepcopy(example_event("identify.json"))),
    ]
    for result in results:
        text = json_format.MessageToJson(result)
        assert NAMESPACE not in text
        assert EMAIL not in text
