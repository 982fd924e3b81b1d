"""Python function calls per delivered event: a deterministic companion to ``make bench``.

CPU seconds on a shared machine move by 10-20 % from run to run; the number of Python function
calls a fixed workload makes does not. This script starts the sidecar in-process through the
production factory (``app.running_sidecar``) against nginx (or ``--upstream URL``), sends a
fixed number of ``Deliver`` calls and ``DeliverBatch`` calls of 20 from a grpc.aio client in
the same process, and counts the calls with ``cProfile`` for each tracing setting: off, 100 %
and parent-based 10 %. The client's share is the same for every version of the sidecar, so a
difference between two commits is the sidecar's.

``--forwarder`` measures the yardstick (``bench/forwarder.py``, in-process, same client) the
same way and prints, per call, where the tracing-off sidecar spends what the forwarder does
not: Python calls and profiled own time per event by package (ours, aiohttp, asyncio, grpc,
...), and the functions with the largest difference. ``--durable`` adds the sidecar with a
durable queue (WAIT mode) beside each plain one, every event then with a customer of its own
(for both, so the two see the same events).

Run: ``.venv/bin/python bench/calls.py [--events 2000] [--top 15] [--forwarder] [--durable]``.
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

import aiohttp
import grpc
from bluecore_devtools.localrun import free_port
from bluecore_sidecar.app import running_sidecar
from bluecore_sidecar.config import Settings
from bluecore_sidecar.store import SqliteQueue
from bluecore_sidecar.telemetry import configure_logging
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from forwarder import Forwarder  # noqa: E402 - needs the path above
from loadgen import as_customer, load_events  # noqa: E402

TRACING = {
    "off": {},
    "100%": {"OTEL_TRACES_SAMPLER": "always_on"},
    "parent-based 10%": {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    },
    # Only with --tracing: every call unsampled, the 10 % path without the luck of the draw.
    "parent-based 0%": {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0",
    },
}
DEFAULT_TRACING = ("off", "100%", "parent-based 10%")


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
            # No spaces: the tag "parent-based 10%" would make the email invalid.
            as_customer(event, f"calls-{tag}-c{i}".replace(" ", "-"))
        out.append(event)
    return out


#: One mode's profile: the stats and the CPU seconds they took.
Profiled = tuple[pstats.Stats, float]


async def profile_modes(
    address: str,
    tag: str,
    events: list[delivery_pb2.DataflyEvent],
    count: int,
    *,
    spread: bool = False,
    queue: SqliteQueue | None = None,
    commits: dict[str, tuple[float, float]] | None = None,
) -> dict[str, Profiled]:
    """``count`` Deliver calls, then ``count`` events in batches of 20, each mode profiled.

    ``spread``: each event has a customer of its own (see :func:`requests`). With a durable
    ``queue``, ``commits`` gets each mode's commits and synced commits per event (the
    completions that ride alone commit without an fsync)."""
    out = {}
    async with grpc.aio.insecure_channel(address) as channel:
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        for mode in MODES:
            warm = requests(events, 200, f"{tag}-{mode}-warm", customers=spread)
            todo = requests(events, count, f"{tag}-{mode}", customers=spread)
            await _run(stub, mode, warm)
            before = await queue.stats() if queue is not None else None
            profile = cProfile.Profile()
            cpu = time.process_time()
            profile.enable()
            await _run(stub, mode, todo)
            profile.disable()
            out[mode] = (pstats.Stats(profile), time.process_time() - cpu)
            if queue is not None and before is not None and commits is not None:
                after = await queue.stats()
                commits[mode] = (
                    (after.commits - before.commits) / count,
                    (after.synced_commits - before.synced_commits) / count,
                )
    return out


MODES = ("Deliver", "DeliverBatch")


async def measure_sidecar(
    url: str,
    tracing: str,
    events: list[delivery_pb2.DataflyEvent],
    count: int,
    sink: TextIO,
    queue: Path | None = None,
    *,
    spread: bool = False,
    commits: dict[str, tuple[float, float]] | None = None,
) -> dict[str, Profiled]:
    """Both modes' profiles of the sidecar with the ``tracing`` setting; ``queue``: with a
    durable queue in that file, in WAIT mode."""
    env = {
        "BLUECORE_NAMESPACE": "bench-namespace",
        "BLUECORE_API_URL": url,
        "SIDECAR_GRPC_ADDRESS": "127.0.0.1:0",
        "SIDECAR_OPS_ADDRESS": "127.0.0.1:0",
        "SIDECAR_HTTP_ADDRESS": "",  # the JSON door is not measured; 50080 may be taken
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
    with contextlib.redirect_stderr(sink):
        async with running_sidecar(settings, env, span_exporter=exporter) as sidecar:
            configure_logging("INFO", sink)  # one JSON line per outcome, as in production
            tag = f"{tracing}-durable" if queue is not None else tracing
            store = sidecar.background.queue if sidecar.background is not None else None
            return await profile_modes(
                sidecar.grpc_address,
                tag,
                events,
                count,
                spread=spread,
                queue=store if isinstance(store, SqliteQueue) else None,
                commits=commits,
            )


async def measure_forwarder(
    url: str, events: list[delivery_pb2.DataflyEvent], count: int
) -> dict[str, Profiled]:
    """Both modes' profiles of the yardstick, set up as its ``main`` sets it up."""
    connector = aiohttp.TCPConnector(limit=64, keepalive_timeout=30, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        server = grpc.aio.server()
        delivery_pb2_grpc.add_DeliveryServiceServicer_to_server(
            Forwarder(session, url, "bench-namespace"), server
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            return await profile_modes(f"127.0.0.1:{port}", "forwarder", events, count)
        finally:
            await server.stop(None)


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


#: A function as cProfile names it: (file, line, name).
Function = tuple[str, int, str]


def _rows(stats: pstats.Stats) -> dict[Function, tuple[int, float]]:
    """Calls and own seconds per function."""
    table = stats.stats  # type: ignore[attr-defined]
    return {function: (nc, tt) for function, (_cc, nc, tt, _ct, _callers) in table.items()}


def _name(function: Function) -> str:
    path, line, name = function
    short = "/".join(Path(path).parts[-2:]) if path != "~" else ""
    return f"`{short}:{line} {name}`"


def _package(function: Function) -> str:
    """The package a function belongs to: site-packages' top level, the stdlib module, or C."""
    path = function[0]
    if path == "~":
        return "(C functions)"
    parts = Path(path).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    if "bluecore_sidecar" in parts:
        return "bluecore_sidecar"
    if len(parts) > 1 and parts[-2].startswith("python3"):
        return f"stdlib {Path(path).stem}"
    return parts[-2] if len(parts) > 1 else path


def _top(stats: pstats.Stats, count: int, events: int) -> list[str]:
    rows = sorted(_rows(stats).items(), key=lambda item: item[1][0], reverse=True)[:count]
    out = ["| calls per event | own s per 1k events | function |", "|---|---|---|"]
    for function, (nc, tt) in rows:
        out.append(f"| {nc / events:.1f} | {1000 * tt / events:.3f} | {_name(function)} |")
    return out


def compare(sidecar: pstats.Stats, forwarder: pstats.Stats, events: int, top: int) -> list[str]:
    """Where the sidecar's calls and own time per event exceed the forwarder's."""
    ours, theirs = _rows(sidecar), _rows(forwarder)
    by_package: dict[str, list[float]] = {}
    for sign, rows in ((1, ours), (-1, theirs)):
        for function, (nc, tt) in rows.items():
            cell = by_package.setdefault(_package(function), [0.0, 0.0, 0.0, 0.0])
            offset = 0 if sign == 1 else 2
            cell[offset] += nc / events
            cell[offset + 1] += 1000 * tt / events
    out = [
        "| package | sidecar calls | forwarder calls | sidecar own ms | forwarder own ms |",
        "|---|---|---|---|---|",
    ]
    for package, (calls, own, their_calls, their_own) in sorted(
        by_package.items(), key=lambda item: item[1][1] - item[1][3], reverse=True
    ):
        out.append(
            f"| {package} | {calls:,.1f} | {their_calls:,.1f} | {own:.3f} | {their_own:.3f} |"
        )
    out += [
        "",
        "| sidecar calls - forwarder calls | own ms: sidecar - forwarder | function |",
        "|---|---|---|",
    ]
    difference = {
        function: (
            (ours.get(function, (0, 0.0))[0] - theirs.get(function, (0, 0.0))[0]) / events,
            1000 * (ours.get(function, (0, 0.0))[1] - theirs.get(function, (0, 0.0))[1]) / events,
        )
        for function in ours.keys() | theirs.keys()
    }
    for function, (calls, own) in sorted(
        difference.items(), key=lambda item: item[1][1], reverse=True
    )[:top]:
        out.append(f"| {calls:+.1f} | {own:+.4f} | {_name(function)} |")
    return out


def _calls(stats: pstats.Stats) -> int:
    return sum(nc for nc, _tt in _rows(stats).values())


def main() -> None:
    """Parse the flags, start nginx, measure each tracing setting, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="events per mode (default 2000)")
    parser.add_argument("--top", type=int, default=0, help="also list the N most called")
    parser.add_argument(
        "--tracing",
        choices=list(TRACING),
        action="append",
        help="measure only these settings (repeatable; default: off, 100%%, parent-based 10%%; "
        "parent-based 0%% is every call unsampled)",
    )
    parser.add_argument(
        "--forwarder",
        action="store_true",
        help="also measure bench/forwarder.py and compare the tracing-off sidecar with it",
    )
    parser.add_argument("--upstream", help="POST here instead of a local nginx")
    parser.add_argument(
        "--durable",
        action="store_true",
        help="also measure the sidecar with a durable queue (WAIT mode, a fresh file each)",
    )
    args = parser.parse_args()
    events = load_events(BENCH.parent / "examples" / "events")
    count = args.events
    tracings = args.tracing or list(DEFAULT_TRACING)
    if args.forwarder and "off" not in tracings:
        tracings = ["off", *tracings]
    print("| server | call | Python calls per event | CPU ms per event (profiled) |")
    print("|---|---|---|---|")
    with (
        tempfile.TemporaryDirectory() as tmp,
        contextlib.ExitStack() as stack,
        open(os.devnull, "w") as sink,
    ):
        url = args.upstream or stack.enter_context(nginx(Path(tmp)))
        profiles = {}
        commits: dict[str, dict[str, tuple[float, float]]] = {}
        if args.forwarder:
            profiles["forwarder"] = asyncio.run(measure_forwarder(url, events, count))
        for tracing in tracings:
            name = f"sidecar, tracing {tracing}"
            profiles[name] = asyncio.run(
                measure_sidecar(url, tracing, events, count, sink, spread=args.durable)
            )
            if args.durable:
                queue = Path(tmp) / f"queue-{tracing[:3]}.db"
                commits[f"{name}, durable"] = {}
                profiles[f"{name}, durable"] = asyncio.run(
                    measure_sidecar(
                        url,
                        tracing,
                        events,
                        count,
                        sink,
                        queue,
                        spread=True,
                        commits=commits[f"{name}, durable"],
                    )
                )
        for server, modes in profiles.items():
            for mode, (stats, cpu) in modes.items():
                print(
                    f"| {server} | {mode} | {_calls(stats) / count:,.0f} "
                    f"| {1000 * cpu / count:.2f} |"
                )
        if commits:
            print("\n| server | call | commits per event | of them synced (fsync with FULL) |")
            print("|---|---|---|---|")
            for server, by_mode in commits.items():
                for mode, (made, synced) in by_mode.items():
                    print(f"| {server} | {mode} | {made:.3f} | {synced:.3f} |")
        for server, modes in profiles.items():
            for mode, (stats, _cpu) in modes.items():
                if args.top:
                    print(f"\n{server}, {mode}: the most called\n")
                    print("\n".join(_top(stats, args.top, count)))
        if args.forwarder:
            for mode in MODES:
                print(f"\n{mode}: the tracing-off sidecar against the forwarder, per event\n")
                sidecar = profiles["sidecar, tracing off"][mode][0]
                forwarder = profiles["forwarder"][mode][0]
                print("\n".join(compare(sidecar, forwarder, count, args.top or 30)))


if __name__ == "__main__":
    main()
