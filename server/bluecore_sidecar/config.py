"""Settings of the sidecar: one frozen object, read once from an environment mapping.

Nothing else in the package reads ``os.environ``. A missing or malformed value raises
:class:`~bluecore_sidecar.errors.ConfigError` naming the variable; the CLI turns it into one
line on stderr and exit code 2. Standard ``OTEL_*`` variables are left to the OpenTelemetry SDK.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from datafly.bluecore.v1 import delivery_pb2

from .errors import ConfigError
from .gates import GatePolicy
from .mapping import MappingRules, normalise_event_name
from .retry import RetryPolicy

DEFAULT_API_URL = "https://api.bluecore.app/api/track/mobile/v1"

#: Every variable this module reads, for documentation and manifest checks.
ENV_VARS: tuple[str, ...] = (
    "BLUECORE_NAMESPACE",
    "BLUECORE_NAMESPACE_FILE",
    "BLUECORE_API_URL",
    "SIDECAR_GRPC_ADDRESS",
    "SIDECAR_OPS_ADDRESS",
    "SIDECAR_CONSENT_CATEGORY",
    "SIDECAR_CONSENT_DEFAULT",
    "SIDECAR_MAX_EVENT_AGE",
    "SIDECAR_PRODUCT_ID_FIELDS",
    "SIDECAR_EVENT_MAP",
    "SIDECAR_EVENT_MAP_FILE",
    "SIDECAR_CUSTOMER_ATTRIBUTES",
    "SIDECAR_MAX_EVENT_BYTES",
    "SIDECAR_BATCH_LIMIT",
    "SIDECAR_DEDUP_WINDOW",
    "SIDECAR_DEDUP_MAX_ENTRIES",
    "SIDECAR_RETRY_MAX_ATTEMPTS",
    "SIDECAR_RETRY_BASE",
    "SIDECAR_RETRY_CAP",
    "SIDECAR_ATTEMPT_TIMEOUT",
    "SIDECAR_DEFAULT_DEADLINE",
    "SIDECAR_MAX_CONCURRENCY",
    "SIDECAR_SHUTDOWN_GRACE",
    "SIDECAR_LOG_LEVEL",
    "SIDECAR_WATCH_BUFFER",
    "SIDECAR_QUEUE_PATH",
    "SIDECAR_DELIVERY_MODE",
    "SIDECAR_QUEUE_RETRY_CAP",
    "SIDECAR_QUEUE_MAX_EVENTS",
    "SIDECAR_QUEUE_MAX_BYTES",
    "SIDECAR_QUEUE_WORKERS",
)

#: ``SIDECAR_DELIVERY_MODE`` values and the ``DeliveryMode`` each one stands for.
DELIVERY_MODES: dict[str, int] = {
    "wait": delivery_pb2.DELIVERY_MODE_WAIT,
    "enqueue": delivery_pb2.DELIVERY_MODE_ENQUEUE,
    "direct": delivery_pb2.DELIVERY_MODE_DIRECT,
}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_BYTES = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*$")
_BYTE_UNITS: dict[str | None, int] = {
    None: 1,
    "B": 1,
    "KiB": 1 << 10,
    "MiB": 1 << 20,
    "GiB": 1 << 30,
}
_DURATION_UNITS: dict[str | None, float] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    None: 1.0,
}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PRODUCT_ID_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BLUECORE_EVENT = re.compile(r"^[a-z][a-z0-9_]*$")

_DEFAULT_PRODUCT_ID_FIELDS: tuple[str, ...] = ("product_id", "sku", "id")
_DEFAULT_CUSTOMER_ATTRIBUTES: tuple[str, ...] = ("first_name", "last_name")

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Everything the sidecar is configured with. Build it with :meth:`from_env`."""

    namespace: str = dataclasses.field(repr=False)
    api_url: str = DEFAULT_API_URL
    grpc_address: str = "127.0.0.1:50051"
    ops_address: str = "0.0.0.0:9464"  # kubelet probes reach the pod IP, not loopback
    rules: MappingRules = dataclasses.field(default_factory=MappingRules)
    gates: GatePolicy = dataclasses.field(default_factory=GatePolicy)
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    max_event_bytes: int = 65536
    batch_limit: int = 500
    dedup_window: timedelta = timedelta(hours=24)
    dedup_max_entries: int = 100_000
    default_deadline: timedelta = timedelta(seconds=30)
    max_concurrency: int = 64
    shutdown_grace: timedelta = timedelta(seconds=20)
    log_level: str = "INFO"
    watch_buffer: int = 1000
    queue_path: Path | None = None
    """The durable queue's SQLite file; None: no queue, every event is delivered directly."""
    delivery_mode: int = int(delivery_pb2.DELIVERY_MODE_WAIT)
    """The ``DeliveryMode`` of calls that leave it unset (matters only with a queue)."""
    queue_retry_cap: timedelta = timedelta(minutes=5)
    queue_max_events: int = 100_000
    queue_max_bytes: int = 256 << 20
    queue_workers: int = 16

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, namespace_required: bool = True) -> Settings:
        """Read and validate every setting from ``env`` (normally ``os.environ``).

        ``namespace_required=False`` is for commands that send nothing (Preview): the
        namespace is then ``""`` when none is configured.
        """
        reader = _Reader(env)
        namespace = _read_namespace(reader, namespace_required)
        product_id_fields = reader.get(
            "SIDECAR_PRODUCT_ID_FIELDS", _DEFAULT_PRODUCT_ID_FIELDS, _parse_product_id_fields
        )
        customer_attributes = reader.get(
            "SIDECAR_CUSTOMER_ATTRIBUTES", _DEFAULT_CUSTOMER_ATTRIBUTES, _parse_attribute_names
        )
        rules = MappingRules(
            product_id_fields=product_id_fields,
            event_map=_read_event_map(reader),
            customer_attributes=customer_attributes,
        )
        gates = GatePolicy(
            consent_category=reader.get("SIDECAR_CONSENT_CATEGORY", "marketing", _parse_name),
            consent_default=reader.get("SIDECAR_CONSENT_DEFAULT", False, _parse_consent_default),
            max_event_age=reader.get("SIDECAR_MAX_EVENT_AGE", timedelta(hours=24), _parse_duration),
        )
        retry = RetryPolicy(
            max_attempts=reader.get("SIDECAR_RETRY_MAX_ATTEMPTS", 5, _positive_int(1, 100)),
            base=reader.get("SIDECAR_RETRY_BASE", 0.2, _seconds),
            cap=reader.get("SIDECAR_RETRY_CAP", 10.0, _seconds),
            attempt_timeout=reader.get("SIDECAR_ATTEMPT_TIMEOUT", 5.0, _seconds),
        )
        if retry.cap < retry.base:
            raise ConfigError("SIDECAR_RETRY_CAP", "must not be smaller than SIDECAR_RETRY_BASE")
        return cls(
            namespace=namespace,
            api_url=reader.get("BLUECORE_API_URL", DEFAULT_API_URL, _parse_url),
            grpc_address=reader.get("SIDECAR_GRPC_ADDRESS", "127.0.0.1:50051", _parse_address),
            ops_address=reader.get("SIDECAR_OPS_ADDRESS", "0.0.0.0:9464", _parse_address),
            rules=rules,
            gates=gates,
            retry=retry,
            max_event_bytes=reader.get(
                "SIDECAR_MAX_EVENT_BYTES", 65536, _positive_int(256, 4 << 20)
            ),
            batch_limit=reader.get("SIDECAR_BATCH_LIMIT", 500, _positive_int(1, 10_000)),
            dedup_window=reader.get("SIDECAR_DEDUP_WINDOW", timedelta(hours=24), _parse_duration),
            dedup_max_entries=reader.get(
                "SIDECAR_DEDUP_MAX_ENTRIES", 100_000, _positive_int(1, 10_000_000)
            ),
            default_deadline=reader.get(
                "SIDECAR_DEFAULT_DEADLINE", timedelta(seconds=30), _parse_positive_duration
            ),
            max_concurrency=reader.get("SIDECAR_MAX_CONCURRENCY", 64, _positive_int(1, 10_000)),
            shutdown_grace=reader.get(
                "SIDECAR_SHUTDOWN_GRACE", timedelta(seconds=20), _parse_duration
            ),
            log_level=reader.get("SIDECAR_LOG_LEVEL", "INFO", _parse_log_level),
            watch_buffer=reader.get("SIDECAR_WATCH_BUFFER", 1000, _positive_int(1, 1_000_000)),
            queue_path=reader.get("SIDECAR_QUEUE_PATH", None, _parse_path),
            delivery_mode=reader.get(
                "SIDECAR_DELIVERY_MODE", int(delivery_pb2.DELIVERY_MODE_WAIT), _parse_delivery_mode
            ),
            queue_retry_cap=reader.get(
                "SIDECAR_QUEUE_RETRY_CAP", timedelta(minutes=5), _parse_positive_duration
            ),
            queue_max_events=reader.get(
                "SIDECAR_QUEUE_MAX_EVENTS", 100_000, _positive_int(1, 100_000_000)
            ),
            queue_max_bytes=reader.get("SIDECAR_QUEUE_MAX_BYTES", 256 << 20, _parse_bytes),
            queue_workers=reader.get("SIDECAR_QUEUE_WORKERS", 16, _positive_int(1, 1024)),
        )


class _Reader:
    """Reads variables, treating empty values as unset and naming the variable on errors."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def raw(self, name: str) -> str | None:
        value = self._env.get(name)
        if value is None or not value.strip():
            return None
        return value

    def get(self, name: str, default: T, parse: Callable[[str], T]) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return parse(value)
        except ValueError as exc:
            raise ConfigError(name, str(exc)) from None


def _read_namespace(reader: _Reader, required: bool = True) -> str:
    inline = reader.raw("BLUECORE_NAMESPACE")
    path = reader.raw("BLUECORE_NAMESPACE_FILE")
    if inline is not None and path is not None:
        raise ConfigError(
            "BLUECORE_NAMESPACE", "set either it or BLUECORE_NAMESPACE_FILE, not both"
        )
    if path is not None:
        try:
            value = Path(path.strip()).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                "BLUECORE_NAMESPACE_FILE", f"cannot read the file: {exc.strerror}"
            ) from None
        if not value:
            raise ConfigError("BLUECORE_NAMESPACE_FILE", "the file is empty")
        name = "BLUECORE_NAMESPACE_FILE"
    elif inline is not None:
        value = inline.strip()
        name = "BLUECORE_NAMESPACE"
    elif not required:
        return ""
    else:
        raise ConfigError(
            "BLUECORE_NAMESPACE", "is required (or BLUECORE_NAMESPACE_FILE naming a file with it)"
        )
    # The value is a secret: describe what is wrong with it, never echo it.
    if any(ch.isspace() for ch in value) or len(value) > 256:
        raise ConfigError(name, "must be a single token without spaces, at most 256 characters")
    return value


def _read_event_map(reader: _Reader) -> Mapping[str, str | None]:
    inline = reader.raw("SIDECAR_EVENT_MAP")
    path = reader.raw("SIDECAR_EVENT_MAP_FILE")
    if inline is not None and path is not None:
        raise ConfigError("SIDECAR_EVENT_MAP", "set either it or SIDECAR_EVENT_MAP_FILE, not both")
    if path is not None:
        name = "SIDECAR_EVENT_MAP_FILE"
        try:
            text = Path(path.strip()).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(name, f"cannot read the file: {exc.strerror}") from None
    elif inline is not None:
        name, text = "SIDECAR_EVENT_MAP", inline
    else:
        return {}
    try:
        return _parse_event_map(text)
    except ValueError as exc:
        raise ConfigError(name, str(exc)) from None


def _parse_event_map(text: str) -> Mapping[str, str | None]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not valid JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(raw, dict):
        raise ValueError('must be a JSON object like {"Coupon Applied": "coupon_applied"}')
    result: dict[str, str | None] = {}
    for key, target in raw.items():
        normalised = normalise_event_name(key)
        if not normalised:
            raise ValueError(f"has an empty event name key {key!r}")
        if target is not None and not (isinstance(target, str) and _BLUECORE_EVENT.match(target)):
            raise ValueError(
                f"maps {key!r} to {target!r}; use a lowercase snake_case Bluecore event name "
                "or null to drop the event"
            )
        result[normalised] = target
    return result


def _parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration; use e.g. 250ms, 5s, 10m, 24h or seconds")
    return timedelta(seconds=float(match.group(1)) * _DURATION_UNITS[match.group(2)])


def parse_duration(text: str) -> timedelta:
    """A duration as the settings write it (``250ms``, ``5s``, ``10m``, ``24h``, seconds)."""
    return _parse_duration(text)


def _parse_positive_duration(text: str) -> timedelta:
    value = _parse_duration(text)
    if value <= timedelta(0):
        raise ValueError("must be greater than zero")
    return value


def _seconds(text: str) -> float:
    return _parse_positive_duration(text).total_seconds()


def _positive_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise ValueError(f"{value} is outside the allowed range {low}..{high}")
        return value

    return parse


def _parse_consent_default(text: str) -> bool:
    value = text.strip().lower()
    if value in ("deny", "denied", "false"):
        return False
    if value in ("grant", "granted", "true"):
        return True
    raise ValueError(f"{text!r} must be 'deny' or 'grant'")


def _parse_name(text: str) -> str:
    value = text.strip()
    if not _PRODUCT_ID_FIELD.match(value):
        raise ValueError(f"{text!r} must be a plain name (letters, digits, underscores)")
    return value


def _parse_product_id_fields(text: str) -> tuple[str, ...]:
    fields = tuple(part.strip() for part in text.split(",") if part.strip())
    if not fields:
        raise ValueError("must list at least one field, e.g. product_id,sku,id")
    for field in fields:
        if not _PRODUCT_ID_FIELD.match(field):
            raise ValueError(f"{field!r} is not a property name")
    return fields


def _parse_attribute_names(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    for name in names:
        if not _ATTRIBUTE_NAME.match(name):
            raise ValueError(
                f"{name!r} is not a lowercase snake_case name (Bluecore creates attributes "
                "permanently, so only such names are allowed)"
            )
    return names


def _parse_url(text: str) -> str:
    value = text.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials")
    return value


def _parse_address(text: str) -> str:
    value = text.strip()
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:50051 or [::1]:50051)")
    return value


def _parse_log_level(text: str) -> str:
    value = text.strip().upper()
    if value not in _LOG_LEVELS:
        raise ValueError(f"{text!r} must be one of {', '.join(_LOG_LEVELS)}")
    return value


def _parse_path(text: str) -> Path:
    path = Path(text.strip())
    if path.is_dir():
        raise ValueError(f"{text.strip()!r} is a directory; name a file, e.g. /var/queue/q.db")
    return path


def _parse_delivery_mode(text: str) -> int:
    value = text.strip().lower()
    if value not in DELIVERY_MODES:
        raise ValueError(f"{text!r} must be one of {', '.join(DELIVERY_MODES)}")
    return DELIVERY_MODES[value]


def _parse_bytes(text: str) -> int:
    match = _BYTES.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size; use bytes or e.g. 512KiB, 256MiB, 2GiB")
    value = int(match.group(1)) * _BYTE_UNITS[match.group(2)]
    if value < 1024:
        raise ValueError(f"{value} bytes is below the smallest allowed size (1KiB)")
    return value


def split_address(address: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:PORT`` for IPv6) into host and port."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


__all__ = [
    "DEFAULT_API_URL",
    "DELIVERY_MODES",
    "ENV_VARS",
    "Settings",
    "parse_duration",
    "split_address",
]
