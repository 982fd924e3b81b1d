"""Idle watchers: opens N ``WatchDeliveries`` streams to a sidecar and never reads them.

This is what a stuck dashboard or a crashed ``bluecore-sidecar watch`` that left its TCP
connection open looks like to the sidecar. The bench runs it beside one sidecar and measures
that sidecar's Deliver throughput and latency against an identical sidecar without watchers.

Protocol with the driver (``bench/run.py``), one JSON object per stdout line:

1. opens ``--count`` streams on its own channel, then makes them visible: it sends one probe
   ``Deliver`` (so each stream gets one outcome) and waits for every stream's initial
   metadata, which the server sends with that first message; reading the metadata does not
   read the message. Prints ``{"ready": true, "open": N, "refused": {...}}``;
2. holds the streams, reading nothing, until stdin closes or says anything; then cancels them
   and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys

import grpc
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc


def emit(obj: object) -> None:
    """One JSON line to the driver."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def probe_event(prefix: str) -> delivery_pb2.DataflyEvent:
    """A deliverable page view with a fresh message id."""
    event = delivery_pb2.DataflyEvent(
        message_id=f"{prefix}-probe", type="page", name="Home", anonymous_id="bench-watchers"
    )
    event.context.consent["marketing"] = True
    event.context.page.url = "https://shop.example/"
    return event


async def main(args: argparse.Namespace) -> None:
    """Open, confirm, hold, cancel."""
    # A channel of its own (and its own subchannel pool): the watchers' HTTP/2 connection is
    # never the one the load generator's calls use.
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(args.target, options=options) as channel:
        await asyncio.wait_for(channel.channel_ready(), args.timeout)
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        calls = [
            stub.WatchDeliveries(delivery_pb2.WatchDeliveriesRequest()) for _ in range(args.count)
        ]
        # Streams are subscribed on the server when their handler runs; give them a moment,
        # then one outcome makes every subscribed stream send its headers.
        await asyncio.sleep(min(2.0, 0.2 + args.count / 1000))
        await stub.Deliver(
            delivery_pb2.DeliverRequest(event=probe_event(args.prefix)), timeout=args.timeout
        )
        refused: collections.Counter[str] = collections.Counter()

        async def confirm(call: grpc.aio.UnaryStreamCall) -> bool:
            try:
                await asyncio.wait_for(call.initial_metadata(), args.timeout)
            except TimeoutError:
                refused["NO_HEADERS_IN_TIME"] += 1
                return False
            if call.done():
                refused[(await call.code()).name] += 1
                return False
            return True

        opened = sum(await asyncio.gather(*(confirm(call) for call in calls)))
        emit({"ready": True, "open": opened, "refused": dict(refused)})
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        for call in calls:
            call.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT of the sidecar")
    parser.add_argument("--count", type=int, default=500, help="streams to open")
    parser.add_argument("--prefix", required=True, help="message_id prefix of the probe")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to open them all")
    asyncio.run(main(parser.parse_args()))
