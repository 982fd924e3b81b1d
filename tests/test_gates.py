"""Tests of the pure gates: marketing consent and event age."""

from __future__ import annotations

import datetime

import pytest
from bluecore_sidecar.gates import GatePolicy, check_consent, check_staleness
from bluecore_sidecar.skip import Skip
from datafly.bluecore.v1 import delivery_pb2

from .conftest import make_event

NO_CONSENT = delivery_pb2.DELIVERY_STATUS_SKIPPED_NO_CONSENT
STALE = delivery_pb2.DELIVERY_STATUS_SKIPPED_STALE
NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
DENY = GatePolicy()
GRANT = GatePolicy(consent_default=True)


# The gates read only consent and the timestamp: the event carries nothing else.
GATED = {"type": "track", "event": "Product Viewed"}


def with_consent(consent: dict[str, bool] | None) -> delivery_pb2.DataflyEvent:
    """The gated event with ``consent`` (``None``: no context at all)."""
    return make_event(base=GATED, context=None if consent is None else {"consent": consent})


@pytest.mark.parametrize(
    ("consent", "bluecore_event", "policy", "reason"),
    [
        ({"marketing": True}, "viewed_product", DENY, None),
        ({"marketing": False}, "viewed_product", DENY, "NO_MARKETING_CONSENT"),
        ({"marketing": False}, "viewed_product", GRANT, "NO_MARKETING_CONSENT"),
        (None, "viewed_product", DENY, "CONSENT_UNKNOWN"),
        ({"analytics": True}, "purchase", DENY, "CONSENT_UNKNOWN"),
        (None, "viewed_product", GRANT, None),
        ({"analytics": False}, "viewed_product", GRANT, None),
        ({"Marketing": True}, "viewed_product", DENY, None),
        ({"Marketing": True, "MARKETING": False}, "viewed_product", DENY, "NO_MARKETING_CONSENT"),
        ({"marketing": True, "Marketing": False}, "viewed_product", DENY, None),
        ({"marketing": False}, "unsubscribe", DENY, None),
        (None, "unsubscribe", DENY, None),
        ({"marketing": False}, "optin", DENY, "NO_MARKETING_CONSENT"),
        ({"ads": True, "marketing": False}, "viewed_product", GatePolicy("ads"), None),
        (
            {"ads": False, "marketing": True},
            "viewed_product",
            GatePolicy("ads"),
            "NO_MARKETING_CONSENT",
        ),
    ],
    ids=[
        "granted",
        "denied",
        "denied-beats-default-grant",
        "missing-default-deny",
        "other-category-only",
        "missing-default-grant",
        "other-category-default-grant",
        "case-insensitive",
        "case-variants-all-must-agree",
        "exact-key-wins",
        "unsubscribe-never-blocked",
        "unsubscribe-without-consent",
        "optin-is-gated",
        "configured-category-granted",
        "configured-category-denied",
    ],
)
def test_consent_gate(
    consent: dict[str, bool] | None, bluecore_event: str, policy: GatePolicy, reason: str | None
) -> None:
    """Marketing consent decides (case-insensitively, every variant must agree), a missing
    answer follows the policy's default, and unsubscribe is never blocked."""
    result = check_consent(with_consent(consent), bluecore_event, policy)
    if reason is None:
        assert result is None
    else:
        assert isinstance(result, Skip)
        assert (result.status, result.reason) == (NO_CONSENT, reason)
        assert policy.consent_category in result.detail


def test_consent_gate_does_not_touch_the_event() -> None:
    event = with_consent(None)
    check_consent(event, "viewed_product", DENY)
    assert not event.HasField("context")
    assert dict(event.context.consent) == {}


def test_gate_policy_refuses_a_blank_category() -> None:
    with pytest.raises(ValueError, match="consent_category"):
        GatePolicy(consent_category=" ")


def at(seconds: int, nanos: int = 0) -> delivery_pb2.DataflyEvent:
    """The gated event stamped ``seconds`` after the epoch (set directly: JSON's RFC 3339
    cannot hold the far past and future cases)."""
    event = make_event(base=GATED)
    event.timestamp.seconds = seconds
    event.timestamp.nanos = nanos
    return event


NOW_S = int(NOW.timestamp())
HOUR = 3600


@pytest.mark.parametrize(
    ("event", "policy", "stale"),
    [
        (make_event(base={"type": "track"}), DENY, False),
        (at(NOW_S - HOUR), DENY, False),
        (at(NOW_S - 24 * HOUR), DENY, False),
        (at(NOW_S - 24 * HOUR - 1), DENY, True),
        (at(NOW_S - 25 * HOUR), DENY, True),
        (at(NOW_S + 3 * HOUR), DENY, False),
        (at(0), DENY, True),
        (at(NOW_S - 11 * 60), GatePolicy(max_event_age=datetime.timedelta(minutes=10)), True),
        (at(NOW_S - 9 * 60), GatePolicy(max_event_age=datetime.timedelta(minutes=10)), False),
        (at(0), GatePolicy(max_event_age=datetime.timedelta(0)), False),
        (at(-(2**62)), DENY, True),
        (at(2**62), DENY, False),
    ],
    ids=[
        "unset-is-fresh",
        "one-hour",
        "exactly-the-limit",
        "one-second-over",
        "25-hours",
        "future-clock-skew",
        "epoch",
        "custom-limit-over",
        "custom-limit-under",
        "zero-disables",
        "far-past-out-of-datetime-range",
        "far-future-out-of-datetime-range",
    ],
)
def test_staleness_gate(event: delivery_pb2.DataflyEvent, policy: GatePolicy, stale: bool) -> None:
    """An event older than max_event_age is SKIPPED_STALE; unset, future or exactly-at-limit
    timestamps pass, and a zero limit turns the gate off."""
    result = check_staleness(event, policy, NOW)
    if stale:
        assert isinstance(result, Skip)
        assert (result.status, result.reason) == (STALE, "STALE_EVENT")
    else:
        assert result is None


def test_stale_detail_says_how_old_and_the_limit() -> None:
    result = check_staleness(at(NOW_S - 26 * HOUR - 90), DENY, NOW)
    assert isinstance(result, Skip)
    assert result.detail == "the event is 1d2h1m30s old; the maximum age is 1d"


def test_sub_second_limits_are_reported_in_milliseconds() -> None:
    policy = GatePolicy(max_event_age=datetime.timedelta(milliseconds=500))
    result = check_staleness(at(NOW_S - 1, 300_000_000), policy, NOW)
    assert isinstance(result, Skip)
    assert result.detail == "the event is 0.700s old; the maximum age is 0.500s"


def test_naive_now_is_taken_as_utc() -> None:
    naive = NOW.replace(tzinfo=None)
    assert check_staleness(at(NOW_S - 23 * HOUR), DENY, naive) is None
    assert check_staleness(at(NOW_S - 25 * HOUR), DENY, naive) is not None
