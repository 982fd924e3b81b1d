"""The one pure decision per event: send these Bluecore requests (`Send`) or not (`Skip`).

`decide` chains the size limit, name resolution, the gates and the mapper. The delivery
pipeline calls it after the duplicate check and before any I/O; Preview shows its result.
"""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass
from typing import TypeAlias

from datafly.bluecore.v1 import delivery_pb2

from bluecore_sidecar import skip as sk
from bluecore_sidecar.gates import GatePolicy, check_consent, check_staleness
from bluecore_sidecar.mapping import BluecoreRequest, MappingRules, build_requests, resolve_event
from bluecore_sidecar.skip import Skip

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "Decision", "Send", "Skip", "decide"]

DEFAULT_MAX_EVENT_BYTES = 65536


@dataclass(frozen=True, slots=True)
class Send:
    """An event to deliver: one request normally, one per product when an event fans out."""

    datafly_event: str
    """The Datafly label: the track event name, or `page` / `identify`."""
    bluecore_event: str
    """The Bluecore event name, e.g. `purchase`."""
    requests: tuple[BluecoreRequest, ...]
    """At least one request; all of them must be accepted for the event to be delivered."""


Decision: TypeAlias = Send | Skip


def decide(
    event: delivery_pb2.DataflyEvent,
    rules: MappingRules,
    policy: GatePolicy,
    now: datetime.datetime,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> Decision:
    """Decide what to do with `event`. Never raises.

    The checks run in this order, and the first one that fails decides:

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
    return Send(datafly_event=label, bluecore_event=bluecore_event, requests=built)
