"""Durable mode end to end: real gRPC, the real sandbox as Bluecore, a real SQLite file.

Each test starts the sidecar with ``SIDECAR_QUEUE_PATH`` in ``tmp_path`` through the same
factory ``serve`` uses, and watches what Bluecore (the sandbox) received and in what order.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from bluecore_devtools.sandbox import BluecoreSandbox
from bluecore_sidecar import cli, store
from bluecore_sidecar.app import Sidecar, running_sidecar
from bluecore_sidecar.background import BACKGROUND_SPAN
from bluecore_sidecar.config import Settings
from bluecore_sidecar.delivery import DELIVERY_SPAN
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from .conftest import EMAIL, NAMESPACE, eventually, make_event, test_settings
from .processes import serve, serve_env

Status = delivery_pb2.DeliveryStatus
Mode = delivery_pb2.DeliveryMode
WAIT = Mode.DELIVERY_MODE_WAIT
ENQUEUE = Mode.DELIVERY_MODE_ENQUEUE
DIRECT = Mode.DELIVERY_MODE_DIRECT
OUTAGE = 1_000_000  # "fail every request from now on", until clear_faults()


def durable_settings(sandbox: BluecoreSandbox, path: Path, **overrides: Any) -> Settings:
    """Test settings with a queue at ``path`` and a fast background schedule."""
    values: dict[str, Any] = {
        "queue_path": path,
        "queue_retry_cap": timedelta(milliseconds=100),
    }
    values.update(overrides)
    return test_settings(sandbox.url, **values)


@dataclasses.dataclass
class Running:
    """A started durable sidecar and clients for both of its services."""

    sidecar: Sidecar
    stub: delivery_pb2_grpc.DeliveryServiceStub
    admin: delivery_pb2_grpc.DeadLetterServiceStub

    async def deliver(
        self, event: delivery_pb2.DataflyEvent, mode: int = WAIT, timeout: float = 10
    ) -> delivery_pb2.DeliveryResult:
        request = delivery_pb2.DeliverRequest(event=event, mode=mode)  # type: ignore[arg-type]
        return (await self.stub.Deliver(request, timeout=timeout)).result

    async def dead_letters(self, **filters: Any) -> list[delivery_pb2.DeadLetter]:
        request = delivery_pb2.ListDeadLettersRequest(
            filter=delivery_pb2.DeadLetterFilter(**filters)
        )
        return list((await self.admin.ListDeadLetters(request, timeout=10)).dead_letters)


@contextlib.asynccontextmanager
async def durable(
    settings: Settings, exporter: InMemorySpanExporter | None = None
) -> AsyncIterator[Running]:
    async with (
        running_sidecar(settings, {}, span_exporter=exporter) as sidecar,
        grpc.aio.insecure_channel(sidecar.grpc_address) as channel,
    ):
        yield Running(
            sidecar,
            delivery_pb2_grpc.DeliveryServiceStub(channel),
            delivery_pb2_grpc.DeadLetterServiceStub(channel),
        )


StartDurable = Callable[..., Any]


@pytest.fixture
async def start(
    sandbox: BluecoreSandbox, tmp_path: Path, span_exporter: InMemorySpanExporter
) -> AsyncIterator[StartDurable]:
    async with contextlib.AsyncExitStack() as stack:

        async def run(**overrides: Any) -> Running:
            settings = durable_settings(sandbox, tmp_path / "queue.db", **overrides)
            return await stack.enter_async_context(durable(settings, span_exporter))

        yield run


def accepted(sandbox: BluecoreSandbox) -> list[tuple[str | None, Any]]:
    """(Bluecore event, distinct_id) of every request the sandbox accepted, in arrival order."""
    return [
        (record.event, record.body["properties"]["distinct_id"])  # type: ignore[index, call-overload]
        for record in sandbox.received
        if record.status is not None and 200 <= record.status < 300
    ]


async def until(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    """``eventually`` with room for background tries on a loaded machine."""
    await eventually(predicate, timeout=timeout)


def in_file(db: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` read through a connection of its own: what is committed to the file,
    without an operation of the sidecar's store (which could take lingering entries along)."""
    with contextlib.closing(sqlite3.connect(db)) as peer:
        return peer.execute(sql).fetchall()


async def dead_letters_appear(
    running: Running, count: int = 1, **filters: Any
) -> list[delivery_pb2.DeadLetter]:
    """The dead letters once there are ``count`` (the background gives up asynchronously)."""

    async def enough() -> list[delivery_pb2.DeadLetter] | None:
        found = await running.dead_letters(**filters)
        return found if len(found) >= count else None

    return await eventually(enough, timeout=15.0, interval=0.05)


async def dead_letter_appears(running: Running) -> delivery_pb2.DeadLetter:
    return (await dead_letters_appear(running))[0]


def signed_up(message_id: str) -> delivery_pb2.DataflyEvent:
    return make_event(messageId=message_id, event="Signed Up", properties={})


def unsubscribed(message_id: str) -> delivery_pb2.DataflyEvent:
    return make_event(messageId=message_id, event="Unsubscribed", properties={})


# -- what Deliver answers, per mode -------------------------------------------------------


async def test_wait_mode_answers_delivered_when_bluecore_accepts_and_leaves_the_queue_empty(
    start, sandbox
):
    running = await start()
    result = await running.deliver(make_event(messageId="w-1"), WAIT)
    assert result.status == Status.DELIVERY_STATUS_DELIVERED
    assert result.http_status == 202
    assert result.attempts == 1
    stats = await running.sidecar.background.queue.stats()  # type: ignore[union-attr]
    assert stats.depth == 0
    assert len(accepted(sandbox)) == 1


async def test_unset_mode_follows_the_configured_default(start, sandbox):
    running = await start(delivery_mode=ENQUEUE)
    result = await running.deliver(make_event(messageId="d-1"), Mode.DELIVERY_MODE_UNSPECIFIED)
    assert result.status == Status.DELIVERY_STATUS_QUEUED
    await until(lambda: len(accepted(sandbox)) == 1)


async def test_enqueue_mode_answers_queued_at_once_and_a_worker_delivers_it(start, sandbox):
    running = await start()
    watch = running.stub.WatchDeliveries(delivery_pb2.WatchDeliveriesRequest())
    await until(lambda: running.sidecar.bus.watcher_count == 1)
    result = await running.deliver(make_event(messageId="e-1"), ENQUEUE)
    assert result.status == Status.DELIVERY_STATUS_QUEUED
    assert result.attempts == 0
    async with asyncio.timeout(10):
        seen = [(await watch.read()).result for _ in range(2)]
    background = [r for r in seen if r.status == Status.DELIVERY_STATUS_DELIVERED]
    assert [r.message_id for r in background] == ["e-1"]
    assert background[0].http_status == 202
    assert len(accepted(sandbox)) == 1
    watch.cancel()


async def test_direct_mode_never_queues_a_failure(start, sandbox):
    running = await start()
    sandbox.fail_next(OUTAGE, 503)
    result = await running.deliver(make_event(messageId="x-1"), DIRECT, timeout=2)
    assert result.status == Status.DELIVERY_STATUS_FAILED_RETRYABLE
    assert result.reason == "HTTP_503"
    stats = await running.sidecar.background.queue.stats()  # type: ignore[union-attr]
    assert stats.depth == 0


async def test_skips_and_rejects_answer_at_once_and_are_never_queued(start, sandbox):
    running = await start()
    no_consent = make_event(messageId="s-1", context={"consent": {"marketing": False}})
    invalid = make_event(messageId="s-2", event="Order Completed", properties={})
    for event, status in (
        (no_consent, Status.DELIVERY_STATUS_SKIPPED_NO_CONSENT),
        (invalid, Status.DELIVERY_STATUS_REJECTED_INVALID),
    ):
        for mode in (WAIT, ENQUEUE):
            assert (await running.deliver(event, mode)).status == status
    stats = await running.sidecar.background.queue.stats()  # type: ignore[union-attr]
    assert stats.depth == 0
    assert sandbox.received == []


# -- outages and background delivery ------------------------------------------------------


async def test_an_outage_answers_queued_and_the_worker_delivers_after_recovery(start, sandbox):
    """WAIT during a 503 outage: QUEUED (never FAILED_RETRYABLE) once on disk; when Bluecore
    recovers the worker delivers it and WatchDeliveries shows the background DELIVERED."""
    running = await start()
    watch = running.stub.WatchDeliveries(
        delivery_pb2.WatchDeliveriesRequest(statuses=[Status.DELIVERY_STATUS_DELIVERED])
    )
    await until(lambda: running.sidecar.bus.watcher_count == 1)
    sandbox.fail_next(OUTAGE, 503)
    result = await running.deliver(make_event(messageId="o-1"), WAIT, timeout=2)
    assert result.status == Status.DELIVERY_STATUS_QUEUED
    assert result.reason == "HTTP_503"
    assert result.attempts >= 1
    assert accepted(sandbox) == []

    sandbox.clear_faults()
    async with asyncio.timeout(10):
        delivered = (await watch.read()).result
    assert delivered.message_id == "o-1"
    assert delivered.attempts > result.attempts  # the failed tries count too
    assert len(accepted(sandbox)) == 1
    watch.cancel()


async def test_a_duplicate_of_a_queued_id_answers_queued_again_and_is_sent_once(start, sandbox):
    running = await start()
    sandbox.fail_next(OUTAGE, 503)
    first = await running.deliver(make_event(messageId="q-1"), ENQUEUE)
    again = await running.deliver(make_event(messageId="q-1"), WAIT, timeout=2)
    assert first.status == again.status == Status.DELIVERY_STATUS_QUEUED
    assert again.reason == "ALREADY_QUEUED"
    stats = await running.sidecar.background.queue.stats()  # type: ignore[union-attr]
    assert stats.depth == 1
    sandbox.clear_faults()
    await until(lambda: len(accepted(sandbox)) == 1)

    async def settled() -> bool:
        # Bluecore's 202 arrives before the worker commits the completion: until then the id
        # is still queued, and a resend rightly answers ALREADY_QUEUED.
        return (await running.sidecar.background.queue.stats()).depth == 0  # type: ignore[union-attr]

    await until(settled)
    after = await running.deliver(make_event(messageId="q-1"), WAIT)
    assert after.status == Status.DELIVERY_STATUS_SKIPPED_DUPLICATE
    await asyncio.sleep(0.2)
    assert len(accepted(sandbox)) == 1


async def test_a_permanent_4xx_becomes_a_dead_letter_and_replay_delivers_it(start, sandbox):
    running = await start()
    sandbox.fail_next(1, 400)
    result = await running.deliver(make_event(messageId="p-1"), ENQUEUE)
    assert result.status == Status.DELIVERY_STATUS_QUEUED
    dead = await dead_letter_appears(running)
    assert (dead.message_id, dead.reason, dead.http_status) == ("p-1", "HTTP_400", 400)
    assert dead.bluecore_event == "viewed_product"
    assert not dead.HasField("event")  # listing leaves the event (and its email) out
    shown = await running.admin.GetDeadLetter(delivery_pb2.GetDeadLetterRequest(id=dead.id))
    assert shown.dead_letter.event.message_id == "p-1"

    replay = await running.admin.ReplayDeadLetters(
        delivery_pb2.ReplayDeadLettersRequest(ids=[dead.id])
    )
    assert replay.replayed == 1
    await until(lambda: len(accepted(sandbox)) == 1)
    assert await running.dead_letters() == []


async def test_wait_mode_answers_a_permanent_refusal_as_failed_permanent_and_keeps_it(
    start, sandbox
):
    running = await start()
    sandbox.fail_next(1, 422)
    result = await running.deliver(make_event(messageId="p-2"), WAIT)
    assert result.status == Status.DELIVERY_STATUS_FAILED_PERMANENT
    assert result.reason == "HTTP_422"
    assert [d.message_id for d in await running.dead_letters(reasons=["HTTP_422"])] == ["p-2"]


async def test_401_is_an_auth_dead_letter_replayed_once_the_token_works(start, sandbox):
    running = await start()
    sandbox.set_token_status(NAMESPACE, 401)
    await running.deliver(make_event(messageId="a-1"), ENQUEUE)
    dead = await dead_letter_appears(running)
    assert dead.reason == "AUTH"
    assert dead.http_status == 401
    assert NAMESPACE not in dead.detail

    sandbox.set_token_status(NAMESPACE, None)
    replay = await running.admin.ReplayDeadLetters(
        delivery_pb2.ReplayDeadLettersRequest(
            filter=delivery_pb2.DeadLetterFilter(reasons=["AUTH"])
        )
    )
    assert replay.replayed == 1
    await until(lambda: len(accepted(sandbox)) == 1)


async def test_an_event_that_reaches_the_maximum_age_in_the_queue_is_an_expired_dead_letter(
    start, sandbox
):
    running = await start()
    sandbox.fail_next(OUTAGE, 503)
    almost_too_old = datetime.now(UTC) - timedelta(hours=24) + timedelta(seconds=1)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(almost_too_old)
    event = make_event(messageId="old-1")
    event.timestamp.CopyFrom(stamp)
    result = await running.deliver(event, ENQUEUE)
    assert result.status == Status.DELIVERY_STATUS_QUEUED
    dead = await dead_letter_appears(running)
    assert dead.message_id == "old-1"
    assert dead.reason == "EXPIRED"
    assert dead.attempts >= 1
    stats = await running.sidecar.background.queue.stats()  # type: ignore[union-attr]
    assert stats.depth == 0


# -- order per customer --------------------------------------------------------------------


async def stalled_failing_optin(running: Running, sandbox: BluecoreSandbox) -> asyncio.Task[Any]:
    """An optin whose first try Bluecore holds for three seconds and then refuses with 503.

    Its WAIT call answers QUEUED at its deadline; the entry stays the customer's head in the
    queue until a later background try delivers it. Returns once Bluecore holds the request.
    """
    sandbox.fail_next(1, 503)
    sandbox.delay(3.0, count=1)
    call = asyncio.create_task(running.deliver(signed_up("optin"), WAIT, timeout=1.5))
    await until(lambda: len(sandbox.received) == 1)
    return call


async def test_an_unsubscribe_never_overtakes_an_optin_that_failed_and_was_queued(start, sandbox):
    """The case that must never happen: the optin fails and is queued, the unsubscribe after
    it is delivered first, and the customer ends up opted in. Bluecore would accept the
    unsubscribe at once; it must still leave after the optin."""
    running = await start()
    optin = await stalled_failing_optin(running, sandbox)
    unsubscribe = await running.deliver(unsubscribed("unsub"), WAIT)
    assert unsubscribe.status == Status.DELIVERY_STATUS_QUEUED  # behind the optin, at once
    assert (await optin).status == Status.DELIVERY_STATUS_QUEUED
    await until(lambda: len(accepted(sandbox)) == 2)
    assert [event for event, _ in accepted(sandbox)] == ["optin", "unsubscribe"]
    assert sandbox.received[0].status == 503  # the optin's first try did fail


async def test_a_direct_unsubscribe_waits_for_the_queued_optin_to_leave_first(start, sandbox):
    running = await start()
    optin = await stalled_failing_optin(running, sandbox)
    direct = await running.deliver(unsubscribed("unsub"), DIRECT, timeout=10)
    assert direct.status == Status.DELIVERY_STATUS_DELIVERED
    await optin
    assert [event for event, _ in accepted(sandbox)] == ["optin", "unsubscribe"]


async def test_other_customers_are_not_held_up_by_one_customers_queue(start, sandbox):
    running = await start()
    optin = await stalled_failing_optin(running, sandbox)
    other = make_event(messageId="c-2", traits={"email": "sam@example.com"})
    result = await running.deliver(other, DIRECT)
    assert result.status == Status.DELIVERY_STATUS_DELIVERED
    await optin
    await until(lambda: len(accepted(sandbox)) == 2)
    assert [who for _, who in accepted(sandbox)] == ["sam@example.com", EMAIL]


async def test_direct_mode_for_a_customer_with_queued_events_answers_customer_busy(start, sandbox):
    running = await start()
    sandbox.fail_next(OUTAGE, 503)
    await running.deliver(signed_up("b-1"), ENQUEUE)
    result = await running.deliver(unsubscribed("b-2"), DIRECT, timeout=2)
    assert result.status == Status.DELIVERY_STATUS_FAILED_RETRYABLE
    assert result.reason == "CUSTOMER_BUSY"
    assert accepted(sandbox) == []


# -- restarts, limits, admin without a queue -----------------------------------------------


def searched(message_id: str) -> delivery_pb2.DataflyEvent:
    return make_event(messageId=message_id, event="Products Searched", properties={"query": "x"})


async def test_a_restart_keeps_delivered_and_queued_ids(sandbox, tmp_path):
    """Stop the sidecar, start another on the same file, resend: duplicates, nothing sent."""
    settings = durable_settings(sandbox, tmp_path / "queue.db")
    async with durable(settings) as first:
        assert (await first.deliver(searched("r-1"))).status == Status.DELIVERY_STATUS_DELIVERED
        sandbox.fail_next(OUTAGE, 503)
        queued = await first.deliver(make_event(messageId="r-2"), ENQUEUE)
        assert queued.status == Status.DELIVERY_STATUS_QUEUED
        direct = await first.deliver(
            make_event(messageId="r-3", traits={"email": "sam@example.com"}), DIRECT, timeout=2
        )
        assert direct.status == Status.DELIVERY_STATUS_FAILED_RETRYABLE
    sandbox.clear_faults()
    sandbox.fail_next(OUTAGE, 503)
    before = len(sandbox.received)
    async with durable(settings) as second:
        delivered_again = await second.deliver(searched("r-1"))
        assert delivered_again.status == Status.DELIVERY_STATUS_SKIPPED_DUPLICATE
        assert delivered_again.bluecore_event == "search"
        queued_again = await second.deliver(make_event(messageId="r-2"), WAIT, timeout=2)
        assert queued_again.status == Status.DELIVERY_STATUS_QUEUED
        assert queued_again.reason == "ALREADY_QUEUED"
        sandbox.clear_faults()
        await until(lambda: len(accepted(sandbox)) == 2)
        # Since the restart only r-2 (a product view) went out: no search, and r-2 once.
        events = [record.event for record in sandbox.received[before:]]
        assert "search" not in events
        assert [e for e, _ in accepted(sandbox)] == ["search", "viewed_product"]


async def test_a_wait_batch_after_a_restart_answers_queued_and_delivered_ids_as_duplicates(
    sandbox, tmp_path
):
    """A batch's ids are read from the file at once after a restart: the delivered one is
    SKIPPED_DUPLICATE (and not sent again), the queued one ALREADY_QUEUED, the new one
    DELIVERED."""
    settings = durable_settings(sandbox, tmp_path / "queue.db")
    # A customer of its own, with nothing queued: a WAIT try would start at once.
    alone = make_event(
        messageId="rb-1",
        event="Products Searched",
        properties={"query": "x"},
        traits={"email": "alone@example.com"},
    )
    async with durable(settings) as first:
        assert (await first.deliver(alone)).status == Status.DELIVERY_STATUS_DELIVERED
        sandbox.fail_next(OUTAGE, 503)
        queued = await first.deliver(make_event(messageId="rb-2"), ENQUEUE)
        assert queued.status == Status.DELIVERY_STATUS_QUEUED
    sandbox.clear_faults()
    before = len(sandbox.received)
    async with durable(settings) as second:
        events = [
            alone,
            make_event(messageId="rb-2"),
            make_event(messageId="rb-3", traits={"email": "new@example.com"}),
        ]
        reply = await second.stub.DeliverBatch(
            delivery_pb2.DeliverBatchRequest(events=events, mode=WAIT), timeout=10
        )
        answers = [(r.status, r.reason) for r in reply.results]
        assert answers[0][0] == Status.DELIVERY_STATUS_SKIPPED_DUPLICATE
        assert answers[1] == (Status.DELIVERY_STATUS_QUEUED, "ALREADY_QUEUED")
        assert answers[2][0] == Status.DELIVERY_STATUS_DELIVERED
        assert "search" not in [record.event for record in sandbox.received[before:]]


async def test_preview_after_a_restart_answers_from_the_store_as_deliver_would(sandbox, tmp_path):
    """Preview of a queued id says QUEUED (ALREADY_QUEUED) and of a delivered one
    SKIPPED_DUPLICATE, even when only the file knows them; it sends nothing."""
    settings = durable_settings(sandbox, tmp_path / "queue.db")
    async with durable(settings) as first:
        assert (await first.deliver(searched("v-1"))).status == Status.DELIVERY_STATUS_DELIVERED
        sandbox.fail_next(OUTAGE, 503)
        queued = await first.deliver(make_event(messageId="v-2"), ENQUEUE)
        assert queued.status == Status.DELIVERY_STATUS_QUEUED
    sandbox.fail_next(OUTAGE, 503)
    async with durable(settings) as second:
        before = len(sandbox.received)

        async def preview(message_id: str) -> delivery_pb2.DeliveryResult:
            request = delivery_pb2.PreviewRequest(event=make_event(messageId=message_id))
            reply = await second.stub.Preview(request, timeout=10)
            assert not reply.bluecore_body  # nothing that would be sent
            return reply.result

        delivered = await preview("v-1")
        assert delivered.status == Status.DELIVERY_STATUS_SKIPPED_DUPLICATE
        assert delivered.bluecore_event == "search"
        waiting = await preview("v-2")
        assert (waiting.status, waiting.reason) == (Status.DELIVERY_STATUS_QUEUED, "ALREADY_QUEUED")
        fresh = await second.stub.Preview(
            delivery_pb2.PreviewRequest(event=make_event(messageId="v-3")), timeout=10
        )
        assert fresh.result.status == Status.DELIVERY_STATUS_DELIVERED  # would be sent
        assert fresh.bluecore_body
        # Preview sent nothing; whatever arrived meanwhile is the queued v-2's background try.
        assert all(record.event == "viewed_product" for record in sandbox.received[before:])
        sandbox.clear_faults()


async def test_a_full_queue_answers_queue_full_and_accepts_nothing_it_cannot_keep(start, sandbox):
    running = await start(queue_max_events=1)
    sandbox.fail_next(OUTAGE, 503)
    first = await running.deliver(make_event(messageId="f-1"), ENQUEUE)
    second = await running.deliver(
        make_event(messageId="f-2", traits={"email": "sam@example.com"}), ENQUEUE
    )
    assert first.status == Status.DELIVERY_STATUS_QUEUED
    assert second.status == Status.DELIVERY_STATUS_FAILED_RETRYABLE
    assert second.reason == "QUEUE_FULL"
    assert "COUNT" in second.detail
    stats = await running.sidecar.background.queue.stats()  # type: ignore[union-attr]
    assert stats.depth == 1


async def test_dead_letter_rpcs_without_a_queue_answer_failed_precondition(sidecar):
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        admin = delivery_pb2_grpc.DeadLetterServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin.ListDeadLetters(delivery_pb2.ListDeadLettersRequest(), timeout=5)
    error = caught.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert info.reason == "NO_DURABLE_QUEUE"


async def test_replay_and_purge_need_a_selection(start):
    running = await start()
    for call in (running.admin.ReplayDeadLetters, running.admin.PurgeDeadLetters):
        request_type = (
            delivery_pb2.ReplayDeadLettersRequest
            if call is running.admin.ReplayDeadLetters
            else delivery_pb2.PurgeDeadLettersRequest
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(request_type(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- operating it ----------------------------------------------------------------------------


async def test_metrics_show_depth_oldest_age_dead_letters_and_tries(start, sandbox):
    running = await start()
    sandbox.fail_next(1, 400)
    await running.deliver(make_event(messageId="m-1"), ENQUEUE)
    await dead_letter_appears(running)
    sandbox.fail_next(OUTAGE, 503)
    await running.deliver(make_event(messageId="m-2", traits={"email": "sam@example.com"}), ENQUEUE)
    retried = 'bluecore_sidecar_queue_tries_total{outcome="retry"}'
    async with asyncio.timeout(10), aiohttp.ClientSession() as session:
        while True:  # until m-2's first background try has ended (and been rescheduled)
            async with session.get(running.sidecar.ops_url + "/metrics") as response:
                text = await response.text()
            lines = set(text.splitlines())
            if any(line.startswith(retried) for line in lines):
                break
            await asyncio.sleep(0.05)
    assert "bluecore_sidecar_queue_depth 1.0" in lines
    assert 'bluecore_sidecar_dead_letters{reason="HTTP_400"} 1.0' in lines
    assert 'bluecore_sidecar_queue_tries_total{outcome="dead_letter"} 1.0' in lines
    oldest = next(x for x in lines if x.startswith("bluecore_sidecar_queue_oldest_age_seconds "))
    assert float(oldest.split()[1]) > 0
    async with (
        aiohttp.ClientSession() as session,
        session.get(running.sidecar.ops_url + "/readyz") as ready,
    ):
        assert ready.status == 200  # readiness does not depend on what is queued
    assert EMAIL not in text


async def test_a_background_try_span_links_to_the_call_that_queued_it(
    start, sandbox, span_exporter
):
    running = await start()
    sandbox.fail_next(OUTAGE, 503)
    await running.deliver(make_event(messageId="t-1"), ENQUEUE)
    await until(lambda: len(sandbox.received) >= 1)
    sandbox.clear_faults()
    await until(lambda: len(accepted(sandbox)) == 1)
    await until(
        lambda: any(
            s.name == BACKGROUND_SPAN and s.attributes.get("delivery.status") == "DELIVERED"
            for s in span_exporter.get_finished_spans()
        )
    )
    spans = span_exporter.get_finished_spans()
    call = next(s for s in spans if s.name == DELIVERY_SPAN)
    tries = [s for s in spans if s.name == BACKGROUND_SPAN]
    assert tries
    for span in tries:
        assert [link.context.trace_id for link in span.links] == [call.context.trace_id]
        assert span.context.trace_id != call.context.trace_id
        assert EMAIL not in str(dict(span.attributes or {}))
    delivered = [s for s in tries if s.attributes.get("delivery.status") == "DELIVERED"]
    assert len(delivered) == 1


async def test_shutdown_puts_a_try_in_flight_back_and_the_next_start_sends_it(sandbox, tmp_path):
    """A background try still waiting on Bluecore when the grace ends goes back to the queue;
    the next sidecar on the same file delivers it."""
    settings = durable_settings(
        sandbox, tmp_path / "queue.db", shutdown_grace=timedelta(milliseconds=300)
    )
    sandbox.delay(30, count=1)
    async with durable(settings) as first:
        await first.deliver(make_event(messageId="g-1"), ENQUEUE)
        await until(lambda: len(sandbox.received) == 1)
    async with durable(settings) as second:
        watch = second.stub.WatchDeliveries(
            delivery_pb2.WatchDeliveriesRequest(statuses=[Status.DELIVERY_STATUS_DELIVERED])
        )
        await until(lambda: second.sidecar.bus.watcher_count == 1)
        stats = await second.sidecar.background.queue.stats()  # type: ignore[union-attr]
        if stats.depth:
            async with asyncio.timeout(10):
                assert (await watch.read()).result.message_id == "g-1"
        watch.cancel()
    assert len(sandbox.received) == 2  # the held try, and the one after the restart


# -- the dead-letters command against a running sidecar -------------------------------------


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = await asyncio.to_thread(cli.main, list(argv), {})
    return code, capsys.readouterr().out


async def test_dead_letters_command_lists_shows_replays_and_purges(start, sandbox, capsys):
    running = await start()
    target = ("--target", running.sidecar.grpc_address)
    sandbox.fail_next(2, 400)
    await running.deliver(make_event(messageId="cli-1"), ENQUEUE)
    await running.deliver(
        make_event(messageId="cli-2", event="Products Searched", properties={"query": "x"}),
        ENQUEUE,
    )
    await until(lambda: len(sandbox.received) == 2)
    await dead_letters_appear(running, 2)

    code, out = await run_cli(capsys, "dead-letters", "list", "--json", *target)
    assert code == 0
    listed = json.loads(out)["dead_letters"]
    assert [(d["message_id"], d["reason"]) for d in listed] == [
        ("cli-1", "HTTP_400"),
        ("cli-2", "HTTP_400"),
    ]
    assert EMAIL not in out  # the list leaves the events out
    by_event = json.loads(
        (await run_cli(capsys, "dead-letters", "list", "--json", "--event", "search", *target))[1]
    )["dead_letters"]
    assert [d["message_id"] for d in by_event] == ["cli-2"]
    none_old = json.loads(
        (await run_cli(capsys, "dead-letters", "list", "--json", "--older-than", "1h", *target))[1]
    )
    assert none_old == {"dead_letters": []}

    first, second = (int(d["id"]) for d in listed)
    code, out = await run_cli(capsys, "dead-letters", "show", str(first), "--json", *target)
    assert code == 0
    assert json.loads(out)["event"]["message_id"] == "cli-1"

    code, out = await run_cli(capsys, "dead-letters", "replay", str(first), "--json", *target)
    assert (code, json.loads(out)) == (0, {"replayed": 1, "skipped_duplicates": 0})
    await until(lambda: len(accepted(sandbox)) == 1)

    code, out = await run_cli(capsys, "dead-letters", "purge", "--reason", "HTTP_400", *target)
    assert (code, out.strip()) == (0, "purged: 1")
    code, out = await run_cli(capsys, "dead-letters", "list", *target)
    assert code == 0
    assert "0 dead letters" in out
    assert second not in [d.id for d in await running.dead_letters()]


async def test_dead_letters_command_refuses_an_empty_selection_and_reports_rpc_errors(
    start, sidecar, capsys
):
    running = await start()
    code = await asyncio.to_thread(
        cli.main, ["dead-letters", "purge", "--target", running.sidecar.grpc_address], {}
    )
    assert code == 2
    assert "needs ids" in capsys.readouterr().err
    without_queue = await asyncio.to_thread(
        cli.main, ["dead-letters", "list", "--target", sidecar.grpc_address], {}
    )
    assert without_queue == 2
    assert "FAILED_PRECONDITION" in capsys.readouterr().err


# -- `bluecore-sidecar serve` as a real process ----------------------------------------------


async def test_serve_with_a_queue_path_queues_exits_0_on_sigterm_and_keeps_the_event(
    sandbox, tmp_path
):
    """A real `serve` process: QUEUED during an outage, SIGTERM exits 0, a second `serve`
    on the same file while the first runs stops with one line, and the next start delivers."""
    path = tmp_path / "queue.db"
    env = serve_env(
        sandbox.url,
        BLUECORE_NAMESPACE=NAMESPACE,
        SIDECAR_QUEUE_PATH=str(path),
        SIDECAR_QUEUE_RETRY_CAP="100ms",
        SIDECAR_SHUTDOWN_GRACE="2s",
    )
    sandbox.fail_next(OUTAGE, 503)
    async with serve(env) as served:
        async with grpc.aio.insecure_channel(served.grpc_address) as channel:
            stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
            request = delivery_pb2.DeliverRequest(event=make_event(messageId="p-1"), mode=WAIT)
            reply = await stub.Deliver(request, timeout=2)
        assert reply.result.status == Status.DELIVERY_STATUS_QUEUED

        second = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bluecore_sidecar",
            "serve",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(30):
            _, err = await second.communicate()
        assert second.returncode == 2
        assert "in use" in err.decode().splitlines()[-1]

        served.process.send_signal(signal.SIGTERM)
        assert await served.finish(30) == 0
    assert accepted(sandbox) == []

    sandbox.clear_faults()
    async with serve(env) as served:
        await until(lambda: len(accepted(sandbox)) == 1, timeout=15)
        served.process.send_signal(signal.SIGTERM)
        assert await served.finish(30) == 0


async def test_a_corrupt_queue_file_is_moved_aside_and_a_fresh_queue_serves(
    start, sandbox, tmp_path, captured_logs
):
    (tmp_path / "queue.db").write_bytes(b"this is not a SQLite database" * 100)
    running = await start()
    result = await running.deliver(make_event(messageId="fresh-1"), WAIT)
    assert result.status == Status.DELIVERY_STATUS_DELIVERED
    aside = [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1
    assert aside[0].startswith("queue.db.corrupt-")
    errors = [line for line in captured_logs.getvalue().splitlines() if '"ERROR"' in line]
    assert any("corrupt" in line for line in errors)


async def test_replay_maps_again_with_the_settings_of_the_sidecar_that_sends_it(sandbox, tmp_path):
    """A dead letter replayed by a sidecar whose event map now drops that event is not sent:
    it is a dead letter again, with the mapping's reason."""
    path = tmp_path / "queue.db"
    sandbox.fail_next(1, 400)
    async with durable(durable_settings(sandbox, path)) as first:
        await first.deliver(make_event(messageId="rm-1"), ENQUEUE)
        dead = await dead_letter_appears(first)
        assert dead.reason == "HTTP_400"
    base = durable_settings(sandbox, path)
    dropping = dataclasses.replace(
        base, rules=dataclasses.replace(base.rules, event_map={"productviewed": None})
    )
    async with durable(dropping) as second:
        replay = await second.admin.ReplayDeadLetters(
            delivery_pb2.ReplayDeadLettersRequest(all=True)
        )
        assert replay.replayed == 1
        again = await dead_letters_appear(second, reasons=["EVENT_DISABLED"])
        assert again[0].message_id == "rm-1"
    assert len(sandbox.received) == 1  # only the first, refused try


async def test_a_batch_in_wait_mode_answers_each_event_in_order(start, sandbox):
    running = await start()
    events = [
        make_event(messageId=f"bt-{n}", traits={"email": f"c{n}@example.com"}) for n in range(5)
    ]
    reply = await running.stub.DeliverBatch(
        delivery_pb2.DeliverBatchRequest(events=events, mode=WAIT), timeout=10
    )
    assert [r.message_id for r in reply.results] == [f"bt-{n}" for n in range(5)]
    assert {r.status for r in reply.results} == {Status.DELIVERY_STATUS_DELIVERED}
    sandbox.fail_next(OUTAGE, 503)
    later = [make_event(messageId=f"bq-{n}") for n in range(3)]
    queued = await running.stub.DeliverBatch(
        delivery_pb2.DeliverBatchRequest(events=later, mode=ENQUEUE), timeout=10
    )
    assert {r.status for r in queued.results} == {Status.DELIVERY_STATUS_QUEUED}
    sandbox.clear_faults()
    # The queued three are delivered by the workers once Bluecore is back.
    await until(lambda: len(accepted(sandbox)) == 8)


async def test_background_tries_honour_retry_after(start, sandbox):
    running = await start()
    sandbox.fail_next(1, 503, retry_after=1)
    await running.deliver(make_event(messageId="ra-1"), ENQUEUE)
    await until(lambda: len(accepted(sandbox)) == 1)
    first, second = sandbox.received
    assert first.status == 503
    assert second.received_at - first.received_at >= 0.95


async def test_dead_letters_come_in_pages_and_an_unknown_id_is_not_found(start, sandbox):
    running = await start()
    sandbox.fail_next(3, 400)
    for n in range(3):
        await running.deliver(
            make_event(messageId=f"pg-{n}", traits={"email": f"p{n}@example.com"}), ENQUEUE
        )
    await dead_letters_appear(running, 3)
    seen: list[str] = []
    token = ""
    for _ in range(3):
        page = await running.admin.ListDeadLetters(
            delivery_pb2.ListDeadLettersRequest(page_size=2, page_token=token)
        )
        seen.extend(d.message_id for d in page.dead_letters)
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == ["pg-0", "pg-1", "pg-2"]
    assert len(seen) == 3
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.admin.GetDeadLetter(delivery_pb2.GetDeadLetterRequest(id=999))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await running.admin.ListDeadLetters(
            delivery_pb2.ListDeadLettersRequest(page_token="not-a-token")
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_sigterm_answers_waiting_calls_queued_at_once_and_stops_within_the_grace(
    sandbox, tmp_path
):
    """Draining stops claiming: a WAIT call whose first try is still retrying in an outage
    (each 503 held 1 s) gets FIRST_TRY_GRACE, then the try is cut and the call answers QUEUED
    (its event is on disk) rather than at its deadline."""
    settings = durable_settings(sandbox, tmp_path / "queue.db", shutdown_grace=timedelta(seconds=3))
    sandbox.fail_next(OUTAGE, 503)
    sandbox.delay(1.0)
    async with durable(settings) as running:
        call = asyncio.create_task(running.deliver(make_event(messageId="sd-1"), WAIT, timeout=20))
        await until(lambda: len(sandbox.received) >= 1)
        loop = asyncio.get_running_loop()
        began = loop.time()
        drain = asyncio.create_task(running.sidecar.drain())
        result = await call
        answered = loop.time() - began
        await drain
        drained = loop.time() - began
    assert result.status == Status.DELIVERY_STATUS_QUEUED
    assert "shutting down" in result.detail
    assert answered < 2.0  # long before the call's 20 s deadline
    assert drained < 3.0 + 2.0  # the grace, and the try cut at its end
    sandbox.clear_faults()
    async with durable(settings):
        await until(lambda: len(accepted(sandbox)) == 1)


async def test_a_wait_calls_try_is_a_child_span_of_the_call(start, sandbox, span_exporter):
    running = await start()
    result = await running.deliver(make_event(messageId="tw-1"), WAIT)
    assert result.status == Status.DELIVERY_STATUS_DELIVERED
    # The try's span ends after its completion commits, which may follow the answer.
    await until(lambda: any(s.name == BACKGROUND_SPAN for s in span_exporter.get_finished_spans()))
    spans = span_exporter.get_finished_spans()
    call = next(s for s in spans if s.name == DELIVERY_SPAN)
    tried = next(s for s in spans if s.name == BACKGROUND_SPAN)
    assert tried.parent is not None
    assert tried.parent.span_id == call.context.span_id
    assert result.trace_id == format(call.context.trace_id, "032x")
    http = [s for s in spans if s.parent is not None and s.parent.span_id == tried.context.span_id]
    assert [s.name for s in http] == ["POST"]


async def test_workers_sharing_one_file_keep_dedup_and_order_across_them(sandbox, tmp_path):
    """SIDECAR_WORKERS > 1: two sidecars on one queue file. An id queued through one is
    ALREADY_QUEUED through the other, and a DIRECT unsubscribe through the second waits for
    the optin that the first has queued."""
    settings = durable_settings(sandbox, tmp_path / "queue.db", workers=2)
    async with durable(settings) as first, durable(settings) as second:
        optin = await stalled_failing_optin(first, sandbox)
        again = await second.deliver(signed_up("optin"), WAIT, timeout=2)
        assert again.status == Status.DELIVERY_STATUS_QUEUED
        assert again.reason == "ALREADY_QUEUED"
        direct = await second.deliver(unsubscribed("unsub"), DIRECT, timeout=10)
        assert direct.status == Status.DELIVERY_STATUS_DELIVERED
        assert (await optin).status == Status.DELIVERY_STATUS_QUEUED
    assert [event for event, _ in accepted(sandbox)] == ["optin", "unsubscribe"]


async def test_a_wait_batch_keeps_one_customers_order_while_its_first_try_is_under_way(
    start, sandbox
):
    """The optin's first try starts before its enqueue has committed; the unsubscribe right
    behind it in the same batch must wait in the queue, not be sent beside it (it would be
    accepted while the optin gets a 503)."""
    running = await start()
    sandbox.fail_next(1, 503)
    reply = await running.stub.DeliverBatch(
        delivery_pb2.DeliverBatchRequest(
            events=[signed_up("bo-optin"), unsubscribed("bo-unsub")], mode=WAIT
        ),
        timeout=10,
    )
    optin, unsubscribe = reply.results
    # The optin's try retries the 503 within itself; whatever it answers, it went first.
    assert optin.status in (Status.DELIVERY_STATUS_DELIVERED, Status.DELIVERY_STATUS_QUEUED)
    assert unsubscribe.status == Status.DELIVERY_STATUS_QUEUED
    assert "after the earlier queued events" in unsubscribe.detail
    await until(lambda: len(accepted(sandbox)) == 2)
    assert [event for event, _ in accepted(sandbox)] == ["optin", "unsubscribe"]
    assert sandbox.received[0].status == 503


async def test_a_wait_event_the_full_queue_refuses_answers_delivered_if_its_try_was_accepted(
    start, sandbox
):
    """With room for no event, the enqueue answers QUEUE_FULL; a WAIT event's first try had
    started beside that commit and Bluecore took it, so the answer is DELIVERED (true), and
    the store remembers the id: the same id again is a duplicate, sent once in all."""
    running = await start(queue_max_bytes=8)
    result = await running.deliver(make_event(messageId="qf-1"), WAIT)
    assert result.status == Status.DELIVERY_STATUS_DELIVERED
    queue = running.sidecar.background.queue  # type: ignore[union-attr]
    assert (await queue.stats()).depth == 0
    await until(lambda: len(sandbox.received) == 1)
    again = await running.deliver(make_event(messageId="qf-1"), WAIT)
    assert again.status == Status.DELIVERY_STATUS_SKIPPED_DUPLICATE
    record = await queue.lookup("qf-1")
    assert record is not None
    assert record.state == "delivered"
    queued = await running.deliver(make_event(messageId="qf-2"), ENQUEUE)
    assert queued.status == Status.DELIVERY_STATUS_FAILED_RETRYABLE
    assert queued.reason == "QUEUE_FULL"
    assert len(sandbox.received) == 1  # ENQUEUE never sends what it could not queue


async def test_a_wait_event_delivered_within_the_linger_is_never_queued(
    start, sandbox, monkeypatch
):
    """A first try that delivers before its lingering enqueue was committed takes the
    enqueue back: one write in all (the delivered id, unsynced), no entry ever on disk, and
    the id still known to the store (and after a restart, see the dedup tests).

    The linger is stretched to 30 s here so that "delivered within the linger" holds on a
    loaded CI machine too, where the sandbox's answer can take longer than 5 ms."""
    monkeypatch.setattr(store, "_ENQUEUE_LINGER", 30.0)
    running = await start()
    queue = running.sidecar.background.queue  # type: ignore[union-attr]
    before = await queue.stats()
    result = await running.deliver(make_event(messageId="two-1"), WAIT)
    assert result.status == Status.DELIVERY_STATUS_DELIVERED

    async def settled() -> Any:
        stats = await queue.stats()
        return stats if stats.operations > before.operations else None

    after = await eventually(settled, timeout=10.0, interval=0.02)
    assert after.operations - before.operations == 1
    assert after.synced_commits == before.synced_commits  # DELIVERED needs no fsync
    assert after.depth == 0
    record = await queue.lookup("two-1")
    assert record is not None
    assert record.state == "delivered"
    again = await running.deliver(make_event(messageId="two-1"), WAIT)
    assert again.status == Status.DELIVERY_STATUS_SKIPPED_DUPLICATE
    assert len(sandbox.received) == 1


async def test_a_wait_event_whose_send_outlasts_the_linger_is_on_disk_while_it_is_sent(
    start, sandbox, monkeypatch, tmp_path
):
    """Bluecore slower than the linger: the entry is committed (claimed) while its first
    try is out, and the completion removes it: two writes, neither synced. (The linger is
    shortened to 50 ms here, well inside the upstream's 0.5 s.)"""
    monkeypatch.setattr(store, "_ENQUEUE_LINGER", 0.05)
    running = await start()
    queue = running.sidecar.background.queue  # type: ignore[union-attr]
    sandbox.delay(0.5)
    before = await queue.stats()
    call = asyncio.create_task(running.deliver(make_event(messageId="slow-1"), WAIT, timeout=10))
    await until(lambda: len(sandbox.received) >= 1)
    await asyncio.sleep(0.2)  # far past the linger, well before the answer
    # Read from the file by another connection: a stats() call would take the entry along.
    on_disk = in_file(tmp_path / "queue.db", "SELECT message_id, state FROM entries")
    assert on_disk == [("slow-1", 1)]  # committed, claimed by its first try
    result = await call
    assert result.status == Status.DELIVERY_STATUS_DELIVERED

    async def settled() -> Any:
        stats = await queue.stats()
        return stats if stats.depth == 0 else None

    after = await eventually(settled, timeout=10.0, interval=0.02)
    # The enqueue and the completion; stats() calls are reads, not counted.
    assert after.operations - before.operations == 2
    assert after.synced_commits == before.synced_commits
    record = await queue.lookup("slow-1")
    assert record is not None
    assert record.state == "delivered"


async def test_a_wait_event_delivered_within_the_linger_is_not_on_disk_while_it_is_sent(
    start, sandbox, tmp_path
):
    """With the default linger, a send that takes 0.2 s (well inside it) and delivers never
    writes its entry: during the send the file has no entry, afterwards only the delivered
    id. Read by another connection, so no read of ours takes the entry along."""
    assert store._ENQUEUE_LINGER >= 0.4  # the premise: the send ends well within it
    running = await start()
    sandbox.delay(0.2)
    call = asyncio.create_task(running.deliver(make_event(messageId="ok-1"), WAIT, timeout=10))
    await until(lambda: len(sandbox.received) >= 1)
    db = tmp_path / "queue.db"
    assert in_file(db, "SELECT count(*) FROM entries") == [(0,)]
    result = await call
    assert result.status == Status.DELIVERY_STATUS_DELIVERED
    await until(
        lambda: in_file(db, "SELECT count(*) FROM delivered WHERE message_id = 'ok-1'") == [(1,)]
    )
    assert in_file(db, "SELECT count(*) FROM entries") == [(0,)]


async def test_a_wait_event_answered_queued_at_shutdown_was_synced_first(sandbox, tmp_path):
    """Its enqueue committed unsynced while its first try was under way; the QUEUED answer
    promises the disk, so a synced commit comes before it. The next start delivers it."""
    settings = durable_settings(sandbox, tmp_path / "queue.db", shutdown_grace=timedelta(seconds=2))
    sandbox.fail_next(OUTAGE, 503)
    sandbox.delay(1.0)  # each 503 held 1 s: the try is still going when shutdown cuts it
    async with durable(settings) as running:
        queue = running.sidecar.background.queue  # type: ignore[union-attr]
        call = asyncio.create_task(running.deliver(make_event(messageId="sq-1"), WAIT, timeout=20))
        await until(lambda: len(sandbox.received) >= 1)
        before = await queue.stats()
        assert before.depth == 1
        drain = asyncio.create_task(running.sidecar.drain())
        result = await call
        answered = await queue.stats()
        await drain
    assert result.status == Status.DELIVERY_STATUS_QUEUED
    assert "shutting down" in result.detail
    assert answered.synced_commits > before.synced_commits
    sandbox.clear_faults()
    async with durable(settings):
        await until(lambda: len(accepted(sandbox)) == 1)


async def test_a_wait_call_that_leaves_mid_try_leaves_its_event_to_a_background_try(start, sandbox):
    """The first try runs in the call itself; a caller that cancels while Bluecore holds
    the answer cuts that send, and a background try delivers the committed event (at least
    once: Bluecore may count the cut request too)."""
    running = await start()
    queue = running.sidecar.background.queue  # type: ignore[union-attr]
    sandbox.delay(30, count=1)
    call = running.stub.Deliver(
        delivery_pb2.DeliverRequest(event=make_event(messageId="lv-1"), mode=WAIT), timeout=20
    )
    await until(lambda: len(sandbox.received) >= 1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    async def delivered() -> bool:
        stats = await queue.stats()
        record = await queue.lookup("lv-1")
        return stats.depth == 0 and record is not None and record.state == "delivered"

    await eventually(delivered, timeout=10.0, interval=0.05)
    # The cut try (recorded as it arrived, answer held), and the background one.
    assert len(sandbox.received) == 2


async def test_a_first_try_that_bluecore_answers_soon_after_sigterm_still_delivers(
    sandbox, tmp_path
):
    """Shutdown lets a WAIT call's first try under way finish within FIRST_TRY_GRACE: an
    answer held 0.3 s upstream still makes it DELIVERED, sent once (not cut and resent)."""
    settings = durable_settings(sandbox, tmp_path / "queue.db", shutdown_grace=timedelta(seconds=3))
    sandbox.delay(0.3)
    async with durable(settings) as running:
        call = asyncio.create_task(running.deliver(make_event(messageId="sg-1"), WAIT, timeout=20))
        await until(lambda: len(sandbox.received) >= 1)
        drain = asyncio.create_task(running.sidecar.drain())
        result = await call
        await drain
    assert result.status == Status.DELIVERY_STATUS_DELIVERED
    async with durable(settings) as again:
        stats = await again.sidecar.background.queue.stats()  # type: ignore[union-attr]
    assert stats.depth == 0
    assert len(sandbox.received) == 1
