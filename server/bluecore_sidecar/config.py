"""Settings of the sidecar: one frozen object, read once from an environment mapping.

Every variable is one row of :data:`SETTINGS` (variable, field, parser, default); nothing else
declares a setting's name or default, and the README's settings table is checked against it.
Nothing else in the package reads ``os.environ``. A missing or malformed value raises
:class:`~bluecore_sidecar.errors.ConfigError` naming the variable; the CLI turns it into one
line on stderr and exit code 2. Standard ``OTEL_*`` variables are left to the OpenTelemetry SDK.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from . import envparse as p
from .errors import ConfigError
from .gates import GatePolicy
from .mapping import MappingRules
from .results import MAX_BATCH_EVENTS
from .retry import RetryPolicy

DEFAULT_API_URL = "https://api.bluecore.app/api/track/mobile/v1"
#: ``Var.default`` of a variable that must be set.
REQUIRED = None
#: ``Var.default`` of a variable whose feature is off while it is unset (its parser maps "").
UNSET = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Var:
    """One setting: its variable, where it lands, how it is parsed, its default.

    ``field`` is a :class:`Settings` attribute, or ``group.attribute`` for the policy objects
    (``gates``, ``retry``, ``rules``). ``default`` is written as an operator would write the
    variable, and goes through ``parse`` like any other value. With ``file`` set, ``NAME_FILE``
    may name a file holding the value instead (for secrets and long JSON); not both.
    """

    name: str
    field: str
    parse: Callable[[str], Any]
    default: str | None
    file: bool = False
    #: What a variable set to an empty value means; None: unset, as for most variables.
    blank: str | None = None


# fmt: off
SETTINGS: tuple[Var, ...] = (
    Var("BLUECORE_NAMESPACE", "namespace", p.parse_namespace, REQUIRED, file=True),
    # how often BLUECORE_NAMESPACE_FILE is looked at for a rotated token (one stat)
    Var("SIDECAR_TOKEN_CHECK_INTERVAL", "token_check_interval", p.parse_positive_duration, "5s"),
    Var("BLUECORE_API_URL", "api_url", p.parse_url, DEFAULT_API_URL),
    Var("SIDECAR_GRPC_ADDRESS", "grpc_address", p.parse_address, "127.0.0.1:50051"),
    # kubelet probes reach the pod IP, not loopback
    Var("SIDECAR_OPS_ADDRESS", "ops_address", p.parse_address, "0.0.0.0:9464"),
    # the JSON door: loopback, it has no authentication; empty or "off" turns it off
    Var("SIDECAR_HTTP_ADDRESS", "http_address", p.parse_address_or_off, "127.0.0.1:50080",
        blank="off"),
    Var("SIDECAR_CONSENT_CATEGORY", "gates.consent_category", p.parse_name, "marketing"),
    Var("SIDECAR_CONSENT_DEFAULT", "gates.consent_default", p.parse_consent_default, "deny"),
    Var("SIDECAR_MAX_EVENT_AGE", "gates.max_event_age", p.parse_duration, "24h"),
    Var("SIDECAR_PRODUCT_ID_FIELDS", "rules.product_id_fields", p.parse_product_id_fields,
        "product_id,sku,id"),
    Var("SIDECAR_EVENT_MAP", "rules.event_map", p.parse_event_map, "{}", file=True),
    Var("SIDECAR_CUSTOMER_ATTRIBUTES", "rules.customer_attributes", p.parse_attribute_names,
        "first_name,last_name"),
    Var("SIDECAR_MAX_EVENT_BYTES", "max_event_bytes", p.int_between(256, 4 << 20), "65536"),
    # Above MAX_BATCH_EVENTS a reply of bounded results may outgrow a default client's 4 MiB.
    Var("SIDECAR_BATCH_LIMIT", "batch_limit", p.int_between(1, MAX_BATCH_EVENTS), "500"),
    Var("SIDECAR_DEDUP_WINDOW", "dedup_window", p.parse_duration, "24h"),
    Var("SIDECAR_DEDUP_MAX_ENTRIES", "dedup_max_entries", p.int_between(1, 10_000_000), "100000"),
    Var("SIDECAR_DEDUP_MAX_BYTES", "dedup_max_bytes", p.size_between(1 << 20, 1 << 36), "64MiB"),
    Var("SIDECAR_RETRY_MAX_ATTEMPTS", "retry.max_attempts", p.int_between(1, 100), "5"),
    Var("SIDECAR_RETRY_BASE", "retry.base", p.seconds, "200ms"),
    Var("SIDECAR_RETRY_CAP", "retry.cap", p.seconds, "10s"),
    Var("SIDECAR_ATTEMPT_TIMEOUT", "retry.attempt_timeout", p.seconds, "5s"),
    Var("SIDECAR_MAX_PAUSE", "retry.max_pause", p.seconds, "60s"),
    Var("SIDECAR_DEFAULT_DEADLINE", "default_deadline", p.parse_positive_duration, "30s"),
    Var("SIDECAR_MAX_CONCURRENCY", "max_concurrency", p.int_between(1, 10_000), "64"),
    Var("SIDECAR_MAX_INFLIGHT_CALLS", "max_inflight_calls", p.int_between(1, 100_000), "1000"),
    Var("SIDECAR_SHUTDOWN_GRACE", "shutdown_grace", p.parse_duration, "20s"),
    Var("SIDECAR_WORKERS", "workers", p.int_between(1, 64), "1"),
    Var("SIDECAR_LOG_LEVEL", "log_level", p.parse_log_level, "INFO"),
    Var("SIDECAR_WATCH_BUFFER", "watch_buffer", p.int_between(1, 1_000_000), "1000"),
    Var("SIDECAR_MAX_WATCHERS", "max_watchers", p.int_between(1, 10_000), "100"),
    # The durable queue (issue 11): off while SIDECAR_QUEUE_PATH is unset.
    Var("SIDECAR_QUEUE_PATH", "queue_path", p.parse_queue_path, UNSET),
    Var("SIDECAR_DELIVERY_MODE", "delivery_mode", p.parse_delivery_mode, "wait"),
    Var("SIDECAR_QUEUE_RETRY_CAP", "queue_retry_cap", p.parse_positive_duration, "5m"),
    Var("SIDECAR_QUEUE_MAX_EVENTS", "queue_max_events", p.int_between(1, 100_000_000), "100000"),
    Var("SIDECAR_QUEUE_MAX_BYTES", "queue_max_bytes", p.parse_bytes, "256MiB"),
    Var("SIDECAR_QUEUE_WORKERS", "queue_workers", p.int_between(1, 1024), "16"),
)
# fmt: on

#: Every variable this module reads, for documentation and manifest checks.
ENV_VARS: tuple[str, ...] = tuple(
    name for var in SETTINGS for name in (var.name, *((var.name + "_FILE",) if var.file else ()))
)

_GROUPS: dict[str, Callable[..., Any]] = {
    "gates": GatePolicy,
    "retry": RetryPolicy,
    "rules": MappingRules,
}


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Everything the sidecar is configured with. Build it with :meth:`from_env`.

    The fields have no defaults of their own: the defaults are the ``SETTINGS`` table's.
    """

    namespace: str = dataclasses.field(repr=False)
    token_check_interval: timedelta
    api_url: str
    grpc_address: str
    ops_address: str
    http_address: str  # the JSON door; "" when it is off
    rules: MappingRules = dataclasses.field(repr=False)
    gates: GatePolicy
    retry: RetryPolicy
    max_event_bytes: int
    batch_limit: int
    dedup_window: timedelta
    dedup_max_entries: int
    dedup_max_bytes: int
    default_deadline: timedelta
    max_concurrency: int
    max_inflight_calls: int
    shutdown_grace: timedelta
    workers: int
    log_level: str
    watch_buffer: int
    max_watchers: int
    queue_path: Path | None
    """The durable queue's SQLite file; None: no queue, every event is delivered directly."""
    delivery_mode: int
    """The ``DeliveryMode`` of calls that leave it unset (matters only with a queue)."""
    queue_retry_cap: timedelta
    queue_max_events: int
    queue_max_bytes: int
    queue_workers: int
    namespace_file: Path | None = None
    """Where the token was read from, followed for rotation; ``None``: given inline (fixed).
    Not a row of its own: it is ``BLUECORE_NAMESPACE``'s ``_FILE`` form."""

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, namespace_required: bool = True) -> Settings:
        """Read and validate every setting from ``env`` (normally ``os.environ``).

        ``namespace_required=False`` is for commands that send nothing (Preview): the
        namespace is then ``""`` when none is configured.
        """
        values: dict[str, dict[str, Any]] = {"": {}, **{group: {} for group in _GROUPS}}
        for var in SETTINGS:
            group, _, attribute = var.field.rpartition(".")
            optional = (
                var.default is REQUIRED and not namespace_required and not _configured(env, var)
            )
            values[group][attribute] = "" if optional else _read(env, var)
        top = values.pop("")
        retry = values["retry"]
        if retry["cap"] < retry["base"]:
            raise ConfigError("SIDECAR_RETRY_CAP", "must not be smaller than SIDECAR_RETRY_BASE")
        groups = {group: make(**values[group]) for group, make in _GROUPS.items()}
        token_file = _present(env, "BLUECORE_NAMESPACE_FILE")
        return cls(**top, **groups, namespace_file=Path(token_file.strip()) if token_file else None)


def _read(env: Mapping[str, str], var: Var) -> Any:
    """The parsed value of ``var`` from ``env`` (empty counts as unset), else its default."""
    name, text = var.name, _present(env, var.name)
    if text is None and var.blank is not None and env.get(var.name) is not None:
        text = var.blank
    if var.file:
        path = _present(env, var.name + "_FILE")
        if text is not None and path is not None:
            raise ConfigError(var.name, f"set either it or {var.name}_FILE, not both")
        if path is not None:
            name, text = var.name + "_FILE", _read_file(var.name + "_FILE", path)
    if text is None:
        if var.default is REQUIRED:
            also = f" (or {var.name}_FILE naming a file with it)" if var.file else ""
            raise ConfigError(var.name, f"is required{also}")
        text = var.default
    try:
        return var.parse(text)
    except ValueError as exc:
        raise ConfigError(name, str(exc)) from None


def _configured(env: Mapping[str, str], var: Var) -> bool:
    """Whether ``var`` (or its ``_FILE`` form) has a value in ``env``."""
    return _present(env, var.name) is not None or (
        var.file and _present(env, var.name + "_FILE") is not None
    )


def _present(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value if value is not None and value.strip() else None


def _read_file(name: str, path: str) -> str:
    try:
        text = Path(path.strip()).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(name, f"cannot read the file: {exc.strerror}") from None
    if not text.strip():
        raise ConfigError(name, "the file is empty")
    return text


def split_address(address: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:PORT`` for IPv6) into host and port."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


__all__ = [
    "DEFAULT_API_URL",
    "ENV_VARS",
    "REQUIRED",
    "SETTINGS",
    "UNSET",
    "Settings",
    "Var",
    "split_address",
]
