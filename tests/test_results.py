"""Results are bounded in size: long text is cut, and a full batch reply fits 4 MiB."""

from __future__ import annotations

import grpc
import pytest
from bluecore_sidecar.mapping import MappingRules, normalise_event_name
from bluecore_sidecar.redaction import Redactor
from bluecore_sidecar.results import (
    CUT_MARKER,
    DEFAULT_CLIENT_RECEIVE_LIMIT,
    MAX_BATCH_EVENTS,
    MAX_RESULT_BYTES,
    MAX_TEXT_CHARS,
    TEXT_FIELDS,
    clip,
    new_result,
)
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc

from .conftest import NAMESPACE, make_event

Status = delivery_pb2.DeliveryStatus
#: A character that takes four bytes in UTF-8, the most any character takes.
WIDE = "\U0001d11e"
BIG_NAME = "n" * 60_000


def worst_result() -> delivery_pb2.DeliveryResult:
    """A result with every field as large as protobuf lets it be, text far over the bound."""
    text = WIDE * 10_000
    result = new_result(
        message_id=text,
        status=max(Status.values()),
        datafly_event=text,
        bluecore_event=text,
        reason=text,
        detail=text,
        http_status=-1,  # negative int32s take the full ten varint bytes
        attempts=-1,
        trace_id=text,
    )
    for duration in (result.retry_after, result.latency):
        duration.seconds = -315_576_000_000  # the Duration minimum: ten varint bytes
        duration.nanos = -999_999_999
    return result


def test_every_text_field_of_a_result_is_cut():
    result = worst_result()
    fields = delivery_pb2.DeliveryResult.DESCRIPTOR.fields
    # A string field added to the contract must be added to the bound as well.
    assert {f.name for f in fields if f.type == f.TYPE_STRING} == set(TEXT_FIELDS)
    for name in TEXT_FIELDS:
        assert getattr(result, name) == WIDE * (MAX_TEXT_CHARS - 1) + CUT_MARKER


def test_a_bounded_result_never_exceeds_its_worst_case_size():
    assert worst_result().ByteSize() <= MAX_RESULT_BYTES


def test_a_full_batch_of_worst_case_results_fits_a_default_client():
    reply = delivery_pb2.DeliverBatchResponse(results=[worst_result()] * MAX_BATCH_EVENTS)
    assert reply.ByteSize() < DEFAULT_CLIENT_RECEIVE_LIMIT
    # The bound the settings rely on holds with room for framing.
    assert MAX_BATCH_EVENTS * (1 + 2 + MAX_RESULT_BYTES) < DEFAULT_CLIENT_RECEIVE_LIMIT


def test_short_text_is_kept_and_long_text_is_cut_with_a_marker():
    exact = "x" * MAX_TEXT_CHARS
    assert clip(exact) is exact
    cut = clip(exact + "y")
    assert len(cut) == MAX_TEXT_CHARS
    assert cut == "x" * (MAX_TEXT_CHARS - 1) + CUT_MARKER


@pytest.mark.parametrize(
    "address",
    ["shopper.name@example.com", '"john doe"@example.com'],
)
@pytest.mark.parametrize("offset", [-10, -3, 0, 5, 10])
def test_a_cut_never_keeps_part_of_an_email_address(address, offset):
    """An address across the cut goes whole: half of one would not be scrubbed from logs."""
    start = MAX_TEXT_CHARS - len(address) // 2 + offset
    text = "w " * (start // 2) + " " * (start % 2) + address + " tail" * 100
    cut = clip(text)
    assert len(cut) <= MAX_TEXT_CHARS
    assert cut.endswith(CUT_MARKER)
    assert "@" not in cut
    assert "shopper" not in cut
    assert "john" not in cut


def test_a_whole_address_before_the_cut_is_left_to_log_scrubbing():
    text = "w " * 50 + "shopper@example.com" + " tail" * 100
    assert "shopper@example.com" in clip(text)


def test_a_token_cut_by_the_bound_is_still_scrubbed():
    text = "z" * (MAX_TEXT_CHARS - 10) + NAMESPACE
    shown = Redactor(secrets=(NAMESPACE,)).scrub(clip(text))
    assert NAMESPACE[:8] not in shown
    assert shown.endswith("***" + CUT_MARKER)


async def test_a_huge_event_name_comes_back_cut_and_a_batch_of_them_fits_4_mib(
    start_sidecar, sandbox
):
    """End to end with a client at grpc's default receive limit: 120 events, 60 kB names."""
    rules = MappingRules(event_map={normalise_event_name(BIG_NAME): "big_name"})
    sidecar = await start_sidecar(rules=rules)
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        one = await stub.Deliver(
            delivery_pb2.DeliverRequest(event=make_event(messageId="big-0", event=BIG_NAME)),
            timeout=20,
        )
        assert one.result.status == Status.DELIVERY_STATUS_DELIVERED
        assert one.result.datafly_event == BIG_NAME[: MAX_TEXT_CHARS - 1] + CUT_MARKER

        events = [make_event(messageId=f"big-{n}", event=BIG_NAME) for n in range(1, 121)]
        reply = await stub.DeliverBatch(delivery_pb2.DeliverBatchRequest(events=events), timeout=60)
    assert [r.status for r in reply.results] == [Status.DELIVERY_STATUS_DELIVERED] * 120
    assert reply.ByteSize() < DEFAULT_CLIENT_RECEIVE_LIMIT
    # Bluecore got every event (only the result is cut). A try that outlives its timeout on a
    # busy machine is sent again, and the results count it: never fewer requests than events,
    # never more than the results' attempts add up to.
    sent = one.result.attempts + sum(r.attempts for r in reply.results)
    assert 121 <= len(sandbox.received) <= sent
