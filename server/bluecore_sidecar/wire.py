"""The one serialiser of Bluecore bodies: where a tokenless body meets the credential.

The mapper builds bodies without ``properties.token``; the upstream client adds the
namespace here when it sends, and Preview adds :data:`REDACTED` through the same function,
so what Preview shows is byte for byte what goes out, the token aside.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

#: What Preview shows in place of the namespace token.
REDACTED = "***"


#: Built once: ``json.dumps`` with options constructs a new encoder on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
#: How ``_ENCODER`` writes a lone string (non-ASCII kept), without going through it.
_json_str = json.encoder.encode_basestring
#: ``_ENCODER``'s C half, made once: ``JSONEncoder.encode`` makes a new one for every body.
#: Without the circular-reference check (``markers`` None): bodies are trees built by the
#: mapper from protobuf messages, which cannot hold a cycle.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)  # not in typeshed
_c_encode = (
    None
    if _c_make_encoder is None
    else _c_make_encoder(None, _ENCODER.default, _json_str, None, ":", ",", False, False, False)
)


def dumps(body: Mapping[str, Any]) -> str:
    """Compact JSON, non-ASCII kept as is; NaN and infinities raise ``ValueError``."""
    if _c_encode is not None and type(body) is dict:
        return "".join(_c_encode(body, 0))
    return _ENCODER.encode(body)


class Encoded(NamedTuple):
    """A tokenless body as :func:`dumps` wrote it, and where the token goes into that text."""

    text: str
    token_at: int
    """Offset just inside ``"properties":{``, where ``"token":...,`` is inserted; -1 when
    the body does not have the usual shape (then :func:`serialise` encodes it anew)."""


def encode(body: Mapping[str, Any]) -> Encoded:
    """``body`` encoded once (``ValueError`` for NaN and infinities), ready for any token.

    A body of the mapper's shape, ``{"event": name, "properties": {...}}`` in that order, is
    :func:`encode_request`'s; any other is encoded as it is, and :func:`serialise` encodes it
    anew with the token.
    """
    keys = list(body)
    event, properties = body.get("event"), body.get("properties")
    if keys == ["event", "properties"] and isinstance(event, str) and type(properties) is dict:
        return encode_request(event, properties)
    return Encoded(dumps(body), -1)


def encode_request(event: str, properties: dict[str, Any]) -> Encoded:
    """``{"event": event, "properties": properties}`` encoded, as :func:`dumps` would.

    The mapper encodes every body anyway, to be sure it is valid JSON; keeping that text
    saves encoding it a second time, with the token, for every try. The token goes first
    in ``properties``, unless they are empty or already hold one.
    """
    head = f'{{"event":{_json_str(event)},"properties":'
    text = f"{head}{dumps(properties)}}}"
    return Encoded(text, len(head) + 1 if properties and "token" not in properties else -1)


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
