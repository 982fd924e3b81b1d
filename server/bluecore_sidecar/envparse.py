"""Parsers of setting values: plain functions from text to a value, raising ValueError.

:mod:`~bluecore_sidecar.config` names each one in its settings table and turns the ValueError
into a ConfigError naming the variable. A message never repeats a secret it was given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from datafly.bluecore.v1 import delivery_pb2

from .credential import token_problem
from .mapping import MAX_ATTRIBUTE_KEY, normalise_event_name

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS: dict[str | None, float] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    None: 1.0,
}
_SIZE = re.compile(r"^\s*(\d+)\s*(KiB|MiB|GiB)?\s*$")
_SIZE_UNITS: dict[str | None, int] = {None: 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PRODUCT_ID_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BLUECORE_EVENT = re.compile(r"^[a-z][a-z0-9_]*$")
_BYTES = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*$")
_BYTE_UNITS: dict[str | None, int] = {
    None: 1,
    "B": 1,
    "KiB": 1 << 10,
    "MiB": 1 << 20,
    "GiB": 1 << 30,
}

#: ``SIDECAR_DELIVERY_MODE`` values and the ``DeliveryMode`` each one stands for.
DELIVERY_MODES: dict[str, int] = {
    "wait": delivery_pb2.DELIVERY_MODE_WAIT,
    "enqueue": delivery_pb2.DELIVERY_MODE_ENQUEUE,
    "direct": delivery_pb2.DELIVERY_MODE_DIRECT,
}


def parse_namespace(text: str) -> str:
    """The Bluecore namespace token: one word. The value is a secret, so never echo it."""
    value = text.strip()
    problem = token_problem(value)  # the same rule as for a rotated token
    if problem is not None:
        raise ValueError(problem)
    return value


def parse_event_map(text: str) -> Mapping[str, str | None]:
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


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration; use e.g. 250ms, 5s, 10m, 24h or seconds")
    return timedelta(seconds=float(match.group(1)) * _DURATION_UNITS[match.group(2)])


def parse_positive_duration(text: str) -> timedelta:
    value = parse_duration(text)
    if value <= timedelta(0):
        raise ValueError("must be greater than zero")
    return value


def seconds(text: str) -> float:
    return parse_positive_duration(text).total_seconds()


def int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise ValueError(f"{value} is outside the allowed range {low}..{high}")
        return value

    return parse


def size_between(low: int, high: int) -> Callable[[str], int]:
    """A size in bytes, written as bytes or with a binary unit (``512KiB``, ``64MiB``, ``1GiB``)."""

    def parse(text: str) -> int:
        match = _SIZE.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not a size; use bytes or e.g. 512KiB, 64MiB, 1GiB")
        value = int(match.group(1)) * _SIZE_UNITS[match.group(2)]
        if not low <= value <= high:
            raise ValueError(f"{value} bytes is outside the allowed range {low}..{high}")
        return value

    return parse


def parse_consent_default(text: str) -> bool:
    value = text.strip().lower()
    if value in ("deny", "denied", "false"):
        return False
    if value in ("grant", "granted", "true"):
        return True
    raise ValueError(f"{text!r} must be 'deny' or 'grant'")


def parse_name(text: str) -> str:
    value = text.strip()
    if not _PRODUCT_ID_FIELD.match(value):
        raise ValueError(f"{text!r} must be a plain name (letters, digits, underscores)")
    return value


def parse_product_id_fields(text: str) -> tuple[str, ...]:
    fields = tuple(part.strip() for part in text.split(",") if part.strip())
    if not fields:
        raise ValueError("must list at least one field, e.g. product_id,sku,id")
    for field in fields:
        if not _PRODUCT_ID_FIELD.match(field):
            raise ValueError(f"{field!r} is not a property name")
    return fields


def parse_attribute_names(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    for name in names:
        if not _ATTRIBUTE_NAME.match(name):
            raise ValueError(
                f"{name!r} is not a lowercase snake_case name (Bluecore creates attributes "
                "permanently, so only such names are allowed)"
            )
        if len(name) > MAX_ATTRIBUTE_KEY:
            raise ValueError(f"{name[:32]!r}... is longer than {MAX_ATTRIBUTE_KEY} characters")
    return names


def parse_url(text: str) -> str:
    value = text.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials")
    return value


def parse_address(text: str) -> str:
    value = text.strip()
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:50051 or [::1]:50051)")
    return value


def parse_address_or_off(text: str) -> str:
    """``HOST:PORT``, or ``""`` for ``off`` (a listener that can be turned off)."""
    return "" if text.strip().lower() == "off" else parse_address(text)


def parse_log_level(text: str) -> str:
    value = text.strip().upper()
    if value not in _LOG_LEVELS:
        raise ValueError(f"{text!r} must be one of {', '.join(_LOG_LEVELS)}")
    return value


def parse_queue_path(text: str) -> Path | None:
    """The durable queue's file; "" (unset) means no queue."""
    if not text.strip():
        return None
    path = Path(text.strip())
    if path.is_dir():
        raise ValueError(f"{text.strip()!r} is a directory; name a file, e.g. /var/queue/q.db")
    return path


def parse_delivery_mode(text: str) -> int:
    value = text.strip().lower()
    if value not in DELIVERY_MODES:
        raise ValueError(f"{text!r} must be one of {', '.join(DELIVERY_MODES)}")
    return DELIVERY_MODES[value]


def parse_bytes(text: str) -> int:
    """A size: bytes, or a number with KiB, MiB or GiB; at least 1 KiB."""
    match = _BYTES.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size; use bytes or e.g. 512KiB, 256MiB, 2GiB")
    value = int(match.group(1)) * _BYTE_UNITS[match.group(2)]
    if value < 1024:
        raise ValueError(f"{value} bytes is below the smallest allowed size (1KiB)")
    return value
