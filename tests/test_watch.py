"""The live view: WatchDeliveries and `watch`; a slow watcher never slows delivery."""

from __future__ import annotations

import asyncio
import json

import grpc
from bluecore_sidecar import cli
from bluecore_sidecar.outcomes import OutcomeBus
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc

from .conftest import make_event

Status = delivery_pb2.DeliveryStatus


async def wait_for_watchers(sidecar, count: int) -> None:
    async with asyncio.timeout(10):
        # The bus has no "subscribed" event to wait on; polling a public count is enough here.
        while sidecar.bus.watcher_count < count:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


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
        stream.cancel()
    ids = [item.result.message_id for item in received]
    assert len(set(ids)) == len(ids)
    assert set(ids) <= {f"e-{n}" for n in range(40)}
    assert len(received) + received[-1].dropped == 40


async def test_full_buffer_drops_newest_and_counts_them():
    """The bus itself: a watcher that does not read keeps its first outcomes, counts the rest."""
    bus = OutcomeBus(buffer=2)
    watcher = bus.subscribe()
    only_failed = bus.subscribe([Status.DELIVERY_STATUS_FAILED_RETRYABLE])
    for n in range(5):
        bus.publish(
            delivery_pb2.DeliveryResult(
                message_id=f"m-{n}", status=Status.DELIVERY_STATUS_DELIVERED
            )
        )
    assert watcher.dropped == 3
    assert only_failed.dropped == 0
    assert [(await watcher.next()).message_id for _ in range(2)] == ["m-0", "m-1"]
    bus.close_all()
    assert await watcher.next() is None
    assert await only_failed.next() is None
    watcher.close()
    only_failed.close()
    assert bus.watcher_count == 0


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
