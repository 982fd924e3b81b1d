"""The one serialiser of Bluecore bodies: where a tokenless body meets the credential.

The mapper builds bodies without ``properties.token``; the upstream client adds the
namespace here when it sends, and Preview adds :data:`REDACTED` through the same function,
so what Preview shows is byte for byte what goes out, the token aside.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: What Preview shows in place of the namespace token.
REDACTED = "***"


#: Built once: ``json.dumps`` with options constructs a new encoder on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(body: Mapping[str, Any]) -> str:
    """Compact JSON, non-ASCII kept as is; NaN and infinities raise ``ValueError``."""
    return _ENCODER.encode(body)


def with_token(body: Mapping[str, Any], token: str) -> dict[str, Any]:
    """A copy of ``body`` whose ``properties`` start with ``token`` (the input is untouched)."""
    properties = body.get("properties")
    rest = dict(properties) if isinstance(properties, Mapping) else {}
    rest.pop("token", None)
    return {**body, "properties": {"token": token, **rest}}


def serialise(body: Mapping[str, Any], token: str) -> bytes:
    """``body`` with ``properties.token`` = ``token``, as UTF-8 JSON for the wire."""
    return dumps(with_token(body, token)).encode("utf-8")


def redacted(body: Mapping[str, Any]) -> str:
    """``body`` as Preview shows it: serialised as for the wire, with the token ``***``."""
    return serialise(body, REDACTED).decode("utf-8")
