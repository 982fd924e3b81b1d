"""The yardstick: the least a grpc.aio -> aiohttp forwarder can do for the same RPCs.

It serves ``DeliveryService.Deliver`` and ``DeliverBatch`` from the same generated stubs as the
sidecar and POSTs one small fixed-shape JSON body per event over one pooled aiohttp session
(the same connector settings as the sidecar), then answers ``DELIVERED``. No mapping, no
gates, no dedup, no retries, no logs, no metrics, no tracing: whatever the sidecar costs beyond
this is the price of its features.

Run: ``python bench/forwarder.py --listen 127.0.0.1:PORT --upstream URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time

import aiohttp
import grpc
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from google.protobuf import duration_pb2

Status = delivery_pb2.DeliveryStatus


class Forwarder(delivery_pb2_grpc.DeliveryServiceServicer):  # type: ignore[misc]
    """Deliver and DeliverBatch as one POST per event, nothing else."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self._session = session
        self._url = url
        self._token = token
        self._headers = {"Content-Type": "application/json"}

    async def Deliver(  # noqa: N802 - the RPC name comes from the proto
        self, request: delivery_pb2.DeliverRequest, context: grpc.aio.ServicerContext
    ) -> delivery_pb2.DeliverResponse:
        return delivery_pb2.DeliverResponse(result=await self._forward(request.event))

    async def DeliverBatch(  # noqa: N802
        self, request: delivery_pb2.DeliverBatchRequest, context: grpc.aio.ServicerContext
    ) -> delivery_pb2.DeliverBatchResponse:
        results = await asyncio.gather(*(self._forward(event) for event in request.events))
        return delivery_pb2.DeliverBatchResponse(results=results)

    async def _forward(self, event: delivery_pb2.DataflyEvent) -> delivery_pb2.DeliveryResult:
        started = time.monotonic()
        # One fixed shape whatever the event: a custom Bluecore event name (it needs no
        # further fields, so the sandbox accepts it too) and the event's ids, unmapped.
        body = json.dumps(
            {
                "event": "datafly_forward",
                "properties": {
                    "token": self._token,
                    "distinct_id": event.anonymous_id or event.user_id or event.message_id,
                    "message_id": event.message_id,
                    "datafly_type": event.type,
                    "datafly_event": event.event or event.name,
                },
            },
            separators=(",", ":"),
        ).encode()
        result = delivery_pb2.DeliveryResult(message_id=event.message_id, attempts=1)
        try:
            async with self._session.post(self._url, data=body, headers=self._headers) as answer:
                await answer.read()
                result.http_status = answer.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            result.status = Status.DELIVERY_STATUS_FAILED_RETRYABLE
            result.reason = type(exc).__name__
        else:
            ok = 200 <= result.http_status < 300
            result.status = (
                Status.DELIVERY_STATUS_DELIVERED if ok else Status.DELIVERY_STATUS_FAILED_PERMANENT
            )
        elapsed = time.monotonic() - started
        result.latency.CopyFrom(duration_pb2.Duration(nanos=int(elapsed * 1e9)))
        return result


async def main(listen: str, url: str, token: str, concurrency: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=30, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        delivery_pb2_grpc.add_DeliveryServiceServicer_to_server(
            Forwarder(session, url, token), server
        )
        if server.add_insecure_port(listen) == 0:
            raise SystemExit(f"forwarder: cannot listen on {listen}")
        await server.start()
        await stop.wait()
        await server.stop(1.0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT for gRPC")
    parser.add_argument("--upstream", required=True, help="URL to POST each event to")
    parser.add_argument("--token", default="bench-namespace")
    parser.add_argument("--concurrency", type=int, default=64, help="pooled connections")
    args = parser.parse_args()
    asyncio.run(main(args.listen, args.upstream, args.token, args.concurrency))
