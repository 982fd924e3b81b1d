"""Composition root and lifecycle: config -> telemetry -> session -> servicers -> servers.

:func:`running_sidecar` builds everything and pairs each part with its teardown in one
``AsyncExitStack``; tests start the sidecar through it exactly as ``serve`` does. Shutdown
order: health NOT_SERVING and refuse new calls -> end watch streams -> grpc's graceful stop
with the one configured grace -> close the HTTP session -> flush spans.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import timedelta

import aiohttp
import grpc
from aiohttp import web
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import http_door, opsweb
from .admin import SERVICE_NAME as DEAD_LETTER_SERVICE
from .admin import DeadLetterAdmin
from .background import BackgroundDelivery
from .config import Settings, split_address
from .credential import Credential, FileCredential
from .dedup import DedupTable, DurableDedup
from .delivery import Deliverer
from .errors import ConfigError
from .interceptor import Admission, Edge, EdgeHandlers
from .outcomes import OutcomeBus
from .redaction import Redactor
from .service import DeliveryService, HealthService, add_reflection
from .store import QueueLimits, SqliteQueue
from .telemetry import (
    LOGGER_NAME,
    Metrics,
    OutcomeRecorder,
    configure_tracing,
)
from .tracing import light_tracer
from .transport import AiohttpTransport
from .upstream import UpstreamClient

SERVICE_NAME = delivery_pb2.DESCRIPTOR.services_by_name["DeliveryService"].full_name
#: Allocations (less deallocations) between two collections of the youngest GC generation.
#: A collection stops the event loop for as long as it walks the young objects: at 10,000
#: that was a median 3.3 ms (up to 6-8 ms) under the latency phase's load, more than the
#: 2 ms the sidecar may add to a call's p99; at 2,000 a median 0.9 ms, for about 0.1 % more
#: collector time (docs/decisions.md, "The sidecar's latency tail").
GC_YOUNG_OBJECTS = 2_000
#: Largest gRPC message accepted: room for a full batch, far below a memory risk.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
#: How long a caller shed as OVERLOADED is asked to wait (RetryInfo) before trying again.
OVERLOAD_RETRY_DELAY = timedelta(seconds=1)

log = logging.getLogger(LOGGER_NAME)


@dataclasses.dataclass(slots=True)
class Sidecar:
    """A running sidecar: where it listens and how to stop it."""

    grpc_address: str
    ops_url: str
    settings: Settings
    admission: Admission
    health: health.aio.HealthServicer
    metrics: Metrics
    bus: OutcomeBus
    server: grpc.aio.Server
    background: BackgroundDelivery | None = None
    """The durable queue's workers; None without ``SIDECAR_QUEUE_PATH``."""
    http_url: str = ""  # the JSON door's base URL; "" when SIDECAR_HTTP_ADDRESS is off
    http_runner: web.AppRunner | None = None
    _stopped: bool = False

    async def drain(self) -> None:
        """Stop taking work, let in-flight calls finish within the grace, stop serving.

        With a queue, claiming stops at once and calls waiting on a background try answer
        ``QUEUED``; the tries in flight get what is left of the grace once the calls are
        over, and are put back into the queue if they need longer.
        """
        if self._stopped:
            return
        self._stopped = True
        self.admission.draining = True
        if self.background is not None:
            self.background.stop_claiming()
        await self.health.enter_graceful_shutdown()
        log.info("draining", extra={"fields": {"in_flight": self.admission.in_flight}})
        # Watch streams never end by themselves; graceful stop would wait the grace for them.
        self.bus.close_all()
        grace = self.settings.shutdown_grace.total_seconds()
        started = time.monotonic()
        # While calls are in flight the server keeps listening, so a late caller hears a clear
        # UNAVAILABLE from the edge; once grpc's stop begins, calls that race it are
        # cut with CANCELLED. The one grace covers both waits. The HTTP door keeps listening
        # as long, answering SHUTTING_DOWN (503), and closes with the gRPC listener.
        if cut := await self.admission.busy_after(grace):
            log.warning(
                "grace period over with calls in flight", extra={"fields": {"in_flight": cut}}
            )
        doors = [self.server.stop(max(grace - (time.monotonic() - started), 0.0))]
        if self.http_runner is not None:
            doors.append(self.http_runner.cleanup())
        await asyncio.gather(*doors)
        if self.background is not None:
            # The calls are over; the tries in flight get what is left of the same grace.
            await self.background.stop(grace - (time.monotonic() - started))


@contextlib.asynccontextmanager
async def running_sidecar(
    settings: Settings,
    env: Mapping[str, str],
    *,
    span_exporter: SpanExporter | None = None,
) -> AsyncIterator[Sidecar]:
    """Start the sidecar on ``settings``' addresses (port 0: any free port); stop it on exit."""
    async with contextlib.AsyncExitStack() as stack:
        provider = configure_tracing(env, span_exporter)
        if provider is not None:
            # Off the event loop: an exporter may wait on a collector for up to seconds.
            stack.push_async_callback(asyncio.to_thread, _flush, provider)
        tracer = _tracer(provider)
        metrics = Metrics()
        # Opened before the session and closed after it: the workers' sends end first.
        queue = await _open_queue(stack, settings)

        connector = aiohttp.TCPConnector(
            limit=settings.max_concurrency, keepalive_timeout=30, ttl_dns_cache=300
        )
        session = _session(stack, connector, settings)
        # One redactor for logs and spans: the token's exact value, and one tag per email.
        redactor = Redactor(secrets=(settings.namespace,))
        credential = _credential(settings, redactor)
        client = UpstreamClient(
            # The CLIENT span of each HTTP try is made by the transport (tracing.ClientSpans).
            AiohttpTransport(
                session, settings.api_url, tracer=None if provider is None else tracer
            ),
            settings.retry,
            credential,
            max_concurrency=settings.max_concurrency,
            observer=metrics,
        )
        metrics.upstream_pause.set_function(client.throttle.wait_time)
        bus = OutcomeBus(
            settings.watch_buffer,
            max_watchers=settings.max_watchers,
            on_drop=metrics.watch_dropped.inc,
        )
        metrics.watchers.set_function(lambda: bus.watcher_count)
        recorder = OutcomeRecorder(metrics, log, redactor)
        stack.callback(recorder.flush)  # the lines of the last calls, after the server stops
        background = (
            None
            if queue is None
            else _background(
                settings,
                queue,
                client=client,
                bus=bus,
                recorder=recorder,
                metrics=metrics,
                tracer=tracer,
                redactor=redactor,
            )
        )
        deliverer = Deliverer(
            rules=settings.rules,
            gates=settings.gates,
            client=client,
            dedup=_dedup(settings, queue),
            bus=bus,
            background=background,
            default_mode=settings.delivery_mode,
            observer=recorder,
            tracer=tracer,
            max_event_bytes=settings.max_event_bytes,
            redactor=redactor,
        )
        metrics.in_flight.set_function(lambda: deliverer.in_flight)
        admission = Admission(settings.max_inflight_calls, OVERLOAD_RETRY_DELAY)
        # grpc core keeps calls that Python has not picked up yet in a backlog and, past 1000
        # of them, cancels new ones at random, unlogged (callers see CANCELLED). A backlog
        # well above the admission limit lets every call reach the edge, which
        # answers what it cannot take with OVERLOADED instead.
        backlog = max(10_000, 10 * settings.max_inflight_calls)
        # Handlers are wrapped once as they are registered (through `wrapping`), not by a
        # grpc.aio interceptor, which grpc awaits anew on every call.
        edge_handlers = EdgeHandlers(
            SERVICE_NAME,
            admission,
            metrics,
            tracer,
            unbounded=frozenset({"WatchDeliveries"}),
            # The two calls that carry the load; every other method is served as a generic
            # one (a registered method costs every arriving call some work, interceptor.py).
            registered=frozenset({f"/{SERVICE_NAME}/Deliver", f"/{SERVICE_NAME}/DeliverBatch"}),
        )
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                # Off for one process, so a second sidecar on the same port fails to start;
                # on for SIDECAR_WORKERS > 1, whose workers share the port (supervisor.py).
                ("grpc.so_reuseport", int(settings.workers > 1)),
                ("grpc.server.max_pending_requests", backlog),
                ("grpc.server.max_pending_requests_hard_limit", backlog),
            ],
        )
        servicer = DeliveryService(
            deliverer,
            bus,
            batch_limit=settings.batch_limit,
            default_deadline=settings.default_deadline,
            redactor=redactor,
        )
        admin = DeadLetterAdmin(
            queue, on_replay=background.wake if background is not None else lambda: None
        )
        health_servicer = HealthService()
        _register(edge_handlers.server(server), servicer, admin, health_servicer)
        try:
            port = server.add_insecure_port(settings.grpc_address)
        except RuntimeError:  # grpc's bind failure; its text only points at GRPC_VERBOSITY
            port = 0
        if port == 0:
            raise ConfigError(
                "SIDECAR_GRPC_ADDRESS",
                f"{settings.grpc_address}: cannot listen there (address in use or not local)",
            )
        host, _ = split_address(settings.grpc_address)
        await server.start()
        stack.push_async_callback(server.stop, 0)

        ops_url = await _start_ops(
            stack,
            settings.ops_address,
            admission,
            metrics,
            client.throttle.wait_time,
            background=background,
        )
        http_runner, http_url = await _start_door(
            stack,
            settings,
            http_door.HttpDoor(
                edge_handlers.edge,
                servicer,
                max_message_bytes=MAX_MESSAGE_BYTES,
                max_events_bytes=settings.max_event_bytes * settings.batch_limit,
                more=[(Edge(DEAD_LETTER_SERVICE, admission, metrics, tracer), admin)],
            ),
        )
        sidecar = Sidecar(
            grpc_address=opsweb.join(host, port),
            ops_url=ops_url,
            settings=settings,
            admission=admission,
            health=health_servicer,
            metrics=metrics,
            bus=bus,
            server=server,
            background=background,
            http_url=http_url,
            http_runner=http_runner,
        )
        for name in ("", SERVICE_NAME, DEAD_LETTER_SERVICE):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        if background is not None:
            background.start()
        log.info(
            "serving",
            extra={
                "fields": {
                    "grpc_address": sidecar.grpc_address,
                    "ops_url": sidecar.ops_url,
                    "http_url": sidecar.http_url,
                }
            },
        )
        stack.push_async_callback(sidecar.drain)
        yield sidecar


def _credential(settings: Settings, redactor: Redactor) -> Credential:
    """The token as configured: followed in its file (rotation), else fixed."""
    if settings.namespace_file is None:
        return Credential(settings.namespace)

    def learn(secrets: tuple[str, ...]) -> None:
        # The new token and the earlier ones: an old one may still echo back in an answer.
        redactor.secrets = secrets

    return FileCredential(
        settings.namespace_file,
        settings.namespace,
        check_every=settings.token_check_interval.total_seconds(),
        on_change=learn,
    )


async def _open_queue(stack: contextlib.AsyncExitStack, settings: Settings) -> SqliteQueue | None:
    """The durable queue at ``SIDECAR_QUEUE_PATH``, closed with ``stack``; None when unset."""
    if settings.queue_path is None:
        return None
    try:
        queue = await SqliteQueue.open(
            settings.queue_path,
            limits=QueueLimits(settings.queue_max_events, settings.queue_max_bytes),
            dedup_window=settings.dedup_window.total_seconds(),
            # The workers of SIDECAR_WORKERS share one file, so dedup and order hold across
            # them (store.py, shared mode).
            shared=settings.workers > 1,
        )
    except (OSError, sqlite3.Error) as error:
        # A folder that does not exist or cannot be written: the operator's path is wrong.
        raise ConfigError(
            "SIDECAR_QUEUE_PATH", f"cannot open a queue there ({type(error).__name__}: {error})"
        ) from None
    stack.push_async_callback(queue.close)
    log.info("durable queue open", extra={"fields": {"path": str(settings.queue_path)}})
    return queue


def _dedup(settings: Settings, queue: SqliteQueue | None) -> DedupTable | DurableDedup:
    """The dedup table, with the durable queue's memory behind it when there is one."""
    table = DedupTable(
        settings.dedup_window, settings.dedup_max_entries, max_bytes=settings.dedup_max_bytes
    )
    return table if queue is None else DurableDedup(table, queue)


def _background(
    settings: Settings,
    queue: SqliteQueue,
    *,
    client: UpstreamClient,
    bus: OutcomeBus,
    recorder: OutcomeRecorder,
    metrics: Metrics,
    tracer: trace.Tracer,
    redactor: Redactor,
) -> BackgroundDelivery:
    """The queue's workers, sending with the pipeline's client, bus and recorder."""
    cap = settings.queue_retry_cap.total_seconds()
    return BackgroundDelivery(
        queue=queue,
        client=client,
        rules=settings.rules,
        gates=settings.gates,
        max_event_bytes=settings.max_event_bytes,
        # One backoff formula for in-call and queue retries, with the queue's own cap.
        policy=dataclasses.replace(settings.retry, cap=cap, max_pause=cap),
        workers=settings.queue_workers,
        try_budget=min(
            settings.default_deadline.total_seconds(),
            settings.shutdown_grace.total_seconds() or 1.0,
        ),
        bus=bus,
        observer=recorder,
        metrics=metrics,
        tracer=tracer,
        redactor=redactor,
        shared=settings.workers > 1,
    )


async def _start_door(
    stack: contextlib.AsyncExitStack, settings: Settings, door: http_door.HttpDoor
) -> tuple[web.AppRunner | None, str]:
    """The JSON door on ``SIDECAR_HTTP_ADDRESS`` (same edge and servicers as gRPC), and its URL.

    It is stopped before the gRPC server; (None, "") when the address is off.
    """
    if not settings.http_address:
        return None, ""
    runner = await http_door.start(
        stack, settings.http_address, door, reuse_port=settings.workers > 1
    )
    return runner, opsweb.base_url(settings.http_address, runner.addresses[0][1])


async def _start_ops(
    stack: contextlib.AsyncExitStack,
    address: str,
    admission: Admission,
    registry: Metrics,
    pause: Callable[[], float],
    *,
    background: BackgroundDelivery | None,
) -> str:
    """Serve /healthz, /readyz and /metrics over HTTP for kubelet probes and Prometheus.

    A shared pause (Bluecore's 429 / Retry-After) shows in /readyz but leaves the pod
    ready: another replica would be told the same, and the pause is capped.
    """

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        if admission.draining:
            return web.json_response({"status": "draining"}, status=503)
        return web.json_response({"status": "ready", "upstream_pause_seconds": round(pause(), 3)})

    async def metrics(_: web.Request) -> web.Response:
        if background is not None:
            # The queue gauges are read from the store at scrape time: exact, and free
            # between scrapes. Readiness above never looks at them.
            await background.refresh_metrics()
        body = generate_latest(registry.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return await opsweb.serve(stack, address, healthz=healthz, readyz=readyz, metrics=metrics)


async def serve(
    settings: Settings,
    env: Mapping[str, str],
    *,
    on_serving: Callable[[Sidecar, asyncio.Event], Awaitable[None]] | None = None,
) -> int:
    """Run until SIGTERM or SIGINT, then drain and return the exit code (0).

    ``on_serving`` (a worker of ``SIDECAR_WORKERS``) runs once the sidecar serves; setting the
    event it is given stops the sidecar as a signal would.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running_sidecar(settings, env) as sidecar:
        # What start-up built (modules, descriptors, the SDK) lives as long as the process:
        # frozen, the collector stops scanning it, which made each full collection about a
        # quarter as long (docs/decisions.md, Performance). Only here, not in running_sidecar:
        # tests start many sidecars in one process and should not pin what each leaves.
        gc.collect()
        gc.freeze()
        # A young generation of 700 objects (the default) is collected many times while one
        # DeliverBatch is in flight, each time walking the batch's live objects again: 4.5 %
        # of a batched event's instructions. Collected every GC_YOUNG_OBJECTS instead
        # (docs/decisions.md, "CPU per event against the forwarder, second pass"), a figure
        # that also bounds each collection's pause (see the constant).
        gc.set_threshold(GC_YOUNG_OBJECTS, *gc.get_threshold()[1:])
        if on_serving is not None:
            await on_serving(sidecar, stop)
        await stop.wait()
        log.info("signal received, shutting down")
        await sidecar.drain()
    log.info("stopped")
    return 0


def _register(
    server: grpc.aio.Server,
    servicer: DeliveryService,
    admin: DeadLetterAdmin,
    health_servicer: HealthService,
) -> None:
    """Add every service to ``server`` (the edge's stand-in, which wraps each handler)."""
    delivery_pb2_grpc.add_DeliveryServiceServicer_to_server(servicer, server)
    delivery_pb2_grpc.add_DeadLetterServiceServicer_to_server(admin, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    add_reflection((SERVICE_NAME, DEAD_LETTER_SERVICE, health.SERVICE_NAME), server)


def _session(
    stack: contextlib.AsyncExitStack, connector: aiohttp.TCPConnector, settings: Settings
) -> aiohttp.ClientSession:
    """The one HTTP session, over ``connector``; it has no trace hooks (see tracing.py)."""
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=settings.retry.attempt_timeout),
        raise_for_status=False,
    )
    stack.push_async_callback(session.close)
    return session


def _tracer(provider: TracerProvider | None) -> trace.Tracer:
    """The one tracer: the SDK's sampler, ids and processors, with lighter spans (tracing.py)."""
    if provider is None:
        return trace.NoOpTracer()
    return light_tracer(provider.get_tracer("bluecore_sidecar"))


def _flush(provider: TracerProvider) -> None:
    provider.force_flush(5_000)
    provider.shutdown()
