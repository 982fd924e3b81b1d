"""Pure gates that stop a mapped event from reaching Bluecore: marketing consent and age.

Each gate returns a `Skip` when the event must not be sent and None when it may go. The clock
is a parameter (`now`), so the gates are plain functions, tested without sleeping.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from datafly.bluecore.v1 import delivery_pb2

from bluecore_sidecar import skip as sk
from bluecore_sidecar.skip import Skip

# Opt-outs must always reach Bluecore, whatever the consent state says.
_NEVER_CONSENT_GATED = frozenset({"unsubscribe"})


@dataclass(frozen=True, slots=True)
class GatePolicy:
    """Operator-configurable gate settings."""

    consent_category: str = "marketing"
    """Key of `context.consent` that must be true for an event to be sent."""
    consent_default: bool = False
    """Decision when the category is absent from `context.consent` (False = deny)."""
    max_event_age: datetime.timedelta = datetime.timedelta(hours=24)
    """Events whose `timestamp` is older than this are stale. Zero or less disables the gate."""

    def __post_init__(self) -> None:
        category = self.consent_category.strip()
        if not category:
            raise ValueError("consent_category must not be empty")
        object.__setattr__(self, "consent_category", category)


def check_consent(
    event: delivery_pb2.DataflyEvent, bluecore_event: str, policy: GatePolicy
) -> Skip | None:
    """SKIPPED_NO_CONSENT unless the consent category is granted; `unsubscribe` always passes.

    The category is looked up exactly, then case-insensitively (if several keys differ only
    in case, all of them must be true). An absent category follows `policy.consent_default`.
    """
    if bluecore_event in _NEVER_CONSENT_GATED:
        return None
    category = policy.consent_category
    consent = event.context.consent
    # `.get`, never `[]`: indexing a protobuf map inserts the missing key.
    granted = consent.get(category)
    if granted is None:
        folded = category.casefold()
        matches = [value for key, value in consent.items() if key.strip().casefold() == folded]
        granted = all(matches) if matches else None
    if granted is None:
        if policy.consent_default:
            return None
        return sk.skip(
            sk.CONSENT_UNKNOWN,
            f"context.consent.{category} is not set and the configured default is deny",
        )
    if granted:
        return None
    return sk.skip(sk.NO_MARKETING_CONSENT, f"context.consent.{category} is false")


def check_staleness(
    event: delivery_pb2.DataflyEvent, policy: GatePolicy, now: datetime.datetime
) -> Skip | None:
    """SKIPPED_STALE when `timestamp` is older than `policy.max_event_age` at `now`.

    An unset timestamp counts as fresh, and timestamps in the future are accepted (client
    clocks drift). A naive `now` is taken as UTC. Plain arithmetic on the seconds keeps
    out-of-range timestamps from raising.
    """
    if not event.HasField("timestamp"):
        return None
    limit = policy.max_event_age.total_seconds()
    if limit <= 0:
        return None
    if now.tzinfo is None:
        now = now.replace(tzinfo=datetime.UTC)
    happened = event.timestamp.seconds + event.timestamp.nanos / 1e9
    age = now.timestamp() - happened
    if age <= limit:
        return None
    return sk.skip(
        sk.STALE_EVENT,
        f"the event is {_duration(age)} old; the maximum age is {_duration(limit)}",
    )


def _duration(seconds: float) -> str:
    """A short human duration: 90 -> '1m30s', 93784 -> '1d2h3m4s'."""
    whole = int(seconds)
    if whole < 1:
        return f"{seconds:.3f}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
