"""``DeliverBatch``: one result per event in request order, one event's failure is that event's
alone, and an empty or oversized batch is refused whole with INVALID_ARGUMENT."""

from __future__ import annotations

import grpc
import pytest
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc

from .conftest import error_info, make_event

Status = delivery_pb2.DeliveryStatus


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
