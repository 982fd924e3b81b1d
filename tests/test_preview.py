"""``Preview`` answers exactly what ``Deliver`` would, shows the bodies with the token as
``***``, sends nothing and claims nothing."""

from __future__ import annotations

import json

import grpc
import pytest
from datafly.bluecore.v1 import delivery_pb2

from .conftest import NAMESPACE, deliver, error_info, example_event, make_event

Status = delivery_pb2.DeliveryStatus


async def test_preview_sends_nothing_and_redacts_the_token(stub, sandbox):
    reply = await stub.Preview(
        delivery_pb2.PreviewRequest(event=example_event("order_completed.json")), timeout=10
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
        delivery_pb2.PreviewRequest(event=example_event("add_to_cart_ga4_two_items.json")),
        timeout=10,
    )
    assert reply.bluecore_body
    assert len(reply.additional_bodies) == 1


async def test_preview_without_an_event_is_invalid_argument(stub):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Preview(delivery_pb2.PreviewRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).reason == "EVENT_MISSING"
