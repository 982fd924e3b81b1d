"""Duplicates over gRPC: a message id delivered once is skipped and sent once, concurrent
duplicates share one delivery's outcome, and only a delivery that succeeded is remembered."""

from __future__ import annotations

import asyncio

from datafly.bluecore.v1 import delivery_pb2

from .conftest import deliver, eventually, make_event, retry_policy

Status = delivery_pb2.DeliveryStatus


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
    await eventually(lambda: len(sandbox.received) == 1)
    second = await deliver(stub, make_event(messageId="dup-3"), timeout=0.5)
    assert second.status == Status.DELIVERY_STATUS_FAILED_RETRYABLE
    assert second.reason == "DUPLICATE_IN_FLIGHT"
    assert (await first).status == Status.DELIVERY_STATUS_DELIVERED
    assert len(sandbox.received) == 1


async def test_a_failed_first_try_does_not_block_a_resend(start_sidecar, connect, sandbox):
    sandbox.fail_next(2, 503)
    stub = connect(await start_sidecar(retry=retry_policy(max_attempts=2)))
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
