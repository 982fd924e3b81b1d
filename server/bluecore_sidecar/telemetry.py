"""Observability: OpenTelemetry tracing, Prometheus metrics and JSON logs.

Tracing is configured from the standard ``OTEL_*`` variables by the OpenTelemetry SDK itself;
with no exporter endpoint set it stays off (a no-op tracer costs almost nothing). Metrics live
in a per-process :class:`Metrics` registry served on the ops port. Logs are one JSON object per
line. None of them ever carries the namespace token or an email address.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from datafly.bluecore.v1 import delivery_pb2
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LOGGER_NAME = "bluecore_sidecar"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, message, then the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            entry.update(fields)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(entry, separators=(",", ":"), default=str)


def configure_logging(level: str, stream: TextIO | None = None) -> logging.Logger:
    """Send the sidecar's logs, as JSON lines, to ``stream`` (stderr by default)."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


def configure_tracing(
    env: Mapping[str, str], exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Build a tracer provider from ``OTEL_*`` settings, or return None when tracing is off.

    Tracing is on when an exporter is given (tests) or when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set and ``OTEL_SDK_DISABLED`` is not true. The
    protocol follows ``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL``: ``grpc`` (default) or
    ``http/protobuf``. Sampling follows ``OTEL_TRACES_SAMPLER``, read by the SDK.
    """
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if exporter is None:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        if not endpoint:
            return None
        protocol = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "grpc"
        ).strip()
        exporter = _otlp_exporter(protocol)
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or "bluecore-sidecar"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _otlp_exporter(protocol: str) -> SpanExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter as HttpExporter,
        )

        return HttpExporter()
    raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL {protocol!r} must be grpc or http/protobuf")


def current_trace_id() -> str:
    """Hex trace id of the current span, or an empty string when not traced."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


class Metrics:
    """The sidecar's Prometheus metrics, in a registry of their own.

    Labels hold only enum-like values (statuses, event names from the mapping table, HTTP
    codes), never ids, tokens or emails.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "bluecore_sidecar_deliveries",
            "Delivery outcomes by status and Bluecore event.",
            ["status", "bluecore_event"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "bluecore_sidecar_delivery_latency_seconds",
            "Time from receiving an event to knowing its outcome.",
            ["status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_responses = Counter(
            "bluecore_sidecar_upstream_responses",
            "HTTP attempts against Bluecore by status code (or error kind).",
            ["code"],
            registry=self.registry,
        )
        self.retries = Counter(
            "bluecore_sidecar_upstream_retries",
            "HTTP attempts that were followed by another try.",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "bluecore_sidecar_deliveries_in_flight",
            "Deliveries currently being processed.",
            registry=self.registry,
        )
        self.dedup_hits = Counter(
            "bluecore_sidecar_dedup_hits",
            "Deliveries answered from the dedup table.",
            registry=self.registry,
        )

    def on_attempt(self, status: int | None, error: str | None, retry: bool) -> None:
        """Count one HTTP attempt (upstream.SendObserver)."""
        self.upstream_responses.labels(code=str(status) if status else (error or "error")).inc()
        if retry:
            self.retries.inc()


class OutcomeRecorder:
    """Logs one JSON line and updates metrics for every outcome (delivery.OutcomeObserver)."""

    def __init__(self, metrics: Metrics, logger: logging.Logger) -> None:
        self._metrics = metrics
        self._logger = logger

    def on_outcome(self, result: delivery_pb2.DeliveryResult, dedup_hit: bool) -> None:
        """Record ``result``."""
        status = delivery_pb2.DeliveryStatus.Name(result.status).removeprefix("DELIVERY_STATUS_")
        latency = result.latency.ToTimedelta().total_seconds()
        self._metrics.deliveries.labels(status=status, bluecore_event=result.bluecore_event).inc()
        self._metrics.latency.labels(status=status).observe(latency)
        if dedup_hit:
            self._metrics.dedup_hits.inc()
        level = logging.WARNING if status.startswith(("FAILED", "REJECTED")) else logging.INFO
        self._logger.log(
            level,
            "delivery outcome",
            extra={
                "fields": {
                    "message_id": result.message_id,
                    "datafly_event": result.datafly_event,
                    "bluecore_event": result.bluecore_event,
                    "status": status,
                    "reason": result.reason,
                    "detail": result.detail,
                    "http_status": result.http_status,
                    "attempts": result.attempts,
                    "latency_ms": round(latency * 1000, 2),
                    "trace_id": result.trace_id,
                }
            },
        )
