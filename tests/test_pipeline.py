"""The delivery pipeline on its own: what happens when something inside it breaks."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from bluecore_sidecar.dedup import DedupTable
from bluecore_sidecar.delivery import Deliverer
from bluecore_sidecar.gates import GatePolicy
from bluecore_sidecar.mapping import MappingRules
from bluecore_sidecar.outcomes import OutcomeBus
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
