"""The live view: WatchDeliveries and `watch`; a slow watcher never slows delivery."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import grpc
import pytest
from bluecore_sidecar import cli
from bluecore_sidecar.outcomes import OutcomeBus
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc

from .conftest import EMAIL, NAMESPACE, error_info, eventually, make_event

Status = delivery_pb2.DeliveryStatus


async def wait_for_watchers(sidecar, count: int) -> None:
    """The bus has no "subscribed" event to wait on; polling a public count is enough here."""
    await eventually(lambda: sidecar.bus.watcher_count >= count, timeout=10)


async def test_watch_streams_outcomes_filtered_by_status(sidecar, stub, sandbox):
    failures = stub.WatchDeliveries(
        delivery_pb2.WatchDeliveriesRequest(statuses=[Status.DELIVERY_STATUS_FAILED_PERMANENT])
    )
    everything = stub.WatchDeliveries(delivery_pb2.WatchDeliveriesRequest())
    await wait_for_watchers(sidecar, 2)

    await stub.Deliver(delivery_pb2.DeliverRequest(event=make_event(messageId="ok")), timeout=10)
    sandbox.fail_next(1, 400)
    await stub.Deliver(delivery_pb2.DeliverRequest(event=make_event(messageId="bad")), timeout=10)

    async with asyncio.timeout(10):
        first_failure = await failures.read()
        seen = [await everything.read(), await everything.read()]
    assert first_failure.result.message_id == "bad"
    assert first_failure.result.reason == "HTTP_400"
    assert first_failure.dropped == 0
    assert [(r.result.message_id, r.result.status) for r in seen] == [
        ("ok", Status.DELIVERY_STATUS_DELIVERED),
        ("bad", Status.DELIVERY_STATUS_FAILED_PERMANENT),
    ]
    failures.cancel()
    everything.cancel()


async def test_watchers_see_the_callers_ids_and_names_without_the_token_or_emails(sidecar, stub):
    """A message id or event name holding an email or the token reaches the caller as sent,
    and watchers (like log lines) without them."""
    everything = stub.WatchDeliveries(delivery_pb2.WatchDeliveriesRequest())
    await wait_for_watchers(sidecar, 1)
    sent = [
        make_event(messageId=f"order:{EMAIL}"),
        make_event(messageId=f"m-{NAMESPACE}-2"),
        make_event(messageId="m-3", event=f"Clicked {EMAIL}", properties={}),
    ]
    answers = [
        (await stub.Deliver(delivery_pb2.DeliverRequest(event=event), timeout=10)).result
        for event in sent
    ]
    async with asyncio.timeout(10):
        seen = [(await everything.read()).result for _ in sent]
    everything.cancel()
    assert [a.message_id for a in answers] == [e.message_id for e in sent]
    assert EMAIL in answers[2].datafly_event
    for watched, answer in zip(seen, answers, strict=True):
        assert watched.status == answer.status
        for text in (watched.message_id, watched.datafly_event, watched.bluecore_event):
            assert EMAIL not in text
            assert NAMESPACE not in text
    assert seen[0].message_id.startswith("order:<email:")
    assert seen[1].message_id == "m-***-2"
    assert seen[2].message_id == "m-3"


async def test_stalled_watcher_never_blocks_delivery_and_learns_what_it_lost(start_sidecar):
    """A watcher that reads nothing: every delivery still finishes; later it gets the
    outcomes that fit in its buffer and, with them, the count of those dropped."""
    sidecar = await start_sidecar(watch_buffer=2)
    events = [make_event(messageId=f"e-{n}") for n in range(40)]
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        stream = stub.WatchDeliveries(delivery_pb2.WatchDeliveriesRequest())
        await wait_for_watchers(sidecar, 1)
        reply = await stub.DeliverBatch(delivery_pb2.DeliverBatchRequest(events=events), timeout=20)
        assert [r.status for r in reply.results] == [Status.DELIVERY_STATUS_DELIVERED] * 40

        received: list[delivery_pb2.WatchDeliveriesResponse] = []
        async with asyncio.timeout(10):
            # Every outcome is either handed to the watcher or counted as dropped.
            while not received or len(received) + received[-1].dropped < len(events):
                received.append(await stream.read())
        # The sidecar counts the same losses in its metrics.
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{sidecar.ops_url}/metrics") as response,
        ):
            metrics = await response.text()
        assert f"bluecore_sidecar_watch_dropped_total {received[-1].dropped:.1f}" in metrics
        stream.cancel()
    ids = [item.result.message_id for item in received]
    assert len(set(ids)) == len(ids)
    assert set(ids) <= {f"e-{n}" for n in range(40)}
    assert len(received) + received[-1].dropped == 40


def outcome(n: int, status: int = Status.DELIVERY_STATUS_DELIVERED) -> delivery_pb2.DeliveryResult:
    return delivery_pb2.DeliveryResult(message_id=f"m-{n}", status=status)  # type: ignore[arg-type]


async def test_a_watcher_behind_the_ring_skips_to_the_oldest_kept_and_counts_the_rest():
    """The bus itself: one shared ring; a watcher that does not read loses the oldest."""
    lost: list[int] = []
    bus = OutcomeBus(buffer=2, on_drop=lost.append)
    watcher = bus.subscribe()
    only_failed = bus.subscribe([Status.DELIVERY_STATUS_FAILED_RETRYABLE])
    for n in range(5):
        bus.publish(outcome(n))
    assert watcher.dropped == 3
    assert only_failed.dropped == 0  # none of the lost ones was wanted
    assert [(await watcher.next()).message_id for _ in range(2)] == ["m-3", "m-4"]
    assert lost == [3]
    bus.close_all()
    assert await watcher.next() is None
    assert await only_failed.next() is None
    watcher.close()
    only_failed.close()
    assert bus.watcher_count == 0
    assert lost == [3]


async def test_a_filtered_watcher_counts_only_the_lost_outcomes_it_wanted():
    bus = OutcomeBus(buffer=3)
    failed = Status.DELIVERY_STATUS_FAILED_RETRYABLE
    bus.publish(outcome(0, failed))  # before it subscribed: neither read nor lost
    watcher = bus.subscribe([failed])
    statuses = [failed, Status.DELIVERY_STATUS_DELIVERED, failed, failed]
    statuses += [Status.DELIVERY_STATUS_DELIVERED] * 3 + [failed]
    for n, status in enumerate(statuses, start=1):
        bus.publish(outcome(n, status))
    # The ring keeps m-6, m-7, m-8; wanted and gone: m-1, m-3, m-4.
    assert watcher.dropped == 3
    assert (await watcher.next()).message_id == "m-8"
    bus.publish(outcome(9, failed))
    assert (await watcher.next()).message_id == "m-9"
    assert watcher.dropped == 3


async def test_at_shutdown_a_watcher_sends_only_its_last_outcomes_and_ends():
    """Ending 100 stalled streams costs at most 100 writes each, and nothing is lost unseen."""
    bus = OutcomeBus(buffer=500, sends_per_second=1, burst=1)
    watcher = bus.subscribe()
    for n in range(300):
        bus.publish(outcome(n))
    bus.close_all()
    bus.publish(outcome(300))  # too late: the bus is closed
    sent = []
    async with asyncio.timeout(5):  # unpaced: at one send a second this would take minutes
        while (result := await watcher.next()) is not None:
            sent.append(result.message_id)
    assert sent == [f"m-{n}" for n in range(200, 300)]
    assert watcher.dropped == 200


async def test_watchers_take_turns_at_the_shared_send_rate():
    """Sends are shared first come first served: no watcher can starve the others."""
    bus = OutcomeBus(buffer=100, sends_per_second=2000, burst=1)
    watchers = [bus.subscribe() for _ in range(3)]
    for n in range(4):
        bus.publish(outcome(n))
    order: list[tuple[int, str]] = []

    async def read(index: int) -> None:
        for _ in range(4):
            result = await watchers[index].next()
            assert result is not None
            order.append((index, result.message_id))

    await asyncio.gather(*(read(index) for index in range(3)))
    # Watcher 0 takes the one burst token without waiting and is first in line again; from
    # then on every send waits for the rate, and the waiting watchers go strictly in turn.
    assert [index for index, _ in order] == [0, 0, 1, 2, 0, 1, 2, 0, 1, 2, 1, 2]
    for index in range(3):
        assert [m for i, m in order if i == index] == ["m-0", "m-1", "m-2", "m-3"]


async def test_the_bus_keeps_each_outcome_once_whatever_the_number_of_watchers():
    """2,000 stalled watchers and 10,000 outcomes: the ring holds the last 50, once."""
    bus = OutcomeBus(buffer=50, max_watchers=2000)
    watchers = [bus.subscribe() for _ in range(2000)]
    results = [outcome(n) for n in range(10_000)]
    for result in results:
        bus.publish(result)
    assert all(w.dropped == 9_950 for w in watchers)
    # The outcomes still readable are the very objects published, shared by every watcher.
    first = await watchers[0].next()
    last = await watchers[-1].next()
    assert first is results[9_950]
    assert last is first


async def test_past_the_watcher_cap_a_stream_is_refused_with_too_many_watchers(start_sidecar):
    sidecar = await start_sidecar(max_watchers=2)
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        first = stub.WatchDeliveries(delivery_pb2.WatchDeliveriesRequest())
        second = stub.WatchDeliveries(delivery_pb2.WatchDeliveriesRequest())
        await wait_for_watchers(sidecar, 2)
        third = stub.WatchDeliveries(delivery_pb2.WatchDeliveriesRequest())
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await asyncio.wait_for(third.read(), 10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = error_info(refused.value)
        assert info.reason == "TOO_MANY_WATCHERS"
        assert info.metadata["limit"] == "2"

        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{sidecar.ops_url}/metrics") as response,
        ):
            metrics = await response.text()
        assert "bluecore_sidecar_watchers 2.0" in metrics
        assert 'bluecore_sidecar_calls_refused_total{code="RESOURCE_EXHAUSTED",' in metrics

        # A place freed is a place taken again.
        first.cancel()
        await eventually(lambda: sidecar.bus.watcher_count <= 1, timeout=10)
        fourth = stub.WatchDeliveries(delivery_pb2.WatchDeliveriesRequest())
        await wait_for_watchers(sidecar, 2)
        await stub.Deliver(delivery_pb2.DeliverRequest(event=make_event(messageId="m")), timeout=10)
        async with asyncio.timeout(10):
            assert (await fourth.read()).result.message_id == "m"
        second.cancel()
        fourth.cancel()


async def test_watch_command_prints_a_live_table_until_the_sidecar_stops(
    sidecar, stub, sandbox, capsys
):
    watching = asyncio.ensure_future(
        asyncio.to_thread(cli.main, ["watch", "--target", sidecar.grpc_address], {})
    )
    await wait_for_watchers(sidecar, 1)
    await stub.Deliver(delivery_pb2.DeliverRequest(event=make_event(messageId="row-1")), timeout=10)
    sandbox.fail_next(1, 400)
    await stub.Deliver(delivery_pb2.DeliverRequest(event=make_event(messageId="row-2")), timeout=10)
    async with asyncio.timeout(10):
        await sidecar.drain()  # ends every watch stream
        assert await watching == 0
    lines = capsys.readouterr().out.splitlines()
    header, *rows = lines
    assert header.split()[:3] == ["time", "message", "id"]
    assert [row.split()[1:3] for row in rows] == [
        ["row-1", "Product"],
        ["row-2", "Product"],
    ]
    assert "DELIVERED" in rows[0]
    assert "FAILED_PERMANENT" in rows[1]
    assert rows[1].rstrip().endswith("HTTP_400")


async def test_watch_command_json_lines_with_status_filter(sidecar, stub, sandbox, capsys):
    watching = asyncio.ensure_future(
        asyncio.to_thread(
            cli.main,
            ["watch", "--target", sidecar.grpc_address, "--json", "--status", "failed_permanent"],
            {},
        )
    )
    await wait_for_watchers(sidecar, 1)
    await stub.Deliver(delivery_pb2.DeliverRequest(event=make_event(messageId="fine")), timeout=10)
    sandbox.fail_next(1, 400)
    await stub.Deliver(delivery_pb2.DeliverRequest(event=make_event(messageId="nope")), timeout=10)
    async with asyncio.timeout(10):
        await sidecar.drain()
        assert await watching == 0
    [line] = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    assert record["message_id"] == "nope"
    assert record["status"] == "DELIVERY_STATUS_FAILED_PERMANENT"
    assert record["dropped"] == 0


def test_watch_command_rejects_an_unknown_status(capsys):
    assert cli.main(["watch", "--status", "lost"], {}) == 2
    assert "unknown status 'lost'" in capsys.readouterr().err
