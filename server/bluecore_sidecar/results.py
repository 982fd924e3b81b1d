"""Size bounds of a ``DeliveryResult``, and the one function that applies them (*pure*).

Every text field of a result is cut to :data:`MAX_TEXT_CHARS` characters (:func:`new_result`
builds every result the pipeline answers with), so one result has a
known worst-case size (:data:`MAX_RESULT_BYTES`) and a full ``DeliverBatch`` reply fits a
default gRPC client's 4 MiB receive limit (:data:`MAX_BATCH_EVENTS` events at most).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from datafly.bluecore.v1 import delivery_pb2

#: Longest text kept in any string field of a result, in characters, marker included.
MAX_TEXT_CHARS: Final = 256
#: Ends a cut text, so a reader can tell that it was cut (one character).
CUT_MARKER: Final = "…"
#: The string fields of ``DeliveryResult`` that :func:`new_result` cuts.
TEXT_FIELDS: Final = (
    "message_id",
    "bluecore_event",
    "reason",
    "detail",
    "trace_id",
    "datafly_event",
)
#: The receive limit a gRPC client has unless it raises it.
DEFAULT_CLIENT_RECEIVE_LIMIT: Final = 4 * 1024 * 1024

# Worst case of one serialised result: each text field as tag + 2-byte length + 4 bytes per
# character (UTF-8); three varints (status, http_status, attempts) of at most 10 bytes plus
# a tag; two Durations (retry_after, latency) of tag + length + two tagged varints.
_TEXT_FIELD_BYTES = 1 + 2 + 4 * MAX_TEXT_CHARS
_DURATION_BYTES = 1 + 1 + (1 + 10) + (1 + 5)
#: Most bytes one bounded ``DeliveryResult`` can take on the wire.
MAX_RESULT_BYTES: Final = len(TEXT_FIELDS) * _TEXT_FIELD_BYTES + 3 * (1 + 10) + 2 * _DURATION_BYTES
#: Largest batch whose reply (each result framed by a tag and a 2-byte length) still fits
#: :data:`DEFAULT_CLIENT_RECEIVE_LIMIT`; ``SIDECAR_BATCH_LIMIT`` cannot be set above it.
MAX_BATCH_EVENTS: Final = 500

#: How far an email address can reach either side of a cut (RFC 5321: 64 + 1 + 255).
_ADDRESS_REACH = 320
#: Longest local part, quotes included (RFC 5321: 64 octets).
_LOCAL_REACH = 66
#: Characters that end a run which could be part of an email address.
_BREAKS = frozenset(" \t\r\n\f\v<>,;()[]")


def clip(text: str) -> str:
    """``text``, or its first characters and :data:`CUT_MARKER` when it is too long.

    The cut never runs through something that may be an email address: the whole run of
    characters around the cut goes when it holds an ``@``. Half an address (a local part
    without its domain) is not recognisable as one downstream, so log scrubbing would keep it.
    """
    if len(text) <= MAX_TEXT_CHARS:
        return text
    return text[: _safe_cut(text, MAX_TEXT_CHARS - len(CUT_MARKER))] + CUT_MARKER


def _safe_cut(text: str, cut: int) -> int:
    low = max(0, cut - _ADDRESS_REACH)
    window = text[low : cut + _ADDRESS_REACH]
    start = end = cut - low
    while start > 0 and window[start - 1] not in _BREAKS:
        start -= 1
    while end < len(window) and window[end] not in _BREAKS:
        end += 1
    at = cut - low
    # A quoted local part ("john doe"@...) may hold spaces: the cut can fall inside it.
    opening = window.rfind('"', max(0, at - _LOCAL_REACH), at)
    if opening != -1:
        closing = window.find('"', at, opening + _LOCAL_REACH)
        if closing != -1 and window.startswith("@", closing + 1):
            return low + min(start, opening)
    run = window[start:end]
    if "@" not in run:
        return cut
    local = run.partition("@")[0]
    if '"' in local and not local.startswith('"'):
        # A quoted local part may hold spaces: its opening quote is further back.
        opening = window.rfind('"', 0, start)
        if opening != -1:
            start = opening
    return low + start


def new_result(
    *,
    message_id: str,
    status: int,
    datafly_event: str = "",
    bluecore_event: str = "",
    reason: str = "",
    detail: str = "",
    http_status: int = 0,
    attempts: int = 0,
    trace_id: str = "",
) -> delivery_pb2.DeliveryResult:
    """A ``DeliveryResult`` whose text fields are cut to :data:`MAX_TEXT_CHARS`.

    The text is cut before it enters the message: a protobuf message keeps its strings in an
    arena that frees nothing until the message goes, so a long string set and then replaced
    would stay (60 kB per result kept by the watch ring, say).
    """
    limit = MAX_TEXT_CHARS  # most texts are short: `clip` is called only for long ones
    # Set field by field, and only the fields that are not empty or zero: the keyword
    # constructor costs about twice as much, most of it for the defaults.
    result = delivery_pb2.DeliveryResult()
    result.status = status  # type: ignore[assignment]
    if message_id:
        result.message_id = message_id if len(message_id) <= limit else clip(message_id)
    if datafly_event:
        result.datafly_event = datafly_event if len(datafly_event) <= limit else clip(datafly_event)
    if bluecore_event:
        result.bluecore_event = (
            bluecore_event if len(bluecore_event) <= limit else clip(bluecore_event)
        )
    if reason:
        result.reason = reason if len(reason) <= limit else clip(reason)
    if detail:
        result.detail = detail if len(detail) <= limit else clip(detail)
    if http_status:
        result.http_status = http_status
    if attempts:
        result.attempts = attempts
    if trace_id:
        result.trace_id = trace_id if len(trace_id) <= limit else clip(trace_id)
    return result


#: Each status's short name ("DELIVERED"), built once: ``DeliveryStatus.Name`` is Python code
#: of the enum wrapper, a microsecond or two per call.
_STATUS_NAMES = {
    value.number: value.name.removeprefix("DELIVERY_STATUS_")
    for value in delivery_pb2.DeliveryStatus.DESCRIPTOR.values
}


def status_name(number: int) -> str:
    """A status's short name, as in log lines, metrics and spans: ``DELIVERED``.

    A number the table lacks (a newer proto's) is named by the enum wrapper, which raises
    ``ValueError`` for a number no proto defines.
    """
    return _STATUS_NAMES.get(number) or delivery_pb2.DeliveryStatus.Name(number).removeprefix(
        "DELIVERY_STATUS_"
    )


def span_attributes(
    result: delivery_pb2.DeliveryResult, scrub: Callable[[str], str]
) -> dict[str, str | int | bool]:
    """The outcome attributes every delivery span carries; free text goes through ``scrub``."""
    attributes: dict[str, str | int | bool] = {
        "datafly.message_id": scrub(result.message_id),
        "bluecore.event": result.bluecore_event,
        "delivery.status": status_name(result.status),
        "delivery.attempts": result.attempts,
    }
    if result.reason:
        attributes["delivery.reason"] = result.reason
    if result.http_status:
        attributes["http.response.status_code"] = result.http_status
    return attributes
