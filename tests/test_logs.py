"""Structured logs: one JSON line per outcome, carrying the trace id, never a secret."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging

import pytest
from bluecore_sidecar import telemetry
from bluecore_sidecar.redaction import Redactor
from bluecore_sidecar.telemetry import Metrics, OutcomeRecorder, configure_logging
from datafly.bluecore.v1 import delivery_pb2
from hypothesis import given
from hypothesis import strategies as st

from .conftest import EMAIL, NAMESPACE, deliver, example_event, make_event

Status = delivery_pb2.DeliveryStatus


def outcome_lines(stream: io.StringIO) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if line["message"] == "delivery outcome"]


async def test_one_json_line_per_outcome_with_trace_id(captured_logs, stub, sandbox):
    sandbox.fail_next(1, 503)
    delivered = await stub.Deliver(delivery_pb2.DeliverRequest(event=make_event()), timeout=10)
    sandbox.fail_next(1, 400)
    refused = await stub.Deliver(
        delivery_pb2.DeliverRequest(event=make_event(messageId="m-2")), timeout=10
    )

    ok, failed = outcome_lines(captured_logs)
    assert ok["level"] == "INFO"
    assert {k: ok[k] for k in ok if k not in ("time", "latency_ms", "logger")} == {
        "level": "INFO",
        "message": "delivery outcome",
        "message_id": "msg-1",
        "datafly_event": "Product Viewed",
        "bluecore_event": "viewed_product",
        "status": "DELIVERED",
        "reason": "",
        "detail": "accepted by Bluecore",
        "http_status": 202,
        "attempts": 2,
        "trace_id": delivered.result.trace_id,
    }
    assert isinstance(ok["latency_ms"], float)
    assert ok["latency_ms"] >= 0
    assert failed["level"] == "WARNING"
    assert failed["status"] == "FAILED_PERMANENT"
    assert failed["reason"] == "HTTP_400"
    assert failed["attempts"] == 1
    assert failed["trace_id"] == refused.result.trace_id
    assert len(refused.result.trace_id) == 32


async def test_logs_carry_no_token_and_no_email(captured_logs, stub, sandbox):
    sandbox.fail_next(1, 400)
    await stub.Deliver(
        delivery_pb2.DeliverRequest(
            event=make_event(messageId=f"from-{EMAIL}", type="identify", traits={"email": EMAIL})
        ),
        timeout=10,
    )
    await stub.Deliver(
        delivery_pb2.DeliverRequest(event=make_event(messageId="m-2", event=f"Hi {EMAIL}")),
        timeout=10,
    )
    text = captured_logs.getvalue()
    assert len(outcome_lines(captured_logs)) == 2
    assert NAMESPACE not in text
    assert EMAIL not in text
    assert "@" not in text


async def test_log_level_hides_successes_at_warning(stub, sandbox):
    """SIDECAR_LOG_LEVEL=WARNING keeps failures and drops the routine lines."""
    stream = io.StringIO()
    logger = configure_logging("WARNING", stream)
    try:
        await stub.Deliver(delivery_pb2.DeliverRequest(event=make_event()), timeout=10)
        sandbox.fail_next(1, 400)
        await stub.Deliver(
            delivery_pb2.DeliverRequest(event=make_event(messageId="m-2")), timeout=10
        )
    finally:
        logger.handlers.clear()
        logger.setLevel(logging.WARNING)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["level"], line["message_id"]) for line in lines] == [("WARNING", "m-2")]


async def test_a_batch_logs_one_json_line_per_event(captured_logs, stub, sandbox):
    """DeliverBatch writes its outcome lines together, still one complete line per event."""
    events = [
        make_event(messageId="b-1"),
        make_event(messageId="b-2", event="Order Completed", traits={}),  # needs an email
        make_event(messageId="b-3", event="Product Added"),
    ]
    reply = await stub.DeliverBatch(delivery_pb2.DeliverBatchRequest(events=events), timeout=10)

    by_id = {line["message_id"]: line for line in outcome_lines(captured_logs)}
    assert sorted(by_id) == ["b-1", "b-2", "b-3"]
    for result in reply.results:
        line = by_id[result.message_id]
        assert line["status"] == Status.Name(result.status).removeprefix("DELIVERY_STATUS_")
        assert line["trace_id"] == result.trace_id
        assert line["attempts"] == result.attempts
    assert by_id["b-2"]["level"] == "WARNING"
    assert by_id["b-2"]["reason"] == "MISSING_EMAIL"
    assert {by_id["b-1"]["level"], by_id["b-3"]["level"]} == {"INFO"}


async def test_outcome_lines_wait_for_the_flush_then_go_out_in_one_write(monkeypatch):
    """Lines wait up to LOG_FLUSH_SECONDS, then go out in one write per level, each line with
    the time its outcome was recorded, not the time of the write; flush forces it."""
    stream = io.StringIO()
    writes: list[str] = []
    write = stream.write
    monkeypatch.setattr(stream, "write", lambda text: writes.append(text) or write(text))
    monkeypatch.setattr(telemetry, "LOG_FLUSH_SECONDS", 0.05)
    logger = configure_logging("INFO", stream)
    try:
        # The recorder's clock only (the loop keeps the real one): a quarter second per read.
        reads = itertools.count(1)
        recorder = OutcomeRecorder(
            Metrics(), logger, wall_clock=lambda: 1_800_000_000 + next(reads) / 4
        )
        delivered = Status.DELIVERY_STATUS_DELIVERED
        for n in range(2):
            recorder.on_outcome(
                delivery_pb2.DeliveryResult(message_id=f"m-{n}", status=delivered), False
            )
        recorder.on_outcome(
            delivery_pb2.DeliveryResult(
                message_id="m-bad", status=Status.DELIVERY_STATUS_FAILED_PERMANENT
            ),
            False,
        )
        await asyncio.sleep(0)
        assert stream.getvalue() == ""  # a turn of the loop is not enough
        await asyncio.sleep(0.2)
        lines = outcome_lines(stream)
        assert [(line["level"], line["message_id"]) for line in lines] == [
            ("INFO", "m-0"),
            ("INFO", "m-1"),
            ("WARNING", "m-bad"),
        ]
        assert len(writes) == 2  # one per level
        # Each line has the time of its own outcome, written in the same write or not.
        times = [line["time"] for line in lines]
        assert times == sorted(set(times))
        assert all(time.startswith("2027-01-15T08:00:0") for time in times)
        recorder.on_outcome(delivery_pb2.DeliveryResult(message_id="m-last"), False)
        recorder.flush()
        assert outcome_lines(stream)[-1]["message_id"] == "m-last"
    finally:
        logger.handlers.clear()
        logger.setLevel(logging.WARNING)


async def test_outcome_lines_are_written_at_once_when_too_many_wait(monkeypatch):
    """At most LOG_PENDING_LINES lines wait: the one that reaches it writes them all."""
    monkeypatch.setattr(telemetry, "LOG_PENDING_LINES", 5)
    stream = io.StringIO()
    logger = configure_logging("INFO", stream)
    try:
        recorder = OutcomeRecorder(Metrics(), logger)
        for n in range(4):
            recorder.on_outcome(delivery_pb2.DeliveryResult(message_id=f"m-{n}"), False)
        assert stream.getvalue() == ""
        recorder.on_outcomes([(delivery_pb2.DeliveryResult(message_id="m-4"), False)])
        assert [line["message_id"] for line in outcome_lines(stream)] == [
            f"m-{n}" for n in range(5)
        ]
        recorder.on_outcome(delivery_pb2.DeliveryResult(message_id="m-5"), False)
        assert len(outcome_lines(stream)) == 5  # a new wait starts
        recorder.flush()
        assert outcome_lines(stream)[-1]["message_id"] == "m-5"
    finally:
        logger.handlers.clear()
        logger.setLevel(logging.WARNING)


def test_outcome_line_is_valid_json_for_any_text():
    """Quotes, backslashes, control characters and non-ASCII in free-form fields stay JSON."""
    stream = io.StringIO()
    logger = configure_logging("INFO", stream)
    odd = 'say "hi"\\ \n\t\x00 é€ 😀'
    try:
        OutcomeRecorder(Metrics(), logger).on_outcome(
            delivery_pb2.DeliveryResult(
                message_id=odd,
                status=Status.DELIVERY_STATUS_SKIPPED_UNMAPPED,
                datafly_event=odd,
                detail=odd,
                reason="UNMAPPED_EVENT",
            ),
            False,
        )
    finally:
        logger.handlers.clear()
        logger.setLevel(logging.WARNING)
    [line] = outcome_lines(stream)
    assert (line["message_id"], line["datafly_event"], line["detail"]) == (odd, odd, odd)
    assert (line["status"], line["reason"], line["level"]) == (
        "SKIPPED_UNMAPPED",
        "UNMAPPED_EVENT",
        "INFO",
    )


async def test_logs_carry_outcomes_but_never_the_token_or_email(stub, sandbox, captured_logs):
    await deliver(stub, make_event(messageId="log-ok"))
    sandbox.fail_next(1, 400)
    await deliver(stub, make_event(messageId="log-400"))
    sandbox.fail_next(2, 503)
    await deliver(
        stub,
        make_event(
            messageId="log-retry",
            context={"consent": {"marketing": True}, "traits": {"email": "other@example.com"}},
        ),
    )
    await deliver(stub, example_event("signed_up.json"))

    text = captured_logs.getvalue()
    assert NAMESPACE not in text
    assert EMAIL not in text
    assert "other@example.com" not in text
    lines = [json.loads(line) for line in io.StringIO(text) if line.strip()]
    outcomes = {line["message_id"]: line for line in lines if "status" in line}
    assert {"log-ok", "log-400", "log-retry"} <= set(outcomes)
    for line in outcomes.values():
        assert {"message_id", "status", "attempts", "trace_id"} <= set(line)
        assert len(line["trace_id"]) == 32
    assert outcomes["log-ok"]["status"] == "DELIVERED"
    assert outcomes["log-400"]["status"] == "FAILED_PERMANENT"
    assert outcomes["log-retry"]["attempts"] == 3


def test_a_rotated_token_is_scrubbed_from_texts_seen_before_the_rotation():
    """The recorder scrubs each repeated text once, but never past a change of secrets."""
    stream = io.StringIO()
    logger = configure_logging("INFO", stream)
    redactor = Redactor(secrets=("old-token",))
    recorder = OutcomeRecorder(Metrics(), logger, redactor)
    failed = delivery_pb2.DeliveryResult(
        message_id="m-1",
        status=Status.DELIVERY_STATUS_FAILED_PERMANENT,
        datafly_event="Order Completed",
        detail="Bluecore answered 400: unknown namespace new-token",
    )
    try:
        recorder.on_outcome(failed, False)
        redactor.secrets = ("new-token", "old-token")
        recorder.on_outcome(failed, False)
    finally:
        logger.handlers.clear()
        logger.setLevel(logging.WARNING)
    before, after = (line["detail"] for line in outcome_lines(stream))
    assert before == "Bluecore answered 400: unknown namespace new-token"
    assert after == "Bluecore answered 400: unknown namespace ***"


@pytest.mark.parametrize("static", [{"worker": 2}, {"time": "set by the caller", "worker": 2}])
async def test_every_outcome_line_carries_the_common_members_and_the_static_ones(static):
    """Lines written together share their head: time, level, logger, message, static fields."""
    stream = io.StringIO()
    logger = configure_logging("INFO", stream, static=static)
    recorder = OutcomeRecorder(Metrics(), logger)
    delivered = Status.DELIVERY_STATUS_DELIVERED
    try:
        recorder.on_outcomes(
            [
                (delivery_pb2.DeliveryResult(message_id=f"m-{n}", status=delivered), False)
                for n in range(3)
            ]
        )
        recorder.flush()  # one record, three lines
    finally:
        logger.handlers.clear()
        logger.setLevel(logging.WARNING)
    lines = outcome_lines(stream)
    assert [line["message_id"] for line in lines] == ["m-0", "m-1", "m-2"]
    for line in lines:
        assert list(line)[:4] == ["time", "level", "logger", "message"]
        assert (line["level"], line["logger"], line["worker"]) == ("INFO", "bluecore_sidecar", 2)
        if "time" not in static:
            assert line["time"].endswith("+00:00")


def test_an_outcome_line_is_the_same_written_directly_or_through_a_record():
    """With logging as configure_logging sets it, lines skip the record; any other setup (here
    a filter on the handler) gets the record, and the bytes are the same but for the time."""
    stream = io.StringIO()
    logger = configure_logging("INFO", stream, static={"worker": 1})
    recorder = OutcomeRecorder(Metrics(), logger)
    result = delivery_pb2.DeliveryResult(
        message_id="m-1",
        status=Status.DELIVERY_STATUS_FAILED_PERMANENT,
        datafly_event="Order Completed",
        bluecore_event="purchase",
        reason="HTTP_400",
        detail="Bluecore answered 400",
        http_status=400,
        attempts=1,
    )
    seen: list[logging.LogRecord] = []
    try:
        recorder.on_outcome(result, False)
        recorder.flush()
        logger.handlers[0].addFilter(lambda record: seen.append(record) or True)
        recorder.on_outcome(result, False)
        recorder.flush()
    finally:
        logger.handlers.clear()
        logger.setLevel(logging.WARNING)
    direct, recorded = (line.split(",", 1) for line in stream.getvalue().splitlines())
    assert direct[0].startswith('{"time":"')
    assert direct[1] == recorded[1]
    assert [record.levelname for record in seen] == ["WARNING"]


async def test_many_waiting_lines_go_out_in_writes_of_whole_lines_a_pipe_takes_whole(monkeypatch):
    """Workers share the container's stderr: no write is longer than PIPE_BUF (which a pipe
    takes in one piece) unless it is a single line, and every write ends a line. (A line is
    at most a few kB: its free-form fields are cut.)"""
    stream = io.StringIO()
    writes: list[str] = []
    write = stream.write
    monkeypatch.setattr(stream, "write", lambda text: writes.append(text) or write(text))
    logger = configure_logging("INFO", stream, static={"worker": 1})
    try:
        recorder = OutcomeRecorder(Metrics(), logger)
        recorder.on_outcomes(
            [(delivery_pb2.DeliveryResult(message_id=f"m-{n:04}"), False) for n in range(200)]
        )
        recorder.flush()
    finally:
        logger.handlers.clear()
        logger.setLevel(logging.WARNING)
    assert len(writes) > 1
    assert all(piece.endswith("\n") for piece in writes)
    assert all(len(piece.encode()) <= telemetry.ATOMIC_WRITE_BYTES for piece in writes)
    ids = [line["message_id"] for line in outcome_lines(stream)]
    assert ids == [f"m-{n:04}" for n in range(200)]


@given(
    lines=st.lists(st.text(alphabet='ab{}",:', max_size=80), min_size=1, max_size=40),
    limit=st.integers(min_value=1, max_value=300),
)
def test_whole_line_pieces_keep_the_text_and_the_bound(lines, limit):
    text = "\n".join(lines) + "\n"
    pieces = list(telemetry._whole_lines(lines, limit))
    assert "".join(pieces) == text
    for piece in pieces:
        assert piece.endswith("\n")
        assert len(piece) <= limit or piece.count("\n") == 1
