"""The one pure decision per event: send these Bluecore requests (`Send`) or not (`Skip`).

`decide` chains the message-id rule, the size limit, name resolution, the gates and the
mapper. `preview` is the same decision plus what the dedup table knows, with the bodies as
they would go out (token redacted): exactly what `Deliver` would answer, nothing sent.
"""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass
from typing import NamedTuple, TypeAlias

from datafly.bluecore.v1 import delivery_pb2

from bluecore_sidecar import skip as sk
from bluecore_sidecar import wire
from bluecore_sidecar.gates import GatePolicy, check_consent, check_staleness
from bluecore_sidecar.mapping import BluecoreRequest, MappingRules, build_requests, resolve_event
from bluecore_sidecar.skip import Skip

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "MAX_MESSAGE_ID_LENGTH",
    "Decision",
    "Earlier",
    "Preview",
    "Send",
    "Skip",
    "check_message_id",
    "decide",
    "duplicate_skip",
    "preview",
]

DEFAULT_MAX_EVENT_BYTES = 65536
MAX_MESSAGE_ID_LENGTH = 256


class Send(NamedTuple):
    """An event to deliver: one request normally, one per product when an event fans out.

    A named tuple, made once per event (see ``dedup.Record``).
    """

    datafly_event: str
    """The Datafly label: the track event name, or `page` / `identify`."""
    bluecore_event: str
    """The Bluecore event name, e.g. `purchase`."""
    requests: tuple[BluecoreRequest, ...]
    """At least one request; all of them must be accepted for the event to be delivered."""


Decision: TypeAlias = Send | Skip


@dataclass(frozen=True, slots=True)
class Earlier:
    """What the dedup table knows of an earlier delivery of the same message id."""

    in_flight: bool
    """True while the earlier delivery is still being sent."""
    attempts: int = 0
    """HTTP tries the earlier delivery took (when it is finished)."""
    http_status: int = 0
    """Bluecore's answer to it (when it is finished)."""
    datafly_event: str = ""
    """Its Datafly label (when it is finished)."""
    bluecore_event: str = ""
    """The Bluecore event it was sent as (when it is finished)."""


@dataclass(frozen=True, slots=True)
class Preview:
    """What `Deliver` would do with an event, and the bodies it would send (token `***`)."""

    decision: Decision
    bodies: tuple[str, ...] = ()


def check_message_id(event: delivery_pb2.DataflyEvent) -> Skip | None:
    """REJECTED_INVALID unless `message_id` is a usable idempotency key; None when it is."""
    message_id = event.message_id
    if not message_id.strip():
        return sk.skip(sk.MISSING_MESSAGE_ID, "message_id is required: it is the idempotency key")
    if len(message_id) > MAX_MESSAGE_ID_LENGTH:
        return sk.skip(
            sk.MESSAGE_ID_TOO_LONG,
            f"message_id is longer than {MAX_MESSAGE_ID_LENGTH} characters",
        )
    return None


def duplicate_skip(earlier: Earlier) -> Skip:
    """SKIPPED_DUPLICATE for a message id the dedup table already knows."""
    if earlier.in_flight:
        detail = (
            "the same message_id is being delivered now; Deliver waits for that delivery "
            "and sends nothing again"
        )
    else:
        detail = (
            f"already delivered (attempts {earlier.attempts}, HTTP {earlier.http_status}); "
            "nothing was sent again"
        )
    return dataclasses.replace(
        sk.skip(sk.DUPLICATE_MESSAGE_ID, detail),
        datafly_event=earlier.datafly_event,
        bluecore_event=earlier.bluecore_event,
    )


def preview(
    event: delivery_pb2.DataflyEvent,
    rules: MappingRules,
    policy: GatePolicy,
    now: datetime.datetime,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    *,
    earlier: Earlier | None = None,
) -> Preview:
    """The answer `Deliver` would give for `event` now, and the redacted bodies. Never raises.

    The order is `Deliver`'s: the message-id rule, then the duplicate check (`earlier`, from
    the dedup table), then the rest of `decide`.
    """
    invalid = check_message_id(event)
    if invalid is not None:
        return Preview(invalid)
    if earlier is not None:
        return Preview(duplicate_skip(earlier))
    decision = decide(event, rules, policy, now, max_event_bytes)
    if isinstance(decision, Skip):
        return Preview(decision)
    return Preview(decision, tuple(wire.redacted(request.body) for request in decision.requests))


def decide(
    event: delivery_pb2.DataflyEvent,
    rules: MappingRules,
    policy: GatePolicy,
    now: datetime.datetime,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> Decision:
    """Decide what to do with `event`. Never raises.

    The checks run in this order, and the first one that fails decides:

    0. message id: empty or longer than 256 characters -> REJECTED_INVALID
       (MISSING_MESSAGE_ID, MESSAGE_ID_TOO_LONG);
    1. size: `event.ByteSize()` above `max_event_bytes` -> REJECTED_INVALID EVENT_TOO_LARGE;
    2. resolution: type and name -> Bluecore event, else SKIPPED_UNMAPPED (UNSUPPORTED_TYPE,
       MISSING_EVENT_NAME, UNMAPPED_EVENT, EVENT_DISABLED);
    3. consent -> SKIPPED_NO_CONSENT (NO_MARKETING_CONSENT, CONSENT_UNKNOWN), never for
       `unsubscribe`;
    4. staleness -> SKIPPED_STALE (STALE_EVENT);
    5. building the bodies -> REJECTED_INVALID with a specific reason (MISSING_IDENTITY, ...).

    Consent comes before validity so that an event without consent is reported as such even
    when it is also malformed: the cheaper, more common answer first.
    """
    try:
        return _decide(event, rules, policy, now, max_event_bytes)
    except Exception:  # noqa: BLE001 -- the contract is "never raises"; a bug becomes data
        return Skip(
            status=sk.INVALID,
            reason=sk.MAPPING_ERROR,
            detail="unexpected error while mapping the event",
        )


def _decide(
    event: delivery_pb2.DataflyEvent,
    rules: MappingRules,
    policy: GatePolicy,
    now: datetime.datetime,
    max_event_bytes: int,
) -> Decision:
    invalid = check_message_id(event)
    if invalid is not None:
        return invalid
    size = event.ByteSize()
    if size > max_event_bytes:
        return sk.skip(
            sk.EVENT_TOO_LARGE, f"the event is {size} bytes; the limit is {max_event_bytes}"
        )
    resolved = resolve_event(event, rules)
    if isinstance(resolved, Skip):
        return resolved
    label, bluecore_event = resolved
    gated = check_consent(event, bluecore_event, policy) or check_staleness(event, policy, now)
    if gated is not None:
        return dataclasses.replace(gated, datafly_event=label, bluecore_event=bluecore_event)
    built = build_requests(event, bluecore_event, rules)
    if isinstance(built, Skip):
        return dataclasses.replace(built, datafly_event=label, bluecore_event=bluecore_event)
    # Positional: a named tuple called with keywords costs about two and a half times as much.
    return Send(label, bluecore_event, built)
