"""Observability: OpenTelemetry tracing, Prometheus metrics and JSON logs.

Tracing is configured from the standard ``OTEL_*`` variables, read from the same environment
mapping as the rest of the settings; with no exporter endpoint set it stays off (a no-op tracer
costs almost nothing). Metrics live
in a per-process :class:`Metrics` registry served on the ops port. Logs are one JSON object per
line. None of them ever carries the namespace token or an email address.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import types
import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

import aiohttp
import yarl
from datafly.bluecore.v1 import delivery_pb2
from opentelemetry import trace
from opentelemetry.instrumentation._semconv import _StabilityMode
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.version import __version__ as sdk_version
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from . import __version__
from .errors import ConfigError
from .redaction import Redactor

LOGGER_NAME = "bluecore_sidecar"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, message, then the record's ``fields``."""

    def __init__(self) -> None:
        super().__init__()
        # One encoder for every line: json.dumps with options builds a new one per call.
        self._encoder = json.JSONEncoder(separators=(",", ":"), default=str)
        # The date and time to the second changes once a second; only the milliseconds vary.
        self._second = -1
        self._second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            entry.update(fields)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return self._encoder.encode(entry)

    def _time(self, created: float) -> str:
        """``created`` as ISO 8601 UTC with milliseconds, e.g. ``2026-12-01T20:11:25.123+00:00``."""
        moment = datetime.fromtimestamp(created, UTC)
        second = int(created)
        if second != self._second:
            self._second = second
            self._second_text = moment.replace(microsecond=0).isoformat()[:-6]
        return f"{self._second_text}.{moment.microsecond // 1000:03d}+00:00"


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


#: Samplers accepted in ``OTEL_TRACES_SAMPLER`` (the SDK's names; ``jaeger_remote`` is not).
_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


def configure_tracing(
    env: Mapping[str, str], exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Build a tracer provider from the ``OTEL_*`` values in ``env``, or None when tracing is off.

    Everything is read from ``env`` (never from ``os.environ`` behind the caller's back):

    * off when ``OTEL_SDK_DISABLED=true``, when ``OTEL_TRACES_EXPORTER`` is ``none``, or when
      it asks for ``otlp`` (the default) and neither ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` nor
      ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set: unlike the SDK we do not guess ``localhost:4317``,
      so an unconfigured sidecar pays for no tracing at all;
    * ``OTEL_TRACES_EXPORTER`` is a comma list of ``otlp`` and ``console`` (spans as JSON on
      stderr, for debugging); ``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`` is ``grpc`` (default)
      or ``http/protobuf``; ``..._HEADERS``, ``..._INSECURE`` and ``..._COMPRESSION`` apply;
    * sampling follows ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (default
      ``parentbased_always_on``); the resource takes ``OTEL_RESOURCE_ATTRIBUTES`` and
      ``OTEL_SERVICE_NAME`` (default ``bluecore-sidecar``).

    ``exporter`` (tests) replaces the configured exporters and is called synchronously as each
    span ends. A bad value raises :class:`ConfigError` naming the variable.
    """
    if _flag(env, "OTEL_SDK_DISABLED"):
        return None
    processors: list[SpanProcessor] = []
    if exporter is not None:
        processors.append(SimpleSpanProcessor(exporter))
    else:
        names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
        for name in filter(None, names):
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
    provider = TracerProvider(resource=_resource(env), sampler=_sampler(env))
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def _otlp_exporter(env: Mapping[str, str]) -> SpanExporter | None:
    """The OTLP span exporter ``env`` asks for, or None when no endpoint is set."""
    endpoint = _signal(env, "ENDPOINT")
    if not endpoint:
        return None
    specific = bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip())
    protocol = (_signal(env, "PROTOCOL") or "grpc").lower()
    headers = _parse_pairs(_signal(env, "HEADERS"), "OTEL_EXPORTER_OTLP_HEADERS")
    compression = _compression(_signal(env, "COMPRESSION"))
    if protocol == "grpc":
        import grpc  # noqa: PLC0415 - exporters load only when tracing is on
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter as GrpcExporter,
        )

        insecure_text = _signal(env, "INSECURE")
        insecure = (
            insecure_text.lower() == "true"
            if insecure_text
            else urllib.parse.urlsplit(endpoint).scheme == "http"
        )
        return GrpcExporter(
            endpoint=endpoint,
            insecure=insecure,
            headers=headers or None,
            compression={"gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}.get(
                compression
            ),
        )
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http import (  # noqa: PLC0415
            Compression as HttpCompression,
        )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter as HttpExporter,
        )

        # The generic endpoint is a base URL; the per-signal one is used as it is.
        url = endpoint if specific else endpoint.rstrip("/") + "/v1/traces"
        return HttpExporter(
            endpoint=url,
            headers=headers or None,
            compression=HttpCompression(compression) if compression else None,
        )
    raise ConfigError(
        "OTEL_EXPORTER_OTLP_PROTOCOL", f"{protocol!r} is not supported; use grpc or http/protobuf"
    )


def _signal(env: Mapping[str, str], key: str) -> str:
    """``OTEL_EXPORTER_OTLP_TRACES_<key>``, falling back to ``OTEL_EXPORTER_OTLP_<key>``."""
    value = env.get(f"OTEL_EXPORTER_OTLP_TRACES_{key}", "").strip()
    return value or env.get(f"OTEL_EXPORTER_OTLP_{key}", "").strip()


def _compression(text: str) -> str:
    text = text.lower()
    if text in ("", "none"):
        return ""
    if text in ("gzip", "deflate"):
        return text
    raise ConfigError("OTEL_EXPORTER_OTLP_COMPRESSION", f"{text!r} must be gzip, deflate or none")


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() == "true"


def _parse_pairs(text: str, name: str) -> dict[str, str]:
    """``k1=v1,k2=v2`` (values percent-encoded, as the OTel spec says) as a dict."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            # The value may be a credential: name the variable, never echo the text.
            raise ConfigError(name, "must be a comma-separated list of key=value pairs")
        pairs[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(value.strip())
    return pairs


def _resource(env: Mapping[str, str]) -> Resource:
    attributes: dict[str, str] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": sdk_version,
        "service.version": __version__,
    }
    attributes.update(
        _parse_pairs(env.get("OTEL_RESOURCE_ATTRIBUTES", ""), "OTEL_RESOURCE_ATTRIBUTES")
    )
    service = env.get("OTEL_SERVICE_NAME", "").strip()
    attributes["service.name"] = service or attributes.get("service.name") or "bluecore-sidecar"
    return Resource(attributes)


def _sampler(env: Mapping[str, str]) -> sampling.Sampler:
    name = env.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    if name not in _SAMPLERS:
        raise ConfigError("OTEL_TRACES_SAMPLER", f"{name!r} must be one of {', '.join(_SAMPLERS)}")
    if name.endswith("always_on"):
        root: sampling.Sampler = sampling.ALWAYS_ON
    elif name.endswith("always_off"):
        root = sampling.ALWAYS_OFF
    else:
        arg = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip() or "1.0"
        try:
            ratio = float(arg)
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            raise ConfigError("OTEL_TRACES_SAMPLER_ARG", f"{arg!r} must be a ratio from 0 to 1")
        root = sampling.TraceIdRatioBased(ratio)
    return sampling.ParentBased(root) if name.startswith("parentbased_") else root


def http_trace_configs(provider: TracerProvider | None) -> list[aiohttp.TraceConfig]:
    """aiohttp hooks for one CLIENT span per HTTP attempt, or none when tracing is off.

    The spans come from ``opentelemetry-instrumentation-aiohttp-client`` on our own provider
    (no global one), with the stable HTTP semantic conventions: span name ``POST``,
    ``http.request.method``, ``url.full`` (query and userinfo removed: no secret can ride in
    them), ``server.address``, ``http.response.status_code`` and ``error.type`` with an error
    status for 4xx, 5xx and transport failures. A second hook adds
    ``http.request.resend_count`` from the ``trace_request_ctx`` the caller passes with the
    request (see :func:`attempt_context`).
    """
    if provider is None:
        return []
    instrumented = create_trace_config(
        url_filter=_url_without_secrets,
        tracer_provider=provider,
        meter_provider=NoOpMeterProvider(),
        # The stable names (http.request.method, url.full, ...) rather than the old ones.
        sem_conv_opt_in_mode=_StabilityMode.HTTP,
    )
    resend = aiohttp.TraceConfig()
    resend.on_request_start.append(_set_resend_count)
    # Order matters: the instrumentation's hook makes its span current, then ours annotates it.
    return [instrumented, resend]


def client_span_wanted() -> bool:
    """Whether an HTTP try made now could be sampled: not inside a call that was not.

    Every sampler we accept decides a child as it decided its parent (the ratio samplers
    look at the trace id, which the child shares), so the CLIENT span of a try inside an
    unsampled call would never be recorded; without a current span the sampler decides.
    """
    context = trace.get_current_span().get_span_context()
    return not context.is_valid or context.trace_flags.sampled


def attempt_context(attempt: int) -> dict[str, int]:
    """The ``trace_request_ctx`` for try number ``attempt`` (1 for the first try)."""
    return {_RESEND_COUNT: attempt - 1}


_RESEND_COUNT = "http.request.resend_count"


def _url_without_secrets(url: yarl.URL) -> str:
    return str(url.with_user(None).with_query(None).with_fragment(None))


async def _set_resend_count(
    _session: aiohttp.ClientSession,
    trace_config_ctx: types.SimpleNamespace,
    _params: aiohttp.TraceRequestStartParams,
) -> None:
    request_ctx = trace_config_ctx.trace_request_ctx
    if isinstance(request_ctx, Mapping) and _RESEND_COUNT in request_ctx:
        trace.get_current_span().set_attribute(_RESEND_COUNT, request_ctx[_RESEND_COUNT])


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
        self.calls_admitted = Counter(
            "bluecore_sidecar_calls_admitted",
            "Delivery RPCs let in by admission control, by method.",
            ["method"],
            registry=self.registry,
        )
        self.calls_refused = Counter(
            "bluecore_sidecar_calls_refused",
            "RPCs answered with an error status (shed as OVERLOADED, malformed, draining, ...).",
            ["method", "code", "reason"],
            registry=self.registry,
        )
        self._responses_by_code: dict[str, Counter] = {}

    def on_attempt(self, status: int | None, error: str | None, retry: bool) -> None:
        """Count one HTTP attempt (upstream.SendObserver)."""
        code = str(status) if status else (error or "error")
        counter = self._responses_by_code.get(code)
        if counter is None:
            # HTTP codes and error kinds: a small closed set, each child looked up once.
            counter = self._responses_by_code[code] = self.upstream_responses.labels(code=code)
        counter.inc()
        if retry:
            self.retries.inc()


class OutcomeRecorder:
    """Logs one JSON line and updates metrics for every outcome (delivery.OutcomeObserver).

    Free-form fields (message id, Datafly event name, detail) are scrubbed of email-shaped
    text: they come from the caller or from Bluecore, and a log line is kept for a long time.

    Per outcome it does only what the outcome needs: the metric children of each (status,
    Bluecore event) pair are looked up once and kept, and the log record is built only when
    its level is enabled, without the stack walk ``Logger.log`` makes to find the caller (the
    JSON line does not show it).
    """

    def __init__(
        self, metrics: Metrics, logger: logging.Logger, redactor: Redactor | None = None
    ) -> None:
        self._metrics = metrics
        self._logger = logger
        self._redactor = redactor or Redactor()
        # Keyed by (status, bluecore_event): both come from closed sets (the enum and the
        # mapping table), so this stays as small as the metrics' own label sets.
        self._children: dict[tuple[int, str], _OutcomeChildren] = {}

    def on_outcome(self, result: delivery_pb2.DeliveryResult, dedup_hit: bool) -> None:
        """Record ``result``."""
        key = (result.status, result.bluecore_event)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = self._children_of(*key)
        latency = result.latency.seconds + result.latency.nanos / 1e9
        children.delivered.inc()
        children.latency.observe(latency)
        if dedup_hit:
            self._metrics.dedup_hits.inc()
        level = children.level
        logger = self._logger
        if not logger.isEnabledFor(level):
            return
        scrub = self._redactor.scrub
        fields = {
            "message_id": scrub(result.message_id),
            "datafly_event": scrub(result.datafly_event),
            "bluecore_event": result.bluecore_event,
            "status": children.status,
            "reason": result.reason,
            "detail": scrub(result.detail),
            "http_status": result.http_status,
            "attempts": result.attempts,
            "latency_ms": round(latency * 1000, 2),
            "trace_id": result.trace_id,
        }
        logger.handle(
            logger.makeRecord(
                logger.name, level, "", 0, "delivery outcome", (), None, extra={"fields": fields}
            )
        )

    def _children_of(self, status_code: int, bluecore_event: str) -> _OutcomeChildren:
        status = delivery_pb2.DeliveryStatus.Name(status_code).removeprefix("DELIVERY_STATUS_")
        return _OutcomeChildren(
            status=status,
            level=logging.WARNING if status.startswith(("FAILED", "REJECTED")) else logging.INFO,
            delivered=self._metrics.deliveries.labels(status=status, bluecore_event=bluecore_event),
            latency=self._metrics.latency.labels(status=status),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class _OutcomeChildren:
    """What :class:`OutcomeRecorder` needs for one (status, Bluecore event) pair."""

    status: str
    level: int
    delivered: Counter
    latency: Histogram
