"""Observability: OpenTelemetry tracing, Prometheus metrics and JSON logs.

Tracing follows the standard ``OTEL_*`` variables, which the OpenTelemetry SDK reads itself;
with no exporter endpoint set it stays off (a no-op tracer costs almost nothing). Metrics live
in a per-process :class:`Metrics` registry served on the ops port. Logs are one JSON object per
line. None of them ever carries the namespace token or an email address.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import json
import logging
import select
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from datafly.bluecore.v1 import delivery_pb2

from . import __version__
from .errors import ConfigError
from .redaction import Redactor
from .results import status_name

if TYPE_CHECKING:
    # The SDK, its exporters and prometheus_client load only when `serve` builds them: the
    # client verbs (send, preview, watch) import this module too.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from .store import QueueStats

LOGGER_NAME = "bluecore_sidecar"
#: Encoded line heads a formatter keeps (one per level and message of multi-line records).
_MAX_HEADS = 16
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, message, ``static`` fields, the record's ``fields``.

    ``static`` holds what every line of the process carries, e.g. ``{"worker": 2}`` in a worker
    process of ``SIDECAR_WORKERS``.
    """

    def __init__(self, static: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self._static = dict(static or {})
        # One encoder for every line: json.dumps with options builds a new one per call.
        self._encoder = json.JSONEncoder(separators=(",", ":"), default=str)
        # The date and time to the second changes once a second; only the milliseconds vary.
        self._second = -1
        self._second_text = ""
        # The members after "time" of multi-line records, encoded once per level and message
        # (see format); a "time" among the static fields would take the common path.
        self._heads: dict[tuple[str, str, str], str] = {}
        self._cached_heads = "time" not in self._static

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line, or one line per entry of its ``json_lines``.

        ``json_lines`` (outcome lines, see :class:`OutcomeRecorder`) are the members of each
        line's object already encoded, e.g. ``"status":"DELIVERED","attempts":1``; they follow
        the common members (time, level, logger, message, the ``static`` fields). ``fields``
        is a mapping of extra members for one line.
        """
        encoded = getattr(record, "json_lines", None)
        if isinstance(encoded, list) and self._cached_heads:
            members = self._head(record.levelname, record.name, record.getMessage())
            return "\n".join(self._lines(record.created, members, encoded))
        head: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **self._static,
        }
        if isinstance(encoded, list):
            start = self._encoder.encode(head)[:-1]  # without the closing brace
            return "\n".join(f"{start},{members}}}" for members in encoded)
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            head.update(fields)
        if record.exc_info:
            head["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return self._encoder.encode(head)

    def json_lines(
        self, level: str, logger: str, message: str, groups: Iterable[tuple[float, list[str]]]
    ) -> list[str] | None:
        """The lines :meth:`format` makes of one record with these fields per group, its
        ``json_lines`` the group's lines and ``created`` its time, each without its newline;
        None when the static fields hold a "time" (then only :meth:`format` writes them)."""
        if not self._cached_heads:
            return None
        head = self._head(level, logger, message)
        out: list[str] = []
        for created, lines in groups:
            out.extend(self._lines(created, head, lines))
        return out

    def _lines(self, created: float, head: str, lines: list[str]) -> list[str]:
        """One JSON line (without its newline) per entry of ``lines``, at ``created``."""
        start = f'{{"time":"{self._time(created)}",{head}'
        return [f"{start},{members}}}" for members in lines]

    def _head(self, level: str, logger: str, message: str) -> str:
        """The encoded members after "time" (level, logger, message, static fields)."""
        key = (level, logger, message)
        head = self._heads.get(key)
        if head is None:
            level, name, message = key
            members = {"level": level, "logger": name, "message": message, **self._static}
            head = self._encoder.encode(members)[1:-1]
            if len(self._heads) < _MAX_HEADS:  # outcome lines use two; bounded all the same
                self._heads[key] = head
        return head

    def _time(self, created: float) -> str:
        """``created`` as ISO 8601 UTC with milliseconds, e.g. ``2026-12-01T20:11:25.123+00:00``."""
        second = int(created)
        if second != self._second:
            self._second = second
            self._second_text = datetime.fromtimestamp(second, UTC).isoformat()[:-6]
        # The milliseconds as logging computes a record's `msecs`: cut, never rounded up
        # into the next second, so they always belong to the second written before them.
        return f"{self._second_text}.{int((created - second) * 1000):03d}+00:00"


def configure_logging(
    level: str, stream: TextIO | None = None, *, static: Mapping[str, Any] | None = None
) -> logging.Logger:
    """Send the sidecar's logs, as JSON lines, to ``stream`` (stderr by default).

    Records then leave out the thread, process and multiprocessing names (the logging
    module's own switches for that): no line shows them, and looking them up is about a quarter
    of the cost of making a record, which outcome lines pay when a filter or another handler
    asks for records.
    """
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(static))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


def configure_tracing(
    env: Mapping[str, str], exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """A tracer provider for the ``OTEL_*`` settings, or None when tracing is off.

    The OpenTelemetry SDK reads its own variables from the process environment: the exporter's
    endpoint, headers, insecure flag, compression, timeout and certificates, ``OTEL_BSP_*``,
    ``OTEL_TRACES_SAMPLER(_ARG)``, ``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME``. This
    adds only what the SDK lacks, deciding from ``env`` (the process environment, as passed
    down from the CLI):

    * off when ``OTEL_SDK_DISABLED=true``, when ``OTEL_TRACES_EXPORTER`` is ``none``, or when it
      asks for ``otlp`` (the default) and no ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`` is set:
      the SDK would export to ``localhost:4317``; an unconfigured sidecar traces nothing;
    * the exporter class for ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``: spans as JSON on
      stderr) and ``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`` (``grpc``, ``http/protobuf``);
    * ``service.name`` defaults to ``bluecore-sidecar`` and ``service.version`` is ours;
    * the provider is returned, never installed as the global one.

    ``exporter`` (tests) replaces the configured exporters and is called synchronously as each
    span ends. An exporter or protocol we cannot build raises :class:`ConfigError`.
    """
    if _setting(env, "OTEL_SDK_DISABLED").lower() == "true":
        return None
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import (  # noqa: PLC0415
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    processors: list[SpanProcessor] = []
    if exporter is not None:
        processors.append(SimpleSpanProcessor(exporter))
    else:
        names = _setting(env, "OTEL_TRACES_EXPORTER") or "otlp"
        for name in filter(None, (n.strip().lower() for n in names.split(","))):
            if name == "otlp":
                otlp = _otlp_exporter(env)
                if otlp is not None:
                    processors.append(BatchSpanProcessor(otlp))
            elif name == "console":
                processors.append(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
            elif name != "none":
                raise ConfigError(
                    "OTEL_TRACES_EXPORTER", f"{name!r} is not supported; use otlp, console or none"
                )
    if not processors:
        return None
    provider = TracerProvider(resource=_resource())  # the sampler: OTEL_TRACES_SAMPLER
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def _setting(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def _otlp_exporter(env: Mapping[str, str]) -> SpanExporter | None:
    """The OTLP exporter for the configured protocol (it reads its own settings), or None."""
    traces = "OTEL_EXPORTER_OTLP_TRACES_"
    if not (_setting(env, traces + "ENDPOINT") or _setting(env, "OTEL_EXPORTER_OTLP_ENDPOINT")):
        return None
    protocol = (
        _setting(env, traces + "PROTOCOL") or _setting(env, "OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    ).lower()
    if protocol == "grpc":
        from .otlp_grpc import grpc_span_exporter  # noqa: PLC0415 - loads the SDK's exporter

        return grpc_span_exporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter as HttpExporter,
        )

        return HttpExporter()
    raise ConfigError(
        "OTEL_EXPORTER_OTLP_PROTOCOL", f"{protocol!r} is not supported; use grpc or http/protobuf"
    )


def _resource() -> Resource:
    """The SDK's resource (it reads OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME), plus ours."""
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415

    detected = dict(Resource.create().attributes)
    attributes = {"service.version": __version__, **detected}
    if str(detected.get("service.name", "")).startswith("unknown_service"):
        attributes["service.name"] = "bluecore-sidecar"
    return Resource(attributes)


class CounterChild:
    """One series of a :class:`LoopCounter`: a plain number (see there)."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        """Add ``amount`` (never negative: the callers count things that happened)."""
        self.value += amount


class HistogramChild:
    """One series of a :class:`LoopHistogram`: a count per bucket and the sum."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        """Count ``amount`` in the first bucket whose upper bound is at least ``amount``."""
        self.counts[bisect.bisect_left(self.bounds, amount)] += 1
        self.sum += amount


class _LoopFamily:
    """What the counter and histogram families share: label handling and registration.

    Why not prometheus_client's own classes: an increment there takes a lock and checks its
    arguments, about 6k machine instructions (an observation 10k), and the sidecar makes
    three or four of them per event. Every update of these metrics, and every scrape, runs on
    the event loop, so one thread reads and writes them and plain numbers are enough. The
    registry reads them through :meth:`collect` at scrape time, which writes the same
    families, samples, labels and values as prometheus_client's classes would.
    """

    kind = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        # Series by label values, in the order they were first asked for (as the library).
        self._children: dict[tuple[str, ...], Any] = {}
        registry.register(self)

    def labels(self, **values: object) -> Any:
        """The series of these label values (made on first use, like ``Counter.labels``)."""
        if values.keys() != set(self._labelnames):
            raise ValueError(f"{self._name}: the labels are ({', '.join(self._labelnames)})")
        key = tuple(str(values[name]) for name in self._labelnames)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._child()
        return child

    def _child(self) -> Any:
        raise NotImplementedError  # pragma: no cover - each family makes its own

    def collect(self) -> Iterable[Metric]:
        """The family and its samples, for the registry (at scrape time)."""
        raise NotImplementedError  # pragma: no cover - each family writes its own

    def describe(self) -> Iterable[Metric]:
        """The family without samples (the registry checks names against it)."""
        return [self._metric()]

    def _metric(self) -> Metric:
        from prometheus_client.metrics_core import Metric  # noqa: PLC0415

        return Metric(self._name, self._documentation, self.kind)

    def _series(self) -> Iterable[tuple[dict[str, str], Any]]:
        for values, child in self._children.items():
            yield dict(zip(self._labelnames, values, strict=True)), child


def _created_series() -> bool:
    """Whether ``_created`` samples are written (prometheus_client's own switch)."""
    from prometheus_client import metrics  # noqa: PLC0415

    return bool(getattr(metrics, "_use_created", True))


class LoopCounter(_LoopFamily):
    """A Prometheus counter family kept as plain numbers (see :class:`_LoopFamily`).

    Labelled families work as ``prometheus_client.Counter``'s: ``labels(...)`` gives a series
    with ``inc``; an unlabelled one has ``inc`` itself.
    """

    kind = "counter"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        registry: CollectorRegistry,
    ) -> None:
        super().__init__(name, documentation, labelnames, registry=registry)
        if not self._labelnames:
            self._children[()] = self._child()

    def _child(self) -> CounterChild:
        return CounterChild()

    def inc(self, amount: float = 1) -> None:
        """Add ``amount`` to an unlabelled counter."""
        self._children[()].value += amount

    def collect(self) -> Iterable[Metric]:
        """The family as prometheus_client's ``Counter`` writes it: ``_total``, ``_created``."""
        metric = self._metric()
        created = _created_series()
        for labels, child in self._series():
            metric.add_sample(self._name + "_total", labels, child.value)
            if created:
                metric.add_sample(self._name + "_created", labels, child.created)
        return [metric]


class LoopHistogram(_LoopFamily):
    """A Prometheus histogram family kept as plain numbers (see :class:`_LoopFamily`)."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        bounds = [float(bound) for bound in buckets]
        if bounds != sorted(bounds):
            raise ValueError("buckets must be in increasing order")
        if bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        self._bounds = tuple(bounds)
        super().__init__(name, documentation, labelnames, registry=registry)

    def _child(self) -> HistogramChild:
        return HistogramChild(self._bounds)

    def collect(self) -> Iterable[Metric]:
        """The family as prometheus_client's ``Histogram`` writes it: cumulative buckets,
        ``_count``, ``_sum`` and ``_created``."""
        from prometheus_client.utils import floatToGoString  # noqa: PLC0415

        metric = self._metric()
        created = _created_series()
        bounds = [floatToGoString(bound) for bound in self._bounds]  # type: ignore[no-untyped-call]
        for labels, child in self._series():
            total = 0.0
            for bound, count in zip(bounds, child.counts, strict=True):
                total += count
                metric.add_sample(self._name + "_bucket", {**labels, "le": bound}, total)
            metric.add_sample(self._name + "_count", labels, total)
            if self._bounds[0] >= 0:
                metric.add_sample(self._name + "_sum", labels, child.sum)
            if created:
                metric.add_sample(self._name + "_created", labels, child.created)
        return [metric]


class Metrics:
    """The sidecar's Prometheus metrics, in a registry of their own.

    Labels hold only enum-like values (statuses, event names from the mapping table, HTTP
    codes), never ids, tokens or emails.
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Gauge  # noqa: PLC0415

        self.registry = CollectorRegistry()
        self.deliveries = LoopCounter(
            "bluecore_sidecar_deliveries",
            "Delivery outcomes by status and Bluecore event.",
            ["status", "bluecore_event"],
            registry=self.registry,
        )
        self.latency = LoopHistogram(
            "bluecore_sidecar_delivery_latency_seconds",
            "Time from receiving an event to knowing its outcome.",
            ["status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_responses = LoopCounter(
            "bluecore_sidecar_upstream_responses",
            "HTTP attempts against Bluecore by status code (or error kind).",
            ["code"],
            registry=self.registry,
        )
        self.retries = LoopCounter(
            "bluecore_sidecar_upstream_retries",
            "HTTP attempts that were followed by another try.",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "bluecore_sidecar_deliveries_in_flight",
            "Deliveries currently being processed.",
            registry=self.registry,
        )
        self.dedup_hits = LoopCounter(
            "bluecore_sidecar_dedup_hits",
            "Deliveries answered from the dedup table.",
            registry=self.registry,
        )
        self.watchers = Gauge(
            "bluecore_sidecar_watchers",
            "Open WatchDeliveries streams.",
            registry=self.registry,
        )
        self.watch_dropped = LoopCounter(
            "bluecore_sidecar_watch_dropped",
            "Outcomes WatchDeliveries streams lost because they read (or were sent) too slowly.",
            registry=self.registry,
        )
        self.calls_admitted = LoopCounter(
            "bluecore_sidecar_calls_admitted",
            "Delivery RPCs let in by admission control, by method.",
            ["method"],
            registry=self.registry,
        )
        self.auth_failures = LoopCounter(
            "bluecore_sidecar_upstream_auth_failures",
            "Bluecore answers refusing the namespace token (401/403), by status code.",
            ["code"],
            registry=self.registry,
        )
        self.resends_after_timeout = LoopCounter(
            "bluecore_sidecar_upstream_resends_after_timeout",
            "POSTs sent again after a try timed out: the earlier one may have been accepted.",
            registry=self.registry,
        )
        self.upstream_pause = Gauge(
            "bluecore_sidecar_upstream_pause_seconds",
            "Seconds left of the shared pause Bluecore asked for (429 / Retry-After); 0 if none.",
            registry=self.registry,
        )
        self.calls_refused = LoopCounter(
            "bluecore_sidecar_calls_refused",
            "RPCs answered with an error status (shed as OVERLOADED, malformed, draining, ...).",
            ["method", "code", "reason"],
            registry=self.registry,
        )
        self._responses_by_code: dict[int | str, CounterChild] = {}

        self.queue_depth = Gauge(
            "bluecore_sidecar_queue_depth",
            "Events in the durable queue (waiting or being sent), dead letters not counted.",
            registry=self.registry,
        )
        self.queue_bytes = Gauge(
            "bluecore_sidecar_queue_bytes",
            "Serialized size of the events in the durable queue.",
            registry=self.registry,
        )
        self.queue_oldest_age = Gauge(
            "bluecore_sidecar_queue_oldest_age_seconds",
            "Time since the oldest event in the durable queue was queued; 0 when empty.",
            registry=self.registry,
        )
        self.dead_letters = Gauge(
            "bluecore_sidecar_dead_letters",
            "Dead letters kept in the durable queue, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.queue_tries = LoopCounter(
            "bluecore_sidecar_queue_tries",
            "Background tries of queued events by outcome (delivered, retry, dead_letter, stale).",
            ["outcome"],
            registry=self.registry,
        )

    def set_queue_stats(self, stats: QueueStats) -> None:
        """Copy a durable-queue snapshot into the gauges."""
        self.queue_depth.set(stats.depth)
        self.queue_bytes.set(stats.bytes)
        self.queue_oldest_age.set(stats.oldest_pending_age)
        self.dead_letters.clear()
        for reason, count in stats.dead_letters.items():
            self.dead_letters.labels(reason=reason).set(count)

    def on_attempt(self, status: int | None, error: str | None, retry: bool) -> None:
        """Count one HTTP attempt (upstream.SendObserver)."""
        key = status or error or "error"  # the status itself: no str() per attempt
        counter = self._responses_by_code.get(key)
        if counter is None:
            # HTTP codes and error kinds: a small closed set, each child looked up once.
            code = str(key)
            counter = self._responses_by_code[key] = self.upstream_responses.labels(code=code)
        counter.inc()
        if retry:
            self.retries.inc()

    def on_auth_failure(self, status: int) -> None:
        """Count one refused token (upstream.SendObserver)."""
        self.auth_failures.labels(code=str(status)).inc()

    def on_resend_after_timeout(self) -> None:
        """Count one POST repeated after a timed-out try (upstream.SendObserver)."""
        self.resends_after_timeout.inc()


_OUTCOME = "delivery outcome"
#: The two levels of outcome lines, by number (``logging.getLevelName`` is a function call).
_LEVEL_NAMES = {logging.INFO: "INFO", logging.WARNING: "WARNING"}
#: Outcome lines wait at most this long (seconds) before they are written, so that one write
#: carries the lines of many calls; each line keeps the time its outcome was recorded.
LOG_FLUSH_SECONDS = 0.1
#: ... and at most this many of them wait: more are written at once.
LOG_PENDING_LINES = 1024
#: Lines go out in writes of at most this many bytes, each of whole lines: a pipe takes a write
#: up to PIPE_BUF in one piece, so the workers of SIDECAR_WORKERS, which share the stderr of
#: the container, never cut into each other's lines.
ATOMIC_WRITE_BYTES = select.PIPE_BUF


def _whole_lines(lines: list[str], limit: int) -> Iterator[str]:
    """``lines`` (ASCII, without their newlines), each ended by a newline, in pieces of whole
    lines of at most ``limit`` characters; a longer line is a piece of its own."""
    piece: list[str] = []
    size = 0
    for line in lines:
        if piece and size + len(line) + 1 > limit:
            yield "\n".join(piece) + "\n"
            piece, size = [], 0
        piece.append(line)
        size += len(line) + 1
    if piece:
        yield "\n".join(piece) + "\n"


#: Texts the recorder keeps scrubbed and encoded (longer ones, or more combinations of them,
#: are scrubbed each time).
_SCRUB_CACHE_TEXT = 128
_SCRUB_CACHE_ENTRIES = 256
#: How JsonFormatter's encoder writes a string (ASCII escapes), in C.
_json_str = json.encoder.encode_basestring_ascii


class OutcomeRecorder:
    """Logs one JSON line and updates metrics for every outcome (delivery.OutcomeObserver).

    Free-form fields (message id, Datafly event name, detail) are scrubbed of email-shaped
    text: they come from the caller or from Bluecore, and a log line is kept for a long time.

    Per outcome it does only what the outcome needs: the metric children of each (status,
    Bluecore event) pair are looked up once and kept, and log fields are built only when
    their level is enabled. Lines wait up to :data:`LOG_FLUSH_SECONDS` (or until
    :data:`LOG_PENDING_LINES` wait), then go out level by level in writes of whole lines of at
    most :data:`ATOMIC_WRITE_BYTES`, one JSON line each, each with the time its outcome was
    recorded: the handler's lock, the write and the flush are paid once per flush (and 4 kB),
    not once per call. :meth:`flush` writes what is pending at once
    (shutdown).
    """

    def __init__(
        self,
        metrics: Metrics,
        logger: logging.Logger,
        redactor: Redactor | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._metrics = metrics
        # The time a line records (a parameter: a test's clock; the module's imports are
        # bound when the compiled module loads, so patching them would not reach it).
        self._wall_clock = wall_clock
        self._logger = logger
        self._redactor = redactor or Redactor()
        # Keyed by (status, bluecore_event): both come from closed sets (the enum and the
        # mapping table), so this stays as small as the metrics' own label sets.
        self._children: dict[tuple[int, str], _OutcomeChildren] = {}
        # Encoded log members by level, each group with the time it was recorded, waiting for
        # the flush; None: no flush is scheduled.
        self._pending: dict[int, list[tuple[float, list[str]]]] | None = None
        self._pending_lines = 0
        self._flush_timer: asyncio.TimerHandle | None = None
        # The members from "datafly_event" to "detail" repeat from outcome to outcome (event
        # names, statuses, reasons and details come from small sets; message ids do not): each
        # combination is scrubbed and encoded once, for the redactor's current secrets (a
        # rotation starts the cache afresh).
        self._middles: dict[tuple[_OutcomeChildren, str, str, str], str] = {}
        self._scrubbed_for: tuple[str, ...] = self._redactor.secrets
        # The attributes of one record per level, made by the logger (see _record).
        self._templates: dict[int, dict[str, Any]] = {}

    def on_outcome(self, result: delivery_pb2.DeliveryResult, dedup_hit: bool) -> None:
        """Record ``result``."""
        fields = self._count(result, dedup_hit)
        if fields is not None:
            level, members = fields
            self._queue(level, [members])

    def on_outcomes(self, outcomes: Sequence[tuple[delivery_pb2.DeliveryResult, bool]]) -> None:
        """Record a batch (in request order): the same metrics and lines as one by one.

        The counters are added to once per batch (per (status, Bluecore event) pair), not
        once per outcome; each latency is still observed on its own.
        """
        counts: dict[_OutcomeChildren, int] = {}
        lines: dict[int, list[str]] = {}
        hits = 0
        for result, dedup_hit in outcomes:
            fields = self._count(result, dedup_hit, counts)
            hits += dedup_hit
            if fields is not None:
                level, members = fields
                group = lines.get(level)
                if group is None:
                    lines[level] = [members]
                else:
                    group.append(members)
        for level, group in lines.items():
            self._queue(level, group)
        for children, count in counts.items():
            children.delivered.inc(count)
        if hits:
            self._metrics.dedup_hits.inc(hits)

    def flush(self) -> None:
        """Write the pending lines now, level by level: INFO before WARNING."""
        pending, self._pending = self._pending, None
        timer, self._flush_timer = self._flush_timer, None
        self._pending_lines = 0
        if timer is not None:
            timer.cancel()  # a no-op when the timer is what called
        for level, groups in sorted((pending or {}).items()):
            if not self._write(level, groups):
                for created, lines in groups:
                    self._logger.handle(self._record(level, lines, created))

    def _write(self, level: int, groups: list[tuple[float, list[str]]]) -> bool:
        """Write ``groups`` (lines, by the time they were recorded) to the log stream without
        a record, if logging is set up as :func:`configure_logging` sets it up; ``False``
        (nothing written) otherwise.

        That setup is one ``StreamHandler`` with a :class:`JsonFormatter`, no filters and no
        propagation: the logger's dispatch (the record, the filters, the handler lookup)
        would then only lead to the formatter and the stream, and it took about half of
        the instructions of writing an outcome line. The text is what the formatter makes
        of the record, and the write is the handler's (its lock, its flush, its error
        handling). Any other setup (another handler, a filter, a test's capture) gets
        the record.
        """
        logger = self._logger
        handlers = logger.handlers
        if len(handlers) != 1 or logger.filters or logger.propagate or logger.disabled:
            return False
        handler = handlers[0]
        formatter = handler.formatter
        if (
            type(handler) is not logging.StreamHandler
            or handler.filters
            or level < handler.level
            or not isinstance(formatter, JsonFormatter)
        ):
            return False
        lines = formatter.json_lines(_LEVEL_NAMES[level], logger.name, _OUTCOME, groups)
        if lines is None or handler.lock is None or handler.terminator != "\n":
            return False
        stream = handler.stream
        with handler.lock:  # what Handler.handle holds around emit; flush() would take it again
            try:
                for piece in _whole_lines(lines, ATOMIC_WRITE_BYTES):
                    stream.write(piece)
                    stream.flush()
            except Exception:  # noqa: BLE001 - as StreamHandler.emit: report, never raise
                created, first = groups[0]
                handler.handleError(self._record(level, first, created))
        return True

    def _record(self, level: int, lines: list[str], now: float) -> logging.LogRecord:
        """The record of ``lines`` at ``level``, recorded at ``now``: a copy of one the logger
        made.

        Every outcome record is the same but for its time and lines; making a record from
        scratch costs about as much as encoding and counting the outcome, copying one a
        fraction of that. The time fields are set as ``LogRecord`` sets them.
        """
        template = self._templates.get(level)
        if template is None:
            logger = self._logger
            made = logger.makeRecord(logger.name, level, "", 0, _OUTCOME, (), None)
            template = self._templates[level] = dict(vars(made))
        record = logging.LogRecord.__new__(logging.LogRecord)
        vars(record).update(template)
        record.created = now
        record.msecs = int((now - int(now)) * 1000) + 0.0
        record.relativeCreated = template["relativeCreated"] + (now - template["created"]) * 1000
        record.json_lines = lines
        return record

    def _queue(self, level: int, lines: list[str]) -> None:
        """Add ``lines`` (encoded members) at ``level``, recorded now, to those waiting."""
        group = (self._wall_clock(), lines)
        pending = self._pending
        if pending is None:
            pending = self._pending = {level: [group]}
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a direct call): write at once
                self.flush()
                return
            self._flush_timer = loop.call_later(LOG_FLUSH_SECONDS, self.flush)
        else:
            groups = pending.get(level)
            if groups is None:
                pending[level] = [group]
            else:
                groups.append(group)
        self._pending_lines += len(lines)
        if self._pending_lines >= LOG_PENDING_LINES:
            self.flush()

    def _count(
        self,
        result: delivery_pb2.DeliveryResult,
        dedup_hit: bool,
        counts: dict[_OutcomeChildren, int] | None = None,
    ) -> tuple[int, str] | None:
        """Update the metrics for ``result``; its level and encoded log members, or None.

        With ``counts`` (a batch), the outcome counters are left to the caller: the outcome
        is tallied in ``counts`` and ``dedup_hit`` is not counted here.

        The members are encoded here, once, as ``JsonFormatter``'s encoder would encode them
        (ASCII escapes, compact separators, the same order), without building a dict.
        """
        key = (result.status, result.bluecore_event)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = self._children_of(*key)
        took = result.latency
        latency = took.seconds + took.nanos / 1e9
        children.latency.observe(latency)
        if counts is not None:
            counts[children] = counts.get(children, 0) + 1
        else:
            children.delivered.inc()
            if dedup_hit:
                self._metrics.dedup_hits.inc()
        if not self._logger.isEnabledFor(children.level):
            return None
        redactor = self._redactor
        secrets = redactor.secrets
        if self._scrubbed_for is not secrets:  # rotated: what was scrubbed may hold the old one
            self._middles.clear()
            self._scrubbed_for = secrets
        texts = (children, result.datafly_event, result.reason, result.detail)
        middle = self._middles.get(texts)
        if middle is None:
            _, datafly_event, reason, detail = texts
            middle = (
                f'"datafly_event":{_json_str(redactor.scrub(datafly_event))},'
                f"{children.members},"
                f'"reason":{_json_str(reason)},'
                f'"detail":{_json_str(redactor.scrub(detail))}'
            )
            if (
                max(len(datafly_event), len(reason), len(detail)) <= _SCRUB_CACHE_TEXT
                and len(self._middles) < _SCRUB_CACHE_ENTRIES
            ):
                self._middles[texts] = middle
        return children.level, (
            f'"message_id":{_json_str(redactor.scrub(result.message_id))},'
            f"{middle},"
            f'"http_status":{int(result.http_status)},'
            f'"attempts":{int(result.attempts)},'
            f'"latency_ms":{float(round(latency * 1000, 2))!r},'
            f'"trace_id":{_json_str(result.trace_id)}'
        )

    def _children_of(self, status_code: int, bluecore_event: str) -> _OutcomeChildren:
        status = status_name(status_code)
        return _OutcomeChildren(
            status=status,
            members=f'"bluecore_event":{_json_str(bluecore_event)},"status":{_json_str(status)}',
            level=logging.WARNING if status.startswith(("FAILED", "REJECTED")) else logging.INFO,
            delivered=self._metrics.deliveries.labels(status=status, bluecore_event=bluecore_event),
            latency=self._metrics.latency.labels(status=status),
        )


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class _OutcomeChildren:
    """What :class:`OutcomeRecorder` needs for one (status, Bluecore event) pair."""

    status: str
    members: str  # the encoded bluecore_event and status members of its log lines
    level: int
    delivered: CounterChild
    latency: HistogramChild
