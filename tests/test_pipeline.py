"""The delivery pipeline on its own: what happens when something inside it breaks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from bluecore_sidecar.dedup import DedupTable
from bluecore_sidecar.delivery import Deliverer
from bluecore_sidecar.gates import GatePolicy
from bluecore_sidecar.mapping import MappingRules
from bluecore_sidecar.outcomes import OutcomeBus
from bluecore_sidecar.retry import RetryPolicy
from bluecore_sidecar.upstream import Answer, Credential, UpstreamClient
from datafly.bluecore.v1 import delivery_pb2

from .conftest import EMAIL, make_event

Status = delivery_pb2.DeliveryStatus


class ClockThatBreaksOnce:
    """A wall clock whose first reading fails, as a stand-in for any unexpected bug."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> datetime:
        self.calls += 1
        if self.calls == 1:
            raise ZeroDivisionError(f"leaky text {EMAIL}")
        return datetime.now(UTC)


def deliverer(now: ClockThatBreaksOnce, bus: OutcomeBus) -> Deliverer:
    return Deliverer(
        rules=MappingRules(),
        gates=GatePolicy(),
        client=None,
        dedup=DedupTable(timedelta(hours=1), 100),
        bus=bus,
        now=now,
    )


async def test_an_unexpected_error_becomes_a_retryable_result_not_an_exception(captured_logs):
    bus = OutcomeBus(10)
    watcher = bus.subscribe()
    pipeline = deliverer(ClockThatBreaksOnce(), bus)
    # An unmapped event needs no HTTP client, so the second call completes without one.
    event = make_event(event="Checkout Started")

    first = await pipeline.deliver(event, time.monotonic() + 5)
    second = await pipeline.deliver(event, time.monotonic() + 5)

    assert first.status == Status.DELIVERY_STATUS_FAILED_RETRYABLE
    assert first.reason == "INTERNAL_ERROR"
    assert "ZeroDivisionError" in first.detail
    assert EMAIL not in first.detail
    # The broken attempt is not remembered: the same message id is decided afresh.
    assert second.status == Status.DELIVERY_STATUS_SKIPPED_UNMAPPED
    assert (await watcher.next()) == first
    assert EMAIL not in captured_logs.getvalue()
    assert '"error_type":"ZeroDivisionError"' in captured_logs.getvalue()


class HangingTransport:
    """A Bluecore that never answers: the tries wait until they are cancelled."""

    async def post(self, body: bytes, attempt: int) -> Answer:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class RecordingObserver:
    """Keeps what the pipeline reports, as the log and metrics recorder would receive it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def on_outcome(self, result: delivery_pb2.DeliveryResult, dedup_hit: bool) -> None:
        self.seen.append((result.message_id, result.status))

    def on_outcomes(self, outcomes: Sequence[tuple[delivery_pb2.DeliveryResult, bool]]) -> None:
        self.seen.extend((result.message_id, result.status) for result, _ in outcomes)


async def test_a_cancelled_batch_still_reports_the_outcomes_it_reached():
    """Logs and metrics hear of a batch at its end; a call cancelled before then loses none."""
    observer = RecordingObserver()
    pipeline = Deliverer(
        rules=MappingRules(),
        gates=GatePolicy(),
        client=UpstreamClient(
            HangingTransport(), RetryPolicy(), Credential("ns"), max_concurrency=4
        ),
        dedup=DedupTable(timedelta(hours=1), 100),
        bus=OutcomeBus(10),
        observer=observer,
    )
    events = [
        make_event(messageId="unmapped", event="Checkout Started"),
        make_event(messageId="sent"),
    ]
    batch = asyncio.ensure_future(pipeline.deliver_batch(events, time.monotonic() + 30))
    for _ in range(5):
        await asyncio.sleep(0)  # the unmapped event is decided; the other one hangs in its try
    batch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await batch

    assert observer.seen == [("unmapped", Status.DELIVERY_STATUS_SKIPPED_UNMAPPED)]
