"""The one serialiser of Bluecore bodies: where a tokenless body meets the credential.

The mapper builds bodies without ``properties.token``; the upstream client adds the
namespace here when it sends, and Preview adds :data:`REDACTED` through the same function,
so what Preview shows is byte for byte what goes out, the token aside.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

#: What Preview shows in place of the namespace token.
REDACTED = "***"


#: Built once: ``json.dumps`` with options constructs a new encoder on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
#: How ``_ENCODER`` writes a lone string (non-ASCII kept), without going through it.
_json_str = json.encoder.encode_basestring


def dumps(body: Mapping[str, Any]) -> str:
    """Compact JSON, non-ASCII kept as is; NaN and infinities raise ``ValueError``."""
    return _ENCODER.encode(body)


@dataclasses.dataclass(frozen=True, slots=True)
class Encoded:
    """A tokenless body as :func:`dumps` wrote it, and where the token goes into that text."""

    text: str
    token_at: int
    """Offset just inside ``"properties":{``, where ``"token":...,`` is inserted; -1 when
    the body does not have the usual shape (then :func:`serialise` encodes it anew)."""


def encode(body: Mapping[str, Any]) -> Encoded:
    """``body`` encoded once (``ValueError`` for NaN and infinities), ready for any token.

    The mapper encodes every body anyway, to be sure it is valid JSON; keeping that text
    saves encoding it a second time, with the token, for every try.
    """
    text = dumps(body)
    return Encoded(text, _token_at(body, text))


def _token_at(body: Mapping[str, Any], text: str) -> int:
    keys = iter(body)
    if next(keys, None) != "event" or next(keys, None) != "properties":
        return -1
    properties = body["properties"]
    event = body["event"]
    if (
        not isinstance(event, str)
        or not isinstance(properties, dict)
        or not properties
        or "token" in properties
    ):
        return -1
    # The text is '{"event":' + the name + ',"properties":{' + the rest.
    at = len('{"event":') + len(_json_str(event))
    if not text.startswith(_PROPERTIES, at):
        return -1
    return at + len(_PROPERTIES)


_PROPERTIES = ',"properties":{'


def with_token(body: Mapping[str, Any], token: str) -> dict[str, Any]:
    """A copy of ``body`` whose ``properties`` start with ``token`` (the input is untouched)."""
    properties = body.get("properties")
    rest = dict(properties) if isinstance(properties, Mapping) else {}
    rest.pop("token", None)
    return {**body, "properties": {"token": token, **rest}}


def serialise(body: Mapping[str, Any], token: str, encoded: Encoded | None = None) -> bytes:
    """``body`` with ``properties.token`` = ``token``, as UTF-8 JSON for the wire.

    ``encoded`` (from :func:`encode` of the same ``body``) gives the same bytes without
    encoding the body again: the token is put into its text.
    """
    if encoded is not None and encoded.token_at >= 0:
        text, at = encoded.text, encoded.token_at
        return f'{text[:at]}"token":{_json_str(token)},{text[at:]}'.encode()
    return dumps(with_token(body, token)).encode("utf-8")


def redacted(body: Mapping[str, Any]) -> str:
    """``body`` as Preview shows it: serialised as for the wire, with the token ``***``."""
    return serialise(body, REDACTED).decode("utf-8")
