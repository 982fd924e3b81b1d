"""Tests of `decide`: the order of the checks, the Send/Skip shapes and the example events."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from bluecore_sidecar import wire
from bluecore_sidecar.decision import Earlier, Send, Skip, decide, preview
from bluecore_sidecar.gates import GatePolicy
from bluecore_sidecar.mapping import MappingRules
from datafly.bluecore.v1 import delivery_pb2

from .conftest import (
    EMAIL,
    EXAMPLE_EVENTS,
    event_json,
    example_event,
    make_event,
    parse_event,
    seed_purchase_body,
)

S = delivery_pb2
RULES = MappingRules()
POLICY = GatePolicy()
NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)


# The decision tests' event: deliverable, but with no email, so identity rests on the
# anonymous id (the check order below depends on it).
SIGNAL = {
    "type": "track",
    "event": "Product Viewed",
    "messageId": "m-1",
    "anonymousId": "anon-1",
    "properties": {"product_id": "SKU1"},
    "context": {"consent": {"marketing": True}},
}


def decided(event: dict[str, Any], **kwargs: Any) -> Send | Skip:
    return decide(parse_event(event), RULES, POLICY, NOW, **kwargs)


STALE_TS = "2026-11-24T12:00:00Z"
NO_CONSENT = {"consent": {"marketing": False}}

ORDER: list[tuple[str, dict[str, Any], int, str]] = [
    (
        "size-before-everything",
        event_json(
            base=SIGNAL, type="screen", properties={"blob": "x" * 70_000}, context=NO_CONSENT
        ),
        S.DELIVERY_STATUS_REJECTED_INVALID,
        "EVENT_TOO_LARGE",
    ),
    (
        "type-before-consent",
        event_json(base=SIGNAL, type="screen", context=NO_CONSENT),
        S.DELIVERY_STATUS_SKIPPED_UNMAPPED,
        "UNSUPPORTED_TYPE",
    ),
    (
        "name-before-consent",
        event_json(base=SIGNAL, event="", context=NO_CONSENT),
        S.DELIVERY_STATUS_SKIPPED_UNMAPPED,
        "MISSING_EVENT_NAME",
    ),
    (
        "unmapped-before-consent",
        event_json(base=SIGNAL, event="Cart Viewed", context=NO_CONSENT, timestamp=STALE_TS),
        S.DELIVERY_STATUS_SKIPPED_UNMAPPED,
        "UNMAPPED_EVENT",
    ),
    (
        "consent-before-staleness",
        event_json(base=SIGNAL, context=NO_CONSENT, timestamp=STALE_TS, anonymousId=""),
        S.DELIVERY_STATUS_SKIPPED_NO_CONSENT,
        "NO_MARKETING_CONSENT",
    ),
    (
        "missing-consent-default-deny",
        event_json(base=SIGNAL, context={}),
        S.DELIVERY_STATUS_SKIPPED_NO_CONSENT,
        "CONSENT_UNKNOWN",
    ),
    (
        "staleness-before-validity",
        event_json(base=SIGNAL, timestamp=STALE_TS, anonymousId="", properties={}),
        S.DELIVERY_STATUS_SKIPPED_STALE,
        "STALE_EVENT",
    ),
    (
        "identity-before-products",
        event_json(base=SIGNAL, anonymousId="", properties={}),
        S.DELIVERY_STATUS_REJECTED_INVALID,
        "MISSING_IDENTITY",
    ),
    (
        "products-last",
        event_json(base=SIGNAL, properties={"name": "no id"}),
        S.DELIVERY_STATUS_REJECTED_INVALID,
        "NO_VALID_PRODUCTS",
    ),
    (
        "unsubscribe-without-consent-still-validated",
        event_json(base=SIGNAL, event="Unsubscribed", context=NO_CONSENT),
        S.DELIVERY_STATUS_REJECTED_INVALID,
        "MISSING_EMAIL",
    ),
]


@pytest.mark.parametrize(
    ("event", "status", "reason"),
    [case[1:] for case in ORDER],
    ids=[case[0] for case in ORDER],
)
def test_decide_applies_the_checks_in_the_documented_order(
    event: dict[str, Any], status: int, reason: str
) -> None:
    result = decided(event)
    assert isinstance(result, Skip), result
    assert (result.status, result.reason) == (status, reason)


def test_skips_carry_both_event_names_once_resolved() -> None:
    result = decided(event_json(base=SIGNAL, context=NO_CONSENT))
    assert isinstance(result, Skip)
    assert (result.datafly_event, result.bluecore_event) == ("Product Viewed", "viewed_product")
    invalid = decided(event_json(base=SIGNAL, type="page", properties={}))
    assert isinstance(invalid, Skip)
    assert (invalid.reason, invalid.datafly_event, invalid.bluecore_event) == (
        "MISSING_PAGE_URL",
        "page",
        "viewed_page",
    )
    unmapped = decided(event_json(base=SIGNAL, event="Cart Viewed"))
    assert isinstance(unmapped, Skip)
    assert (unmapped.datafly_event, unmapped.bluecore_event) == ("Cart Viewed", "")


def test_a_10_mb_event_is_rejected_as_too_large() -> None:
    event = parse_event(event_json(base=SIGNAL))
    event.properties.update({"payload": "x" * (10 * 1024 * 1024)})
    result = decide(event, RULES, POLICY, NOW)
    assert isinstance(result, Skip)
    assert (result.status, result.reason) == (S.DELIVERY_STATUS_REJECTED_INVALID, "EVENT_TOO_LARGE")
    assert "65536" in result.detail


def test_size_limit_is_a_parameter() -> None:
    assert isinstance(decided(event_json(base=SIGNAL), max_event_bytes=10_000), Send)
    small = decided(event_json(base=SIGNAL), max_event_bytes=10)
    assert isinstance(small, Skip)
    assert small.reason == "EVENT_TOO_LARGE"


def test_send_holds_labels_and_requests() -> None:
    result = decided(
        event_json(
            base=SIGNAL,
            event="add_to_cart",
            properties={"items": [{"item_id": "A"}, {"item_id": "B"}]},
            traits={"email": EMAIL},
        )
    )
    assert isinstance(result, Send)
    assert (result.datafly_event, result.bluecore_event) == ("add_to_cart", "add_to_cart")
    assert [r.body["properties"]["products"][0]["id"] for r in result.requests] == ["A", "B"]


def test_fresh_and_future_timestamps_are_sent() -> None:
    assert isinstance(decided(event_json(base=SIGNAL, timestamp="2026-11-26T11:00:00Z")), Send)
    assert isinstance(decided(event_json(base=SIGNAL, timestamp="2026-11-26T13:00:00Z")), Send)


def test_unsubscribe_goes_even_without_consent() -> None:
    result = decided(
        event_json(base=SIGNAL, event="Unsubscribed", context=NO_CONSENT, traits={"email": EMAIL})
    )
    assert isinstance(result, Send)
    assert result.bluecore_event == "unsubscribe"


@pytest.mark.parametrize(
    "event",
    [
        make_event(base={}),
        make_event(base={}, type="track"),
        make_event(base={}, type="page"),
        make_event(base={}, type="identify"),
        make_event(base={}, type="\x00"),
    ],
    ids=["empty", "track-only", "page-only", "identify-only", "nul-type"],
)
def test_decide_answers_for_empty_events(event: delivery_pb2.DataflyEvent) -> None:
    result = decide(event, RULES, GatePolicy(consent_default=True), NOW)
    assert isinstance(result, Skip)
    assert result.reason != "MAPPING_ERROR"


# --- the example events shipped in examples/events ------------------------------------------

EXPECTED_EXAMPLES: dict[str, tuple[int, str, int]] = {
    "page.json": (S.DELIVERY_STATUS_DELIVERED, "viewed_page", 1),
    "product_viewed.json": (S.DELIVERY_STATUS_DELIVERED, "viewed_product", 1),
    "products_searched.json": (S.DELIVERY_STATUS_DELIVERED, "search", 1),
    "product_added.json": (S.DELIVERY_STATUS_DELIVERED, "add_to_cart", 1),
    "add_to_cart_ga4_two_items.json": (S.DELIVERY_STATUS_DELIVERED, "add_to_cart", 2),
    "product_removed.json": (S.DELIVERY_STATUS_DELIVERED, "remove_from_cart", 1),
    "product_added_to_wishlist.json": (S.DELIVERY_STATUS_DELIVERED, "wishlist", 1),
    "order_completed.json": (S.DELIVERY_STATUS_DELIVERED, "purchase", 1),
    "signed_up.json": (S.DELIVERY_STATUS_DELIVERED, "optin", 1),
    "unsubscribed.json": (S.DELIVERY_STATUS_DELIVERED, "unsubscribe", 1),
    "identify.json": (S.DELIVERY_STATUS_DELIVERED, "identify", 1),
    "skip_no_consent.json": (S.DELIVERY_STATUS_SKIPPED_NO_CONSENT, "viewed_product", 0),
    "skip_unmapped_event.json": (S.DELIVERY_STATUS_SKIPPED_UNMAPPED, "", 0),
    "reject_missing_order_id.json": (S.DELIVERY_STATUS_REJECTED_INVALID, "purchase", 0),
}


def test_every_example_file_has_an_expected_outcome() -> None:
    assert sorted(p.name for p in EXAMPLE_EVENTS.glob("*.json")) == sorted(EXPECTED_EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXPECTED_EXAMPLES))
def test_example_events_decide_as_their_names_say(name: str) -> None:
    raw = json.loads((EXAMPLE_EVENTS / name).read_text())
    assert "timestamp" not in raw, "examples must not go stale"
    assert raw["messageId"]
    status, bluecore_event, requests = EXPECTED_EXAMPLES[name]
    # Far in the future: examples carry no timestamp, so they never go stale.
    result = decide(example_event(name), RULES, POLICY, NOW + datetime.timedelta(days=3650))
    if status == S.DELIVERY_STATUS_DELIVERED:
        assert isinstance(result, Send), result
        assert len(result.requests) == requests
    else:
        assert isinstance(result, Skip)
        assert result.status == status
    assert result.bluecore_event == bluecore_event


def test_order_completed_example_is_the_seed_example() -> None:
    result = decide(example_event("order_completed.json"), RULES, POLICY, NOW)
    assert isinstance(result, Send)
    assert json.loads(wire.redacted(result.requests[0].body)) == seed_purchase_body("***")


def test_identify_example_links_the_anonymous_id_and_keeps_only_allow_listed_traits() -> None:
    raw = json.loads((EXAMPLE_EVENTS / "identify.json").read_text())
    result = decide(example_event("identify.json"), RULES, POLICY, NOW)
    assert isinstance(result, Send)
    props = result.requests[0].body["properties"]
    assert props["distinct_id"] == raw["anonymousId"]
    assert props["customer"] == {"email": EMAIL, "first_name": "Jane", "last_name": "Doe"}


@pytest.mark.parametrize(
    ("message_id", "reason"),
    [("", "MISSING_MESSAGE_ID"), ("  ", "MISSING_MESSAGE_ID"), ("m" * 257, "MESSAGE_ID_TOO_LONG")],
)
def test_the_message_id_rule_is_step_0(message_id: str, reason: str) -> None:
    """An unusable id is reported before everything else, even an oversized, unmapped event."""
    event = parse_event(
        event_json(
            base=SIGNAL,
            messageId=message_id,
            event="Checkout Started",
            properties={"x": "y" * 70000},
        )
    )
    result = decide(event, RULES, POLICY, NOW)
    assert isinstance(result, Skip)
    assert (result.status, result.reason) == (S.DELIVERY_STATUS_REJECTED_INVALID, reason)


def test_a_message_id_of_256_characters_is_fine() -> None:
    assert isinstance(
        decide(parse_event(event_json(base=SIGNAL, messageId="m" * 256)), RULES, POLICY, NOW), Send
    )


def test_preview_of_a_sendable_event_shows_the_redacted_wire_bodies() -> None:
    event = parse_event(event_json(base=SIGNAL))
    answer = preview(event, RULES, POLICY, NOW)
    decision = decide(event, RULES, POLICY, NOW)
    assert answer.decision == decision
    assert isinstance(decision, Send)
    assert answer.bodies == tuple(wire.redacted(r.body) for r in decision.requests)
    assert json.loads(answer.bodies[0])["properties"]["token"] == "***"


def test_preview_of_an_id_already_delivered_is_a_duplicate_with_its_history() -> None:
    answer = preview(
        parse_event(event_json(base=SIGNAL)), RULES, POLICY, NOW, earlier=Earlier(False, 2, 202)
    )
    assert isinstance(answer.decision, Skip)
    assert (answer.decision.status, answer.decision.reason) == (
        S.DELIVERY_STATUS_SKIPPED_DUPLICATE,
        "DUPLICATE_MESSAGE_ID",
    )
    assert "attempts 2, HTTP 202" in answer.decision.detail
    assert answer.bodies == ()


def test_preview_checks_the_message_id_before_the_duplicate() -> None:
    answer = preview(
        parse_event(event_json(base=SIGNAL, messageId="")),
        RULES,
        POLICY,
        NOW,
        earlier=Earlier(True),
    )
    assert isinstance(answer.decision, Skip)
    assert answer.decision.reason == "MISSING_MESSAGE_ID"


def test_a_60k_character_event_name_ending_in_at_is_unmapped() -> None:
    """The name of `make faults` case 1a: one linear pass, answered as unmapped."""
    result = decided(event_json(base=SIGNAL, event="a" * 60_000 + "@"))
    assert isinstance(result, Skip)
    assert (result.status, result.reason) == (S.DELIVERY_STATUS_SKIPPED_UNMAPPED, "UNMAPPED_EVENT")
