"""Smoke: the sidecar delivers one event to the sandbox end to end."""

from datafly.bluecore.v1 import delivery_pb2

from .conftest import NAMESPACE, make_event

Status = delivery_pb2.DeliveryStatus


async def test_product_view_is_delivered_and_received(stub, sandbox):
    reply = await stub.Deliver(delivery_pb2.DeliverRequest(event=make_event()), timeout=10)
    assert reply.result.status == Status.DELIVERY_STATUS_DELIVERED
    assert reply.result.attempts == 1
    assert [r.body["properties"]["token"] for r in sandbox.received] == [NAMESPACE]
