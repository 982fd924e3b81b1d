"""Load generator: many concurrent Deliver or DeliverBatch calls from one grpc.aio client.

It runs as its own process so it never shares a GIL with the server under test. Protocol with
the driver (``bench/run.py``), one JSON object per stdout line:

1. builds every request up front (a unique ``message_id`` per event), connects and sends the
   warm-up calls, then prints ``{"ready": true}``;
2. waits for a line on stdin, runs the measured calls, printing ``{"progress": N}`` every two
   seconds: closed loop with ``--concurrency`` calls in flight, or, with ``--rate``, open loop
   (a ``Deliver`` call is started every 1/rate seconds whether or not earlier ones have
   answered, and its latency counts from the moment it was due, so a slow server cannot hide
   its queueing by slowing the generator down);
3. prints ``{"result": {...}}``: wall time, per-call latencies summarised, outcome counts and
   its own CPU seconds, then exits.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import math
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from google.protobuf import json_format

Status = delivery_pb2.DeliveryStatus

#: Example files that are meant not to be delivered (they demonstrate skips and rejections).
_NOT_DELIVERABLE_PREFIXES = ("skip_", "reject_")


def load_events(directory: Path) -> list[delivery_pb2.DataflyEvent]:
    """The deliverable example events, parsed the way a Signal JSON event is parsed."""
    events = []
    for path in sorted(directory.glob("*.json")):
        if path.name.startswith(_NOT_DELIVERABLE_PREFIXES):
            continue
        event = delivery_pb2.DataflyEvent()
        json_format.Parse(path.read_text(), event, ignore_unknown_fields=True)
        events.append(event)
    if not events:
        raise SystemExit(f"loadgen: no deliverable events in {directory}")
    return events


def as_customer(event: delivery_pb2.DataflyEvent, customer: str) -> None:
    """Give ``event`` another customer: its anonymous id and every email it carries."""
    event.anonymous_id = f"anon-{customer}"
    email = f"{customer}@example.com"
    for fields in (event.traits, event.context.traits, event.properties):
        if "email" in fields:
            fields["email"] = email


def build_requests(
    events: list[delivery_pb2.DataflyEvent],
    mode: str,
    calls: int,
    batch_size: int,
    prefix: str,
    customers: int = 0,
) -> list[delivery_pb2.DeliverRequest] | list[delivery_pb2.DeliverBatchRequest]:
    """``calls`` requests cycling through ``events``, each event with a fresh message id.

    ``customers`` > 0 spreads the events over that many customers (round robin); 0 keeps the
    example events' own customer. The durable queue delivers one customer's events one at a
    time, in order, so a single customer is its worst case, not a typical load.
    """
    serial = 0

    def next_event() -> delivery_pb2.DataflyEvent:
        nonlocal serial
        event = delivery_pb2.DataflyEvent()
        event.CopyFrom(events[serial % len(events)])
        event.message_id = f"{prefix}-{serial}"
        if customers:
            as_customer(event, f"{prefix}-c{serial % customers}")
        serial += 1
        return event

    if mode == "deliver":
        return [delivery_pb2.DeliverRequest(event=next_event()) for _ in range(calls)]
    return [
        delivery_pb2.DeliverBatchRequest(events=[next_event() for _ in range(batch_size)])
        for _ in range(calls)
    ]


def emit(obj: object) -> None:
    """One JSON line to the driver."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def run_open_loop(
    stubs: Sequence[delivery_pb2_grpc.DeliveryServiceStub],
    requests: list[delivery_pb2.DeliverRequest],
    rate: float,
    timeout: float,
) -> tuple[list[float], collections.Counter[str], float, dict[str, float]]:
    """Start one Deliver every ``1/rate`` s; latencies (s) from each call's due time."""
    latencies: list[float] = []
    outcomes: collections.Counter[str] = collections.Counter()
    in_flight = 0
    peak = 0
    late = 0  # calls started more than 1 ms after they were due: the generator fell behind

    async def one(request: delivery_pb2.DeliverRequest, due: float, number: int) -> None:
        nonlocal in_flight
        try:
            response = await stubs[number % len(stubs)].Deliver(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            outcomes[f"RPC_{exc.code().name}"] += 1
            return
        finally:
            in_flight -= 1
        latencies.append(time.perf_counter() - due)
        outcomes[Status.Name(response.result.status).removeprefix("DELIVERY_STATUS_")] += 1

    async def reporter() -> None:
        while True:
            await asyncio.sleep(2)
            emit({"progress": len(latencies)})

    ticker = asyncio.create_task(reporter())
    tasks = []
    interval = 1.0 / rate
    # The generator is the instrument: a collection of its own (its calls' objects pile up
    # until the end) would start every call due meanwhile late, for whichever server is
    # measured. Its collector stays off for the few seconds of the measured calls.
    gc.collect()
    gc.freeze()
    gc.disable()
    started = time.perf_counter()
    try:
        for i, request in enumerate(requests):
            due = started + i * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.001:
                late += 1
            in_flight += 1
            peak = max(peak, in_flight)
            tasks.append(asyncio.create_task(one(request, due, i)))
        await asyncio.gather(*tasks)
    finally:
        ticker.cancel()
        gc.enable()
    wall = time.perf_counter() - started
    return (
        latencies,
        outcomes,
        wall,
        {"offered_rate": rate, "peak_in_flight": peak, "late_starts": late},
    )


async def run_calls(
    stubs: Sequence[delivery_pb2_grpc.DeliveryServiceStub],
    mode: str,
    requests: list[delivery_pb2.DeliverRequest] | list[delivery_pb2.DeliverBatchRequest],
    concurrency: int,
    timeout: float,
    progress: bool,
    max_seconds: float = 0.0,
) -> tuple[list[float], collections.Counter[str], float]:
    """Send ``requests`` with ``concurrency`` in flight; latencies (s), outcomes, wall (s).

    With ``max_seconds``, no call starts after that many seconds (the rest are not sent).
    """
    latencies: list[float] = []
    outcomes: collections.Counter[str] = collections.Counter()
    pending = iter(requests)

    async def worker(number: int) -> None:
        # Each worker keeps to one connection; with --channels, the workers spread over them.
        stub = stubs[number % len(stubs)]
        method = stub.Deliver if mode == "deliver" else stub.DeliverBatch
        for request in pending:
            began = time.perf_counter()
            if max_seconds and began - started > max_seconds:
                return
            try:
                response = await method(request, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                outcomes[f"RPC_{exc.code().name}"] += 1
                continue
            latencies.append(time.perf_counter() - began)
            results = [response.result] if mode == "deliver" else response.results
            for result in results:
                outcomes[Status.Name(result.status).removeprefix("DELIVERY_STATUS_")] += 1

    async def reporter() -> None:
        while True:
            await asyncio.sleep(2)
            emit({"progress": len(latencies)})

    started = time.perf_counter()
    ticker = asyncio.create_task(reporter()) if progress else None
    try:
        await asyncio.gather(*(worker(number) for number in range(concurrency)))
    finally:
        if ticker is not None:
            ticker.cancel()
    return latencies, outcomes, time.perf_counter() - started


def cpu_seconds() -> float:
    """User plus system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main(args: argparse.Namespace) -> None:
    """Warm up, report ready, wait for the go line, measure, report."""
    events = load_events(args.events)
    size = args.batch_size if args.mode == "batch" else 1
    measured = build_requests(
        events, args.mode, args.calls, size, f"{args.prefix}-m", args.customers
    )
    warmup = build_requests(
        events, args.mode, args.warmup, size, f"{args.prefix}-w", args.customers
    )
    async with contextlib.AsyncExitStack() as stack:
        # Separate channels share one TCP connection unless each has its own subchannel pool;
        # SIDECAR_WORKERS spreads connections, not calls, so --channels opens that many.
        options = [("grpc.use_local_subchannel_pool", 1)] if args.channels > 1 else []
        stubs = []
        for _ in range(args.channels):
            channel = await stack.enter_async_context(
                grpc.aio.insecure_channel(args.target, options=options)
            )
            await asyncio.wait_for(channel.channel_ready(), args.timeout)
            stubs.append(delivery_pb2_grpc.DeliveryServiceStub(channel))
        _, warm_outcomes, _ = await run_calls(
            stubs, args.mode, warmup, args.concurrency, args.timeout, progress=False
        )
        emit({"ready": True, "warmup_outcomes": dict(warm_outcomes)})
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if not line.strip():
            return  # the driver went away
        cpu_before = cpu_seconds()
        extra: dict[str, float] = {}
        if args.rate:
            latencies, outcomes, wall, extra = await run_open_loop(
                stubs,
                measured,  # type: ignore[arg-type]  # --rate implies --mode deliver
                args.rate,
                args.timeout,
            )
        else:
            latencies, outcomes, wall = await run_calls(
                stubs,
                args.mode,
                measured,
                args.concurrency,
                args.timeout,
                progress=True,
                max_seconds=args.max_seconds,
            )
        cpu = cpu_seconds() - cpu_before
    latencies.sort()
    sent = len(latencies) + sum(n for k, n in outcomes.items() if k.startswith("RPC_"))
    emit(
        {
            "result": {
                "mode": args.mode,
                # Calls sent: all of them, unless --max-seconds stopped the phase early.
                "calls": sent,
                "events": sent * size,
                "completed_calls": len(latencies),
                "wall_s": wall,
                "p50_ms": percentile(latencies, 50) * 1000,
                "p90_ms": percentile(latencies, 90) * 1000,
                "p99_ms": percentile(latencies, 99) * 1000,
                "max_ms": (latencies[-1] if latencies else 0.0) * 1000,
                "outcomes": dict(outcomes),
                "loadgen_cpu_s": cpu,
                **extra,
            }
        }
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT of the DeliveryService")
    parser.add_argument("--mode", choices=("deliver", "batch"), required=True)
    parser.add_argument("--calls", type=int, required=True, help="measured calls")
    parser.add_argument("--warmup", type=int, default=0, help="calls before the measured ones")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight")
    parser.add_argument(
        "--channels", type=int, default=1, help="gRPC connections the calls are spread over"
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="open loop: Deliver calls per second (0: closed)"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=0.0, help="closed loop: start no call after this"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline per call, seconds")
    parser.add_argument("--prefix", required=True, help="message_id prefix, unique per phase")
    parser.add_argument(
        "--customers", type=int, default=0, help="spread events over N customers (0: as given)"
    )
    parser.add_argument("--events", type=Path, required=True, help="directory of example events")
    parsed = parser.parse_args()
    if parsed.rate and parsed.mode != "deliver":
        parser.error("--rate needs --mode deliver")
    asyncio.run(main(parsed))
