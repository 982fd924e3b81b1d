"""Which upstream answers the sidecar retries, how long it waits (backoff, ``Retry-After``, a
pause shared by later events) and where it stops: attempts, the caller's deadline, the
concurrency limit; the last answer is reported as ``FAILED_RETRYABLE``."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import pytest
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc

from .conftest import EMAIL, deliver, eventually, make_event, retry_policy

Status = delivery_pb2.DeliveryStatus


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

    await eventually(answered)
    second = await deliver(stub, make_event(messageId="second"))
    assert (await first).status == Status.DELIVERY_STATUS_DELIVERED
    assert second.status == Status.DELIVERY_STATUS_DELIVERED
    assert second.attempts == 1
    rate_limited = sandbox.received[0]
    later = [r for r in sandbox.received if r.status == 202]
    assert rate_limited.status == status
    assert len(later) == 2
    assert all(r.received_at - rate_limited.received_at >= 0.95 for r in later)


async def test_a_connection_reset_is_retried(stub, sandbox):
    sandbox.reset_next(1)
    result = await deliver(stub, make_event())
    assert result.status == Status.DELIVERY_STATUS_DELIVERED
    assert result.attempts == 2
    assert [r.status for r in sandbox.received] == [None, 202]


async def test_exhausted_attempts_fail_retryably(start_sidecar, connect, sandbox):
    sandbox.fail_next(10, 503)
    stub = connect(await start_sidecar(retry=retry_policy(max_attempts=3)))
    result = await deliver(stub, make_event())
    assert result.status == Status.DELIVERY_STATUS_FAILED_RETRYABLE
    assert result.attempts == 3
    assert result.http_status == 503
    assert result.reason == "HTTP_503"
    assert len(sandbox.received) == 3


async def test_connection_refused_fails_retryably_after_every_attempt(
    start_sidecar, connect, refused_port
):
    url = f"http://127.0.0.1:{refused_port}/api/track/mobile/v1"
    stub = connect(await start_sidecar(url, retry=retry_policy()))
    result = await deliver(stub, make_event())
    assert result.status == Status.DELIVERY_STATUS_FAILED_RETRYABLE
    assert result.reason == "UPSTREAM_CONNECTION_ERROR"
    assert result.attempts == 5
    assert result.http_status == 0


async def test_a_hung_upstream_times_out_each_attempt(start_sidecar, connect, sandbox):
    sandbox.delay(10)
    stub = connect(await start_sidecar(retry=retry_policy(max_attempts=2, attempt_timeout=0.2)))
    result = await deliver(stub, make_event())
    assert result.status == Status.DELIVERY_STATUS_FAILED_RETRYABLE
    assert result.reason == "UPSTREAM_TIMEOUT"
    assert result.attempts == 2
    assert len(sandbox.received) == 2


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


async def test_a_backlog_behind_the_concurrency_limit_ends_before_the_deadline(
    start_sidecar, sandbox
):
    """With one upstream slot held by a slow request, a second call still answers in time."""
    sandbox.delay(1.5, count=1)  # shorter than the 2 s try limit: the slow call is not retried
    sidecar = await start_sidecar(max_concurrency=1)
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        slow = asyncio.ensure_future(deliver(stub, make_event(messageId="slow")))
        await eventually(lambda: sandbox.received)
        queued = await deliver(stub, make_event(messageId="queued"), timeout=1.0)
        assert (await slow).status == Status.DELIVERY_STATUS_DELIVERED
    assert queued.status == Status.DELIVERY_STATUS_FAILED_RETRYABLE
    assert queued.reason == "CONCURRENCY_LIMIT"
    assert queued.attempts == 0
    assert [r.body["properties"]["distinct_id"] for r in sandbox.received] == [EMAIL]
