"""Python function calls per delivered event: a deterministic companion to ``make bench``.

CPU seconds on a shared machine move by 10-20 % from run to run; the number of Python function
calls a fixed workload makes does not. This script starts the sidecar in-process through the
production factory (``app.running_sidecar``) against nginx (or ``--upstream URL``), sends a
fixed number of ``Deliver`` calls and ``DeliverBatch`` calls of 20 from a grpc.aio client in
the same process, and counts the calls with ``cProfile`` for each tracing setting: off, 100 %
and parent-based 10 %. The client's share is the same for every version of the sidecar, so a
difference between two commits is the sidecar's.

Run: ``.venv/bin/python bench/calls.py [--events 2000] [--top 15] [--durable]``; ``--durable``
adds the sidecar with a durable queue (WAIT mode) beside each plain one, every event then
with a customer of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

import grpc
from bluecore_devtools.localrun import free_port
from bluecore_sidecar.app import running_sidecar
from bluecore_sidecar.config import Settings
from bluecore_sidecar.telemetry import configure_logging
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from loadgen import as_customer, load_events  # noqa: E402 - needs the path above

TRACING = {
    "off": {},
    "100%": {"OTEL_TRACES_SAMPLER": "always_on"},
    "parent-based 10%": {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    },
}


class _Drop(SpanExporter):
    """Counts spans and throws them away (export runs on the loop: a small fixed cost)."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


@contextlib.contextmanager
def nginx(workdir: Path) -> Iterator[str]:
    """nginx with the bench's config on a free port; yields the events URL."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    config = workdir / "nginx.conf"
    text = (BENCH / "nginx.conf").read_text()
    config.write_text(text.replace("@PORT@", str(port)).replace("@DIR@", str(workdir)))
    child = subprocess.Popen(
        [binary, "-p", str(workdir), "-e", str(workdir / "err.log"), "-c", str(config)]
    )
    try:
        time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/api/track/mobile/v1"
    finally:
        child.terminate()
        child.wait()


def requests(
    events: list[delivery_pb2.DataflyEvent], count: int, tag: str, *, customers: bool = False
) -> list[delivery_pb2.DataflyEvent]:
    """``count`` events cycling through ``events``, each with a fresh message id and, with
    ``customers``, a customer of its own (the durable queue sends one customer's events one
    at a time, so one customer for all would measure its ordering, not its cost)."""
    out = []
    for i in range(count):
        event = delivery_pb2.DataflyEvent()
        event.CopyFrom(events[i % len(events)])
        event.message_id = f"calls-{tag}-{i}"
        if customers:
            as_customer(event, f"calls-{tag}-c{i}")
        out.append(event)
    return out


async def measure(
    url: str,
    tracing: str,
    events: list[delivery_pb2.DataflyEvent],
    count: int,
    top: int,
    sink: TextIO,
    queue: Path | None = None,
    *,
    spread: bool = False,
) -> list[str]:
    """Profile ``count`` Deliver calls and ``count`` events in batches of 20; report lines.

    ``queue``: the sidecar has a durable queue in that file, in WAIT mode. ``spread``: each
    event has a customer of its own (see :func:`requests`)."""
    env = {
        "BLUECORE_NAMESPACE": "bench-namespace",
        "BLUECORE_API_URL": url,
        "SIDECAR_GRPC_ADDRESS": "127.0.0.1:0",
        "SIDECAR_OPS_ADDRESS": "127.0.0.1:0",
        "SIDECAR_LOG_LEVEL": "INFO",
        **TRACING[tracing],
    }
    if queue is not None:
        env["SIDECAR_QUEUE_PATH"] = str(queue)
        env["SIDECAR_DELIVERY_MODE"] = "wait"
    # The SDK reads OTEL_* from the process environment itself.
    for name in [name for name in os.environ if name.startswith("OTEL_")]:
        del os.environ[name]
    os.environ.update(TRACING[tracing])
    settings = Settings.from_env(env)
    exporter = _Drop() if TRACING[tracing] else None
    lines = []
    with contextlib.redirect_stderr(sink):
        async with running_sidecar(settings, env, span_exporter=exporter) as sidecar:
            configure_logging("INFO", sink)  # one JSON line per outcome, as in production
            async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
                stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
                for mode in ("Deliver", "DeliverBatch"):
                    warm = requests(events, 200, f"{tracing}-{mode}-warm", customers=spread)
                    todo = requests(events, count, f"{tracing}-{mode}", customers=spread)
                    await _run(stub, mode, warm)
                    profile = cProfile.Profile()
                    cpu = time.process_time()
                    profile.enable()
                    await _run(stub, mode, todo)
                    profile.disable()
                    cpu = time.process_time() - cpu
                    stats = pstats.Stats(profile)
                    calls = sum(v[1] for v in stats.stats.values())  # type: ignore[attr-defined]
                    setup = f"{tracing}, durable" if queue is not None else tracing
                    lines.append(
                        f"| {setup} | {mode} | {calls / count:,.0f} | {1000 * cpu / count:.2f} |"
                    )
                    if top:
                        lines.append("")
                        lines.extend(_top(stats, top, count))
                        lines.append("")
    return lines


async def _run(
    stub: delivery_pb2_grpc.DeliveryServiceStub, mode: str, events: list[delivery_pb2.DataflyEvent]
) -> None:
    limit = asyncio.Semaphore(64 if mode == "Deliver" else 8)

    async def one(chunk: list[delivery_pb2.DataflyEvent]) -> None:
        async with limit:
            if mode == "Deliver":
                reply = await stub.Deliver(delivery_pb2.DeliverRequest(event=chunk[0]))
                results = [reply.result]
            else:
                batch = await stub.DeliverBatch(delivery_pb2.DeliverBatchRequest(events=chunk))
                results = list(batch.results)
            for result in results:
                if result.status != delivery_pb2.DELIVERY_STATUS_DELIVERED:
                    raise SystemExit(f"not delivered: {result.reason} {result.detail}")

    size = 1 if mode == "Deliver" else 20
    chunks = [events[i : i + size] for i in range(0, len(events), size)]
    await asyncio.gather(*(one(chunk) for chunk in chunks))


def _top(stats: pstats.Stats, count: int, events: int) -> list[str]:
    rows = sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda item: item[1][1],
        reverse=True,
    )[:count]
    out = ["| calls per event | own s per 1k events | function |", "|---|---|---|"]
    for (path, line, name), (_cc, nc, tt, _ct, _callers) in rows:
        short = "/".join(Path(path).parts[-2:]) if path != "~" else ""
        out.append(f"| {nc / events:.1f} | {1000 * tt / events:.3f} | `{short}:{line} {name}` |")
    return out


def main() -> None:
    """Parse the flags, start nginx, measure each tracing setting, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="events per mode (default 2000)")
    parser.add_argument("--top", type=int, default=0, help="also list the N most called")
    parser.add_argument("--tracing", choices=list(TRACING), action="append")
    parser.add_argument("--upstream", help="POST here instead of a local nginx")
    parser.add_argument(
        "--durable",
        action="store_true",
        help="also measure the sidecar with a durable queue (WAIT mode, a fresh file each)",
    )
    args = parser.parse_args()
    events = load_events(BENCH.parent / "examples" / "events")
    print("| tracing | call | Python calls per event | CPU ms per event (profiled) |")
    print("|---|---|---|---|")
    with (
        tempfile.TemporaryDirectory() as tmp,
        contextlib.ExitStack() as stack,
        open(os.devnull, "w") as sink,
    ):
        url = args.upstream or stack.enter_context(nginx(Path(tmp)))
        for tracing in args.tracing or list(TRACING):
            queues = [None, Path(tmp) / f"queue-{tracing[:3]}.db"] if args.durable else [None]
            for queue in queues:
                setup = measure(
                    url, tracing, events, args.events, args.top, sink, queue, spread=args.durable
                )
                lines = asyncio.run(setup)
                for line in lines:
                    print(line, flush=True)


if __name__ == "__main__":
    main()
