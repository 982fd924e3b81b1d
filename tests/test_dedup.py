"""The dedup table's claim/finish/abandon API, and the pipeline's use of it on cancellation."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
import tracemalloc
from datetime import timedelta

import pytest
from bluecore_sidecar.dedup import (
    ENTRY_OVERHEAD,
    Claimed,
    DedupTable,
    Existing,
    InFlight,
    Record,
)
from bluecore_sidecar.delivery import Deliverer
from bluecore_sidecar.gates import GatePolicy
from bluecore_sidecar.mapping import MappingRules
from bluecore_sidecar.outcomes import OutcomeBus
from bluecore_sidecar.results import MAX_TEXT_CHARS
from bluecore_sidecar.retry import RetryPolicy
from bluecore_sidecar.upstream import Answer, Credential, UpstreamClient
from datafly.bluecore.v1 import delivery_pb2

from .conftest import NAMESPACE, make_event

Status = delivery_pb2.DeliveryStatus
DELIVERED = delivery_pb2.DeliveryResult(
    message_id="m-1",
    status=Status.DELIVERY_STATUS_DELIVERED,
    datafly_event="Product Viewed",
    bluecore_event="viewed_product",
    http_status=202,
    attempts=2,
    trace_id="ab" * 16,
)
FAILED = delivery_pb2.DeliveryResult(
    message_id="m-1", status=Status.DELIVERY_STATUS_FAILED_RETRYABLE, http_status=503
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def table(clock: Clock | None = None, max_entries: int = 100) -> DedupTable:
    return DedupTable(timedelta(seconds=60), max_entries, clock or Clock())


async def test_a_first_claim_is_claimed_and_a_second_sees_it_in_flight():
    dedup = table()
    first = dedup.claim("m-1")
    assert isinstance(first, Claimed)
    assert isinstance(dedup.claim("m-1"), InFlight)
    assert isinstance(dedup.claim("m-2"), Claimed)


async def test_a_delivered_claim_leaves_a_compact_record_until_the_window_ends():
    clock = Clock()
    dedup = table(clock)
    claim = dedup.claim("m-1")
    assert isinstance(claim, Claimed)
    dedup.finish(claim, DELIVERED)
    again = dedup.claim("m-1")
    assert again == Existing(Record("Product Viewed", "viewed_product", 202, 2, "ab" * 16))
    assert dedup.peek("m-1") == again.record
    clock.now = 61.0
    assert dedup.peek("m-1") is None
    assert isinstance(dedup.claim("m-1"), Claimed)


async def test_a_failed_delivery_is_forgotten_so_the_message_can_be_sent_again():
    dedup = table()
    claim = dedup.claim("m-1")
    assert isinstance(claim, Claimed)
    dedup.finish(claim, FAILED)
    assert len(dedup) == 0
    assert isinstance(dedup.claim("m-1"), Claimed)


async def test_waiters_get_the_first_result_when_it_finishes():
    dedup = table()
    claim = dedup.claim("m-1")
    assert isinstance(claim, Claimed)
    waiting = dedup.claim("m-1")
    assert isinstance(waiting, InFlight)
    waiter = asyncio.create_task(waiting.wait(5))
    await asyncio.sleep(0)
    dedup.finish(claim, FAILED)
    assert await waiter == FAILED


async def test_abandoning_a_claim_tells_waiters_to_claim_again():
    dedup = table()
    claim = dedup.claim("m-1")
    assert isinstance(claim, Claimed)
    waiting = dedup.claim("m-1")
    assert isinstance(waiting, InFlight)
    waiter = asyncio.create_task(waiting.wait(5))
    await asyncio.sleep(0)
    dedup.abandon(claim)
    assert await waiter is None
    assert isinstance(dedup.claim("m-1"), Claimed)


async def test_a_waiter_times_out_and_its_cancellation_leaves_the_delivery_alone():
    dedup = table()
    claim = dedup.claim("m-1")
    assert isinstance(claim, Claimed)
    waiting = dedup.claim("m-1")
    assert isinstance(waiting, InFlight)
    with pytest.raises(TimeoutError):
        await waiting.wait(0.01)
    # The delivery is still in flight and still finishes for the next waiter.
    later = dedup.claim("m-1")
    assert isinstance(later, InFlight)
    waiter = asyncio.create_task(later.wait(5))
    await asyncio.sleep(0)
    dedup.finish(claim, DELIVERED)
    assert await waiter == DELIVERED


async def test_the_table_is_bounded_by_entries_oldest_first():
    dedup = table(max_entries=3)
    for number in range(5):
        claim = dedup.claim(f"m-{number}")
        assert isinstance(claim, Claimed)
        dedup.finish(claim, DELIVERED)
    assert len(dedup) == 3
    assert dedup.peek("m-0") is None
    assert dedup.peek("m-1") is None
    assert isinstance(dedup.peek("m-4"), Record)


class HoldFirst:
    """The first request waits until cancelled; later ones are accepted at once."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.first_sent = asyncio.Event()

    async def post(self, body: bytes, attempt: int) -> Answer:
        self.sent.append(body)
        if len(self.sent) == 1:
            self.first_sent.set()
            await asyncio.Event().wait()
        return Answer(202)


async def test_a_cancelled_delivery_hands_the_message_to_a_waiting_duplicate():
    """The first caller leaves mid-send: the duplicate waiting on it sends the event itself."""
    transport = HoldFirst()
    client = UpstreamClient(
        transport, RetryPolicy(attempt_timeout=30), Credential(NAMESPACE), max_concurrency=4
    )
    bus = OutcomeBus(10)
    watcher = bus.subscribe()
    deliverer = Deliverer(
        rules=MappingRules(),
        gates=GatePolicy(),
        client=client,
        dedup=DedupTable(timedelta(hours=1), 100),
        bus=bus,
    )
    event = make_event(messageId="m-cancel")
    first = asyncio.create_task(deliverer.deliver(event, time.monotonic() + 30))
    await transport.first_sent.wait()
    second = asyncio.create_task(deliverer.deliver(event, time.monotonic() + 30))
    await asyncio.sleep(0.01)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    result = await second
    assert result.status == Status.DELIVERY_STATUS_DELIVERED
    assert result.attempts == 1
    assert len(transport.sent) == 2
    assert json.loads(transport.sent[1])["properties"]["token"] == NAMESPACE
    # Only finished deliveries are published: the cancelled one has no outcome to show.
    assert await watcher.next() == result
    assert deliverer.in_flight == 0


def delivered(message_id: str, name: str = "Product Viewed") -> delivery_pb2.DeliveryResult:
    result = delivery_pb2.DeliveryResult()
    result.CopyFrom(DELIVERED)
    result.message_id = message_id
    result.datafly_event = name
    return result


async def test_the_byte_count_follows_every_entry_in_and_out():
    clock = Clock()
    dedup = table(clock)
    expected = 0
    for n in range(10):
        claim = dedup.claim(f"id-{n}")
        assert isinstance(claim, Claimed)
        expected += ENTRY_OVERHEAD + sys.getsizeof(f"id-{n}")
        assert dedup.bytes == expected
        dedup.finish(claim, delivered(f"id-{n}"))
        record = dedup.peek(f"id-{n}")
        assert isinstance(record, Record)
        expected += record.size()
        assert dedup.bytes == expected
    failed = dedup.claim("fails")
    assert isinstance(failed, Claimed)
    dedup.finish(failed, FAILED)
    abandoned = dedup.claim("abandoned")
    assert isinstance(abandoned, Claimed)
    dedup.abandon(abandoned)
    assert dedup.bytes == expected
    clock.now = 61.0
    for n in range(10):
        assert dedup.peek(f"id-{n}") is None  # expired, and dropped on the way
    assert (len(dedup), dedup.bytes) == (0, 0)


async def test_past_its_byte_bound_the_table_forgets_the_oldest_first():
    one = ENTRY_OVERHEAD + sys.getsizeof("id-00") + Record.of(delivered("id-00")).size()
    dedup = DedupTable(timedelta(seconds=60), 1000, Clock(), max_bytes=10 * one)
    for n in range(100):
        claim = dedup.claim(f"id-{n:02d}")
        assert isinstance(claim, Claimed)
        dedup.finish(claim, delivered(f"id-{n:02d}"))
        assert dedup.bytes <= 10 * one
    assert len(dedup) == 10
    assert isinstance(dedup.peek("id-99"), Record)
    assert isinstance(dedup.peek("id-90"), Record)
    assert dedup.peek("id-89") is None


async def test_a_record_never_keeps_a_long_event_name():
    record = Record.of(delivered("m-1", name="n" * 60_000))
    assert len(record.datafly_event) == MAX_TEXT_CHARS
    assert record.size() < 1024


async def test_the_byte_count_is_close_to_what_the_entries_really_take():
    """ENTRY_OVERHEAD is measured, not guessed: tracemalloc agrees within 15 %."""
    results = [delivered(f"7c9e6679-7425-40de-944b-{n:012d}") for n in range(5000)]
    ids = [result.message_id for result in results]
    dedup = DedupTable(timedelta(seconds=60), 10_000, Clock(), max_bytes=1 << 40)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for message_id, result in zip(ids, results, strict=True):
            claim = dedup.claim(message_id)
            assert isinstance(claim, Claimed)
            dedup.finish(claim, result)
        gc.collect()
        taken = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # The ids existed before the table did; they count as the table's in its accounting.
    taken += sum(sys.getsizeof(message_id) for message_id in ids)
    assert 0.85 * taken <= dedup.bytes <= 1.15 * taken


async def test_delivered_ids_are_kept_where_the_garbage_collector_does_not_walk():
    """A full table must not lengthen every collection: kept entries are untracked tuples."""
    dedup = DedupTable(timedelta(seconds=60), 1_000, Clock())
    for n in range(200):
        claim = dedup.claim(f"id-{n}")
        assert isinstance(claim, Claimed)
        dedup.finish(claim, delivered(f"id-{n}"))
    in_flight = dedup.claim("id-busy")
    assert isinstance(in_flight, Claimed)
    gc.collect()
    kept = [entry for key, entry in dedup._entries.items() if key != "id-busy"]
    assert len(kept) == 200
    assert not any(gc.is_tracked(entry) for entry in kept)
    # What a duplicate is told is unchanged by how the entry is kept.
    again = dedup.claim("id-7")
    assert isinstance(again, Existing)
    assert again.record == Record.of(delivered("id-7"))
    assert isinstance(dedup.claim("id-busy"), InFlight)


@pytest.mark.parametrize(
    "datafly_event",
    [
        "Product Viewed",
        "",
        "Produkt angesehen \u00fc",
        "\u8cfc\u5165\u5b8c\u4e86",
        "cart \U0001f6d2",
    ],
)
def test_a_records_size_is_its_tuple_and_strings_as_sys_getsizeof_counts_them(datafly_event):
    # ASCII texts are counted without calling sys.getsizeof; every kind must agree with it.
    record = Record(datafly_event, "viewed_product", 202, 1, "0af7651916cd43dd8448eb211c80319c")
    strings = (record.datafly_event, record.bluecore_event, record.trace_id)
    expected = sys.getsizeof(Record("", "", 0, 0)) + sum(sys.getsizeof(s) for s in strings)
    assert record.size() == expected
