"""Table-driven tests of the pure mapper: every row of the mapping table and every rule."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from bluecore_sidecar import wire
from bluecore_sidecar.mapping import (
    KNOWN_BLUECORE_EVENTS,
    MAX_ATTRIBUTE_KEY,
    BluecoreRequest,
    MappingRules,
    build_requests,
    extract_email,
    normalise_event_name,
    resolve_bluecore_event,
    resolve_event,
    snake_case,
)
from bluecore_sidecar.skip import REASONS, Skip
from datafly.bluecore.v1 import delivery_pb2
from hypothesis import given
from hypothesis import strategies as st

from .conftest import EMAIL, make_event, seed_purchase_body

TOKEN = "bluestore"
RULES = MappingRules()
INVALID = delivery_pb2.DELIVERY_STATUS_REJECTED_INVALID
UNMAPPED = delivery_pb2.DELIVERY_STATUS_SKIPPED_UNMAPPED
NAN = math.nan
INF = math.inf


def context(**parts: Any) -> dict[str, Any]:
    """An event's ``context`` with marketing consent and ``parts`` (``traits``, ``page``)."""
    return {"consent": {"marketing": True}, **parts}


# The mapper's tests name every field they are about: no email, properties or event name by
# default, only the message id, the anonymous id and marketing consent.
BARE = {"message_id": "m-1", "type": "track", "anonymous_id": "anon-1", "context": context()}


def build(
    message: delivery_pb2.DataflyEvent, rules: MappingRules = RULES
) -> tuple[BluecoreRequest, ...] | Skip:
    resolved = resolve_event(message, rules)
    assert not isinstance(resolved, Skip), resolved
    return build_requests(message, resolved[1], rules)


def sent_properties(result: tuple[BluecoreRequest, ...] | Skip) -> list[dict[str, Any]]:
    """The `properties` of every request (the mapper never adds a token)."""
    assert not isinstance(result, Skip), result
    out = []
    for request in result:
        props = dict(request.body["properties"])
        assert "token" not in props
        assert request.body["event"] == request.event
        out.append(props)
    return out


def only_properties(result: tuple[BluecoreRequest, ...] | Skip) -> dict[str, Any]:
    [props] = sent_properties(result)
    return props


def skipped(result: tuple[BluecoreRequest, ...] | Skip) -> Skip:
    assert isinstance(result, Skip), result
    assert result.reason in REASONS
    assert result.status == REASONS[result.reason][0]
    return result


# --- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Order Completed", "ordercompleted"),
        ("order_completed", "ordercompleted"),
        ("ORDER-COMPLETED", "ordercompleted"),
        ("  order \t completed ", "ordercompleted"),
        ("add_to_cart", "addtocart"),
        ("", ""),
    ],
    ids=["title-case", "snake", "upper-kebab", "whitespace", "ga4", "empty"],
)
def test_normalise_event_name_ignores_case_spaces_underscores_hyphens(
    name: str, expected: str
) -> None:
    assert normalise_event_name(name) == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("first_name", "first_name"),
        ("firstName", "first_name"),
        ("First Name", "first_name"),
        ("first-name", "first_name"),
        ("FIRST_NAME", "first_name"),
        ("loyaltyTierID", "loyalty_tier_id"),
        ("HTTPStatus", "http_status"),
        (" zip code ", "zip_code"),
    ],
    ids=[
        "snake",
        "camel",
        "spaced",
        "kebab",
        "upper",
        "trailing-acronym",
        "leading-acronym",
        "pad",
    ],
)
def test_snake_case_gives_bluecore_attribute_names(key: str, expected: str) -> None:
    assert snake_case(key) == expected


def _former_snake_case(key: str) -> str:
    """The conversion as it was before it became linear (quadratic on a run of capitals)."""
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key))
    return re.sub(r"[^0-9A-Za-z]+", "_", spaced).strip("_").lower()


@given(st.text(alphabet="aAbBcCzZ09_- .\u00c9\u00e9", max_size=40))
def test_linear_snake_case_names_attributes_as_before(key: str) -> None:
    assert snake_case(key) == _former_snake_case(key)


def test_snake_case_of_a_64k_run_of_capitals_finishes_and_keeps_the_acronym() -> None:
    """A run of capitals used to be rescanned from every position; now it is one pass."""
    assert snake_case("A" * 65_536 + "Id") == "a" * 65_536 + "_id"


def test_a_60k_character_trait_key_is_ignored_and_the_rest_maps() -> None:
    """Keys longer than MAX_ATTRIBUTE_KEY are never attributes; the event still maps."""
    long_key = "A" * 60_000 + "Name"
    message = make_event(
        base=BARE,
        event="Product Viewed",
        properties={"product_id": "P"},
        traits={long_key: "x", "firstName": "Ann", "email": EMAIL},
        context=context(traits={"B" * 60_000: "y"}),
    )
    customer = only_properties(build(message))["customer"]
    assert customer == {"email": EMAIL, "first_name": "Ann"}


def test_a_trait_key_at_the_length_limit_is_still_an_attribute() -> None:
    name = "k" * MAX_ATTRIBUTE_KEY
    message = make_event(
        base=BARE, event="Product Viewed", properties={"product_id": "P"}, traits={name: "v"}
    )
    customer = only_properties(build(message, MappingRules(customer_attributes=(name,))))
    assert customer["customer"] == {name: "v"}


def test_an_allow_listed_name_over_the_key_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 128"):
        MappingRules(customer_attributes=("k" * (MAX_ATTRIBUTE_KEY + 1),))


# --- resolution: every alias of every row ---------------------------------------------------

ALIASES = [
    ("Product Viewed", "viewed_product"),
    ("product_viewed", "viewed_product"),
    ("view_item", "viewed_product"),
    ("Products Searched", "search"),
    ("products_searched", "search"),
    ("search", "search"),
    ("view_search_results", "search"),
    ("Product Added", "add_to_cart"),
    ("product_added", "add_to_cart"),
    ("add_to_cart", "add_to_cart"),
    ("Product Removed", "remove_from_cart"),
    ("product_removed", "remove_from_cart"),
    ("remove_from_cart", "remove_from_cart"),
    ("Product Added to Wishlist", "wishlist"),
    ("product_added_to_wishlist", "wishlist"),
    ("add_to_wishlist", "wishlist"),
    ("Order Completed", "purchase"),
    ("order_completed", "purchase"),
    ("purchase", "purchase"),
    ("Signed Up", "optin"),
    ("signed_up", "optin"),
    ("sign_up", "optin"),
    ("Unsubscribed", "unsubscribe"),
    ("unsubscribed", "unsubscribe"),
    ("ORDER-COMPLETED", "purchase"),
    ("  Product   Viewed ", "viewed_product"),
]


@pytest.mark.parametrize(("name", "bluecore"), ALIASES, ids=[a for a, _ in ALIASES])
def test_track_aliases_resolve_to_bluecore_events(name: str, bluecore: str) -> None:
    assert resolve_bluecore_event(make_event(base=BARE, event=name), RULES) == (
        name.strip(),
        bluecore,
    )


@pytest.mark.parametrize(
    ("type_", "bluecore"),
    [("page", "viewed_page"), ("identify", "identify"), ("PAGE", "viewed_page")],
    ids=["page", "identify", "type-case-insensitive"],
)
def test_page_and_identify_resolve_by_type(type_: str, bluecore: str) -> None:
    assert resolve_bluecore_event(make_event(base=BARE, type=type_, event="ignored"), RULES) == (
        type_.lower(),
        bluecore,
    )


def test_empty_type_with_an_event_name_is_treated_as_track() -> None:
    assert resolve_bluecore_event(
        make_event(base=BARE, type="", event="Order Completed"), RULES
    ) == (
        "Order Completed",
        "purchase",
    )


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"type": "screen", "event": "Order Completed"}, "UNSUPPORTED_TYPE"),
        ({"type": "group"}, "UNSUPPORTED_TYPE"),
        ({"type": "", "event": ""}, "UNSUPPORTED_TYPE"),
        ({"type": "track", "event": ""}, "MISSING_EVENT_NAME"),
        ({"type": "track", "event": "   "}, "MISSING_EVENT_NAME"),
        ({"type": "track", "event": "Checkout Started"}, "UNMAPPED_EVENT"),
        ({"type": "track", "event": "viewed page"}, "UNMAPPED_EVENT"),
    ],
    ids=["screen", "group", "no-type", "empty-name", "blank-name", "unknown-name", "not-alias"],
)
def test_unresolvable_events_are_skipped_unmapped_with_a_distinct_reason(
    kwargs: dict[str, str], reason: str
) -> None:
    result = resolve_event(make_event(base=BARE, **kwargs), RULES)
    assert isinstance(result, Skip)
    assert (result.status, result.reason) == (UNMAPPED, reason)
    assert resolve_bluecore_event(make_event(base=BARE, **kwargs), RULES)[1] is None


def test_operator_overrides_add_replace_and_drop_events() -> None:
    rules = MappingRules(
        event_map={
            "Checkout Started": "checkout",
            "Product Viewed": None,
            "order-completed": "purchase",
            "page": None,
        },
    )
    assert rules.event_map == {
        "checkoutstarted": "checkout",
        "productviewed": None,
        "ordercompleted": "purchase",
        "page": None,
    }
    assert resolve_event(make_event(base=BARE, event="checkout_started"), rules) == (
        "checkout_started",
        "checkout",
    )
    dropped = resolve_event(make_event(base=BARE, event="Product Viewed"), rules)
    assert isinstance(dropped, Skip)
    assert (dropped.status, dropped.reason, dropped.datafly_event) == (
        UNMAPPED,
        "EVENT_DISABLED",
        "Product Viewed",
    )
    page = resolve_event(make_event(base=BARE, type="page"), rules)
    assert isinstance(page, Skip)
    assert page.reason == "EVENT_DISABLED"
    # Aliases the override does not name keep the built-in mapping.
    assert resolve_event(make_event(base=BARE, event="view_item"), rules) == (
        "view_item",
        "viewed_product",
    )


def test_an_override_to_a_custom_bluecore_event_sends_identity_only() -> None:
    rules = MappingRules(event_map={"Checkout Started": "checkout"})
    message = make_event(base=BARE, event="Checkout Started", traits={"email": EMAIL})
    message.properties.update({"cart_id": "c-1"})
    assert "checkout" not in KNOWN_BLUECORE_EVENTS
    assert only_properties(build(message, rules)) == {
        "distinct_id": EMAIL,
        "customer": {"email": EMAIL},
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_purchase_products": 0}, "max_purchase_products"),
        ({"event_map": {"  ": "purchase"}}, "empty event name"),
        ({"event_map": {"x": " "}}, "event name or null"),
    ],
    ids=["zero-limit", "blank-key", "blank-target"],
)
def test_mapping_rules_refuse_unusable_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MappingRules(**kwargs)


# --- one body per mapping row ---------------------------------------------------------------

PRODUCT = {
    "product_id": "SKU1",
    "sku": "S-1",
    "name": "Trail Runner",
    "price": 39.9,
    "quantity": 2,
    "url": "https://shop.example.com/p/1",
    "image_url": "https://cdn.example.com/1.jpg",
    "category": "Shoes",
    "brand": "Acme",
    "variant": "Blue",
    "currency": "USD",
}
PRODUCT_OUT = {
    "id": "SKU1",
    "name": "Trail Runner",
    "price": 39.9,
    "quantity": 2,
    "url": "https://shop.example.com/p/1",
    "image": "https://cdn.example.com/1.jpg",
    "category": "Shoes",
    "brand": "Acme",
    "variant": "Blue",
}
ANON = {"distinct_id": "anon-1"}
KNOWN = {"distinct_id": EMAIL, "customer": {"email": EMAIL}}

ROWS: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = [
    (
        "page-from-properties",
        {"type": "page", "properties": {"url": "https://s/a", "title": "A"}},
        "viewed_page",
        {**ANON, "url": "https://s/a", "title": "A"},
    ),
    (
        "page-from-context",
        {"type": "page", "context": context(page={"url": "https://s/b", "title": "B"})},
        "viewed_page",
        {**ANON, "url": "https://s/b", "title": "B"},
    ),
    (
        "page-properties-beat-context",
        {
            "type": "page",
            "properties": {"url": "https://s/p"},
            "context": context(page={"url": "https://s/c", "title": "C"}),
        },
        "viewed_page",
        {**ANON, "url": "https://s/p", "title": "C"},
    ),
    (
        "product-viewed",
        {"event": "Product Viewed", "properties": PRODUCT},
        "viewed_product",
        {**ANON, "products": [PRODUCT_OUT]},
    ),
    (
        "search-query",
        {"event": "Products Searched", "properties": {"query": "shoes"}},
        "search",
        {**ANON, "search_term": "shoes"},
    ),
    (
        "search-search-term",
        {"event": "search", "properties": {"search_term": "socks"}},
        "search",
        {**ANON, "search_term": "socks"},
    ),
    (
        "search-keywords",
        {"event": "search", "properties": {"keywords": " hats "}},
        "search",
        {**ANON, "search_term": "hats"},
    ),
    (
        "search-query-first",
        {"event": "search", "properties": {"keywords": "k", "query": "q", "search_term": "s"}},
        "search",
        {**ANON, "search_term": "q"},
    ),
    (
        "product-added",
        {"event": "Product Added", "properties": {"product_id": "SKU1", "price": 5, "quantity": 3}},
        "add_to_cart",
        {**ANON, "products": [{"id": "SKU1", "price": 5.0, "quantity": 3}]},
    ),
    (
        "product-removed",
        {"event": "Product Removed", "properties": {"sku": "S-9"}},
        "remove_from_cart",
        {**ANON, "products": [{"id": "S-9"}]},
    ),
    (
        "wishlist",
        {"event": "Product Added to Wishlist", "properties": {"id": 1234}},
        "wishlist",
        {**ANON, "products": [{"id": "1234"}]},
    ),
    (
        "order-completed",
        {
            "event": "Order Completed",
            "traits": {"email": EMAIL},
            "properties": {"order_id": "O-1", "total": 12.5, "products": [{"sku": "A"}]},
        },
        "purchase",
        {**KNOWN, "order_id": "O-1", "total": 12.5, "products": [{"id": "A"}]},
    ),
    (
        "signed-up",
        {"event": "Signed Up", "traits": {"email": EMAIL}},
        "optin",
        KNOWN,
    ),
    (
        "unsubscribed",
        {"event": "Unsubscribed", "context": context(traits={"email": EMAIL})},
        "unsubscribe",
        KNOWN,
    ),
    (
        "identify",
        {"type": "identify", "traits": {"email": EMAIL}},
        "identify",
        {"distinct_id": "anon-1", "customer": {"email": EMAIL}},
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "bluecore", "expected"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_each_mapping_row_builds_its_bluecore_body(
    kwargs: dict[str, Any], bluecore: str, expected: dict[str, Any]
) -> None:
    result = build(make_event(base=BARE, **kwargs))
    assert not isinstance(result, Skip), result
    assert [r.event for r in result] == [bluecore]
    assert only_properties(result) == expected


def test_seed_order_completed_example_produces_exactly_the_seed_body() -> None:
    """The example of the integration page, byte for byte in meaning and number types."""
    message = make_event(
        base=BARE,
        event="Order Completed",
        traits={"email": "jane@example.com"},
        properties={
            "order_id": "ORD-1001",
            "revenue": 49.90,
            "currency": "USD",
            "products": [
                {"product_id": "SKU123", "price": 39.90, "quantity": 1},
                {"product_id": "SKU456", "price": 10.00, "quantity": 1},
            ],
        },
    )
    result = build(message)
    assert not isinstance(result, Skip)
    [request] = result
    seed = seed_purchase_body(TOKEN)
    assert json.loads(wire.serialise(request.body, TOKEN)) == seed
    del seed["properties"]["token"]
    assert request.body == seed
    products = request.body["properties"]["products"]
    assert [type(p["quantity"]) for p in products] == [int, int]
    assert [type(p["price"]) for p in products] == [float, float]
    assert type(request.body["properties"]["total"]) is float
    assert b'"quantity":1}' in wire.serialise(request.body, TOKEN)


def test_no_body_carries_a_token_the_serialiser_adds_it_first() -> None:
    """The mapper never sees the credential; the wire form puts it first in properties."""
    for _, kwargs, _, _ in ROWS:
        result = build(make_event(base=BARE, **kwargs))
        assert not isinstance(result, Skip)
        for request in result:
            assert "token" not in request.body["properties"]
            wire_form = json.loads(wire.serialise(request.body, "acme-shop"))
            assert next(iter(wire_form["properties"].items())) == ("token", "acme-shop")
            assert wire_form["properties"] == {"token": "acme-shop", **request.body["properties"]}


# --- page and search rejections ---------------------------------------------------------------


def test_page_without_any_url_is_rejected() -> None:
    result = skipped(build(make_event(base=BARE, type="page", properties={"title": "T"})))
    assert result.reason == "MISSING_PAGE_URL"


@pytest.mark.parametrize(
    "properties",
    [{}, {"query": "  "}, {"query": {"text": "x"}}, {"keywords": True}],
    ids=["none", "blank", "object", "bool"],
)
def test_search_without_a_term_is_rejected(properties: dict[str, Any]) -> None:
    result = skipped(build(make_event(base=BARE, event="search", properties=properties)))
    assert result.reason == "MISSING_SEARCH_TERM"


def test_numeric_search_term_is_sent_as_text() -> None:
    result = build(make_event(base=BARE, event="search", properties={"query": 42}))
    assert only_properties(result)["search_term"] == "42"


# --- identity --------------------------------------------------------------------------------

IDENTITY_CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("traits", {"traits": {"email": EMAIL}}, EMAIL),
    ("context-traits", {"context": context(traits={"email": EMAIL})}, EMAIL),
    ("properties", {"properties": {"email": EMAIL}}, EMAIL),
    (
        "traits-first",
        {
            "traits": {"email": "a@x.io"},
            "context": context(traits={"email": "b@x.io"}),
            "properties": {"email": "c@x.io"},
        },
        "a@x.io",
    ),
    (
        "context-before-properties",
        {"context": context(traits={"email": "b@x.io"}), "properties": {"email": "c@x.io"}},
        "b@x.io",
    ),
    ("trimmed-lowercased", {"traits": {"email": "  Jane@Example.COM \n"}}, EMAIL),
    (
        "invalid-skipped",
        {"traits": {"email": "not-an-email"}, "properties": {"email": EMAIL}},
        EMAIL,
    ),
    ("no-at", {"traits": {"email": "jane.example.com"}}, None),
    ("two-ats", {"traits": {"email": "a@b@example.com"}}, None),
    ("no-dot-in-domain", {"traits": {"email": "jane@localhost"}}, None),
    ("empty-label", {"traits": {"email": "jane@example..com"}}, None),
    ("inner-space", {"traits": {"email": "ja ne@example.com"}}, None),
    ("empty-local", {"traits": {"email": "@example.com"}}, None),
    ("not-a-string", {"traits": {"email": 42}}, None),
    ("object", {"traits": {"email": {"value": EMAIL}}}, None),
    ("too-long", {"traits": {"email": "a" * 250 + "@example.com"}}, None),
    ("control-char", {"traits": {"email": "ja\x00ne@example.com"}}, None),
    ("absent", {}, None),
]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [case[1:] for case in IDENTITY_CASES],
    ids=[case[0] for case in IDENTITY_CASES],
)
def test_extract_email_takes_the_first_valid_email(
    kwargs: dict[str, Any], expected: str | None
) -> None:
    assert extract_email(make_event(base=BARE, **kwargs)) == expected


@pytest.mark.parametrize(
    ("kwargs", "distinct_id"),
    [
        ({"event": "Product Viewed", "traits": {"email": EMAIL}}, EMAIL),
        ({"event": "Product Viewed"}, "anon-1"),
        ({"event": "Product Viewed", "traits": {"email": "bad"}}, "anon-1"),
        ({"event": "Product Viewed", "anonymous_id": "  anon-2  "}, "anon-2"),
        ({"type": "identify", "traits": {"email": EMAIL}}, "anon-1"),
        ({"type": "identify", "anonymous_id": "", "traits": {"email": EMAIL}}, EMAIL),
    ],
    ids=["email", "anonymous", "invalid-email", "trimmed-anon", "identify-anon", "identify-email"],
)
def test_distinct_id_is_email_else_anonymous_id_and_reversed_for_identify(
    kwargs: dict[str, Any], distinct_id: str
) -> None:
    kwargs.setdefault("properties", {"product_id": "P1"})
    assert only_properties(build(make_event(base=BARE, **kwargs)))["distinct_id"] == distinct_id


def test_email_is_never_hashed() -> None:
    props = only_properties(
        build(make_event(base=BARE, event="Signed Up", traits={"email": EMAIL}))
    )
    assert props["distinct_id"] == props["customer"]["email"] == EMAIL


def test_no_email_and_no_anonymous_id_is_missing_identity() -> None:
    message = make_event(
        base=BARE,
        event="Product Viewed",
        anonymous_id="",
        properties={"product_id": "P1"},
        traits={"email": "Secret@@example.com"},
    )
    result = skipped(build(message))
    assert (result.status, result.reason) == (INVALID, "MISSING_IDENTITY")
    assert "traits.email is not a valid email" in result.detail
    assert "secret" not in result.detail.lower()


@pytest.mark.parametrize(
    ("kwargs", "bluecore"),
    [
        (
            {
                "event": "Order Completed",
                "properties": {"order_id": "1", "total": 1, "products": [{"id": "A"}]},
            },
            "purchase",
        ),
        ({"event": "Signed Up"}, "optin"),
        ({"event": "Unsubscribed"}, "unsubscribe"),
        ({"type": "identify"}, "identify"),
        ({"type": "identify", "traits": {"email": "jane(at)example.com"}}, "identify"),
    ],
    ids=["purchase", "optin", "unsubscribe", "identify", "identify-invalid-email"],
)
def test_events_that_need_an_email_are_rejected_without_one(
    kwargs: dict[str, Any], bluecore: str
) -> None:
    result = skipped(build(make_event(base=BARE, **kwargs)))
    assert (result.status, result.reason) == (INVALID, "MISSING_EMAIL")
    assert bluecore in result.detail
    assert "jane" not in result.detail


# --- customer attributes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("traits", "context_traits", "rules", "customer"),
    [
        (
            {"email": EMAIL, "first_name": "Jane", "last_name": "Doe", "phone": "555"},
            None,
            RULES,
            {"email": EMAIL, "first_name": "Jane", "last_name": "Doe"},
        ),
        (
            {"email": EMAIL, "firstName": "Jane", "Last Name": "Doe"},
            None,
            RULES,
            {"email": EMAIL, "first_name": "Jane", "last_name": "Doe"},
        ),
        (
            {"email": EMAIL, "firstName": "Camel", "first_name": "Exact"},
            None,
            RULES,
            {"email": EMAIL, "first_name": "Exact"},
        ),
        (
            {"email": EMAIL},
            {"first_name": "FromContext"},
            RULES,
            {"email": EMAIL, "first_name": "FromContext"},
        ),
        (
            {"email": EMAIL, "first_name": "Traits"},
            {"first_name": "Context"},
            RULES,
            {"email": EMAIL, "first_name": "Traits"},
        ),
        (
            {"email": EMAIL, "first_name": {"x": 1}, "last_name": ["Doe"]},
            {"first_name": "Fallback"},
            RULES,
            {"email": EMAIL, "first_name": "Fallback"},
        ),
        (
            {"email": EMAIL, "loyaltyTier": "gold", "vip": True, "points": 12.0, "age": NAN},
            None,
            MappingRules(customer_attributes=("Loyalty Tier", "vip", "points", "age")),
            {"email": EMAIL, "loyalty_tier": "gold", "vip": True, "points": 12},
        ),
        (
            {"email": EMAIL, "first_name": "  "},
            None,
            RULES,
            {"email": EMAIL},
        ),
        (
            {"email": EMAIL, "Email": "other@example.com"},
            None,
            MappingRules(customer_attributes=("email",)),
            {"email": EMAIL},
        ),
        (
            {"first_name": "Anon"},
            None,
            RULES,
            {"first_name": "Anon"},
        ),
    ],
    ids=[
        "allow-list",
        "converted-names",
        "exact-key-wins",
        "context-traits",
        "traits-before-context",
        "objects-ignored",
        "custom-allow-list",
        "blank-ignored",
        "email-not-overridable",
        "anonymous-with-attributes",
    ],
)
def test_customer_gets_email_and_allow_listed_traits_in_snake_case(
    traits: dict[str, Any],
    context_traits: dict[str, Any] | None,
    rules: MappingRules,
    customer: dict[str, Any],
) -> None:
    message = make_event(
        base=BARE,
        event="Product Viewed",
        properties={"product_id": "P"},
        traits=traits,
        context=context() if context_traits is None else context(traits=context_traits),
    )
    assert only_properties(build(message, rules))["customer"] == customer


def test_no_email_and_no_attributes_means_no_customer_object() -> None:
    props = only_properties(
        build(make_event(base=BARE, event="view_item", properties={"sku": "S"}))
    )
    assert "customer" not in props


# --- products --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("id_fields", "product", "expected_id"),
    [
        (("product_id", "sku", "id"), {"product_id": "P", "sku": "S", "id": "I"}, "P"),
        (("product_id", "sku", "id"), {"sku": "S", "id": "I"}, "S"),
        (("product_id", "sku", "id"), {"id": "I"}, "I"),
        (("sku", "product_id"), {"product_id": "P", "sku": "S"}, "S"),
        (("sku",), {"product_id": "P", "item_id": "G"}, "G"),
        (("product_id", "sku", "id"), {"product_id": "  ", "sku": "S"}, "S"),
        (("product_id", "sku", "id"), {"product_id": 1001}, "1001"),
        (("product_id", "sku", "id"), {"product_id": 10.5}, "10.5"),
        (("product_id", "sku", "id"), {"product_id": True, "sku": "S"}, "S"),
    ],
    ids=[
        "product_id-first",
        "sku-second",
        "id-third",
        "configured-order",
        "ga4-item_id-fallback",
        "blank-skipped",
        "integer-id",
        "float-id",
        "bool-not-an-id",
    ],
)
def test_product_id_follows_the_configured_field_order(
    id_fields: tuple[str, ...], product: dict[str, Any], expected_id: str
) -> None:
    rules = MappingRules(product_id_fields=id_fields)
    props = only_properties(
        build(make_event(base=BARE, event="Product Viewed", properties=product), rules)
    )
    assert props["products"] == [{"id": expected_id}]


def test_ga4_items_keep_their_fields() -> None:
    item = {
        "item_id": "G1",
        "item_name": "Sock",
        "price": "4.50",
        "quantity": "3",
        "item_category": "Socks",
        "item_brand": "Acme",
        "item_variant": "M",
    }
    props = only_properties(
        build(make_event(base=BARE, event="view_item", properties={"items": [item]}))
    )
    assert props["products"] == [
        {
            "id": "G1",
            "name": "Sock",
            "price": 4.5,
            "quantity": 3,
            "category": "Socks",
            "brand": "Acme",
            "variant": "M",
        }
    ]


@pytest.mark.parametrize(
    ("raw", "price", "quantity"),
    [
        ({"price": "39.90", "quantity": "2"}, 39.9, 2),
        ({"price": " 10 ", "quantity": " 1.0 "}, 10.0, 1),
        ({"price": 0, "quantity": 0}, 0.0, 0),
        ({"price": "1e2", "quantity": 1.5}, 100.0, 1.5),
        ({"price": "", "quantity": None}, None, None),
    ],
    ids=["strings", "padded", "zeros", "exponent-and-fraction", "blank-and-null-absent"],
)
def test_numeric_strings_become_numbers(
    raw: dict[str, Any], price: float | None, quantity: float | None
) -> None:
    props = only_properties(
        build(make_event(base=BARE, event="Product Added", properties={"product_id": "P", **raw}))
    )
    [product] = props["products"]
    assert product.get("price") == price
    assert product.get("quantity") == quantity
    if price is not None:
        assert type(product["price"]) is float
    if quantity is not None and float(quantity).is_integer():
        assert type(product["quantity"]) is int


BAD_NUMBERS: list[tuple[str, dict[str, Any], str, str]] = [
    ("price-abc", {"price": "abc"}, "INVALID_PRICE", "properties.price is not a number"),
    ("price-comma", {"price": "1,5"}, "INVALID_PRICE", "properties.price is not a number"),
    ("price-nan-string", {"price": "NaN"}, "INVALID_PRICE", "properties.price is not a number"),
    ("price-nan", {"price": NAN}, "INVALID_PRICE", "properties.price is not a finite number"),
    ("price-inf", {"price": INF}, "INVALID_PRICE", "properties.price is not a finite number"),
    ("price-huge", {"price": "1e999"}, "INVALID_PRICE", "properties.price is not a finite"),
    ("price-negative", {"price": -1}, "INVALID_PRICE", "properties.price is negative"),
    ("price-bool", {"price": True}, "INVALID_PRICE", "properties.price is not a number"),
    ("price-object", {"price": {"v": 1}}, "INVALID_PRICE", "properties.price is not a number"),
    ("price-list", {"price": [1]}, "INVALID_PRICE", "properties.price is not a number"),
    ("qty-negative", {"quantity": -2}, "INVALID_QUANTITY", "properties.quantity is negative"),
    ("qty-nan", {"quantity": NAN}, "INVALID_QUANTITY", "properties.quantity is not a finite"),
    ("qty-inf", {"quantity": -INF}, "INVALID_QUANTITY", "properties.quantity is not a finite"),
    ("qty-text", {"quantity": "two"}, "INVALID_QUANTITY", "properties.quantity is not a number"),
]


@pytest.mark.parametrize(
    ("raw", "reason", "detail"),
    [case[1:] for case in BAD_NUMBERS],
    ids=[case[0] for case in BAD_NUMBERS],
)
def test_bad_prices_and_quantities_reject_the_event_naming_the_field(
    raw: dict[str, Any], reason: str, detail: str
) -> None:
    result = skipped(
        build(make_event(base=BARE, event="Product Added", properties={"sku": "P", **raw}))
    )
    assert (result.status, result.reason) == (INVALID, reason)
    assert detail in result.detail


def test_bad_price_inside_a_products_list_names_its_position() -> None:
    props = {"products": [{"sku": "A", "price": 1}, {"sku": "B", "price": "abc"}]}
    result = skipped(build(make_event(base=BARE, event="Product Added", properties=props)))
    assert result.reason == "INVALID_PRICE"
    assert "properties.products[1].price" in result.detail


@pytest.mark.parametrize(
    ("properties", "reason"),
    [
        ({"name": "No id"}, "NO_VALID_PRODUCTS"),
        ({"products": [{"name": "a"}, {"price": 1}]}, "NO_VALID_PRODUCTS"),
        ({"items": ["SKU1", "SKU2"]}, "NO_VALID_PRODUCTS"),
        ({"items": [1, None, [2]]}, "NO_VALID_PRODUCTS"),
        ({"products": "SKU1,SKU2"}, "INVALID_PRODUCTS"),
        ({"products": 3}, "INVALID_PRODUCTS"),
        ({"items": True}, "INVALID_PRODUCTS"),
        ({"products": {}}, "NO_VALID_PRODUCTS"),
    ],
    ids=[
        "flat-without-id",
        "all-without-id",
        "items-strings",
        "items-scalars",
        "products-string",
        "products-number",
        "items-bool",
        "products-empty-object",
    ],
)
def test_product_events_without_a_usable_product_are_rejected(
    properties: dict[str, Any], reason: str
) -> None:
    result = skipped(build(make_event(base=BARE, event="Product Viewed", properties=properties)))
    assert (result.status, result.reason) == (INVALID, reason)
    assert "SKU1" not in result.detail


def test_products_without_an_id_are_dropped_and_the_rest_sent() -> None:
    """Entries without an id (or not objects) are dropped unchecked, even with a bad price."""
    props = {"products": [{"name": "no id", "price": "abc"}, "junk", {"sku": "C"}]}
    result = build(make_event(base=BARE, event="Product Removed", properties=props))
    assert [p["products"] for p in sent_properties(result)] == [[{"id": "C"}]]


def test_a_bad_price_on_a_product_with_an_id_rejects_the_whole_event() -> None:
    props = {"products": [{"sku": "B", "price": "abc"}, {"sku": "C"}]}
    result = skipped(build(make_event(base=BARE, event="Product Removed", properties=props)))
    assert result.reason == "INVALID_PRICE"


def test_merged_quantities_that_overflow_are_rejected() -> None:
    props = {"products": [{"sku": "A", "quantity": 1e308}, {"sku": "A", "quantity": 1e308}]}
    result = skipped(build(make_event(base=BARE, event="add_to_cart", properties=props)))
    assert result.reason == "INVALID_QUANTITY"


@pytest.mark.parametrize(
    "properties",
    [
        {"products": {"product_id": "P1", "price": 2}},
        {"products": [], "items": [{"item_id": "P1", "price": 2}]},
        {"products": None, "product_id": "P1", "price": 2},
        {"items": [], "product_id": "P1", "price": 2},
    ],
    ids=["single-object", "empty-products-then-items", "null-products-flat", "empty-items-flat"],
)
def test_product_sources_fall_back_in_order(properties: dict[str, Any]) -> None:
    props = only_properties(
        build(make_event(base=BARE, event="Product Viewed", properties=properties))
    )
    assert props["products"] == [{"id": "P1", "price": 2.0}]


def test_add_to_cart_with_several_products_sends_one_request_per_product() -> None:
    properties = {
        "products": [
            {"product_id": "A", "price": 1, "quantity": 1},
            {"product_id": "B", "price": 2},
            {"product_id": "A", "price": 1, "quantity": 2},
        ]
    }
    result = build(make_event(base=BARE, event="add_to_cart", properties=properties))
    assert [p["products"] for p in sent_properties(result)] == [
        [{"id": "A", "price": 1.0, "quantity": 3}],
        [{"id": "B", "price": 2.0}],
    ]


@pytest.mark.parametrize(
    "event", ["Product Viewed", "Product Removed", "Product Added to Wishlist"]
)
def test_other_single_product_events_also_fan_out(event: str) -> None:
    properties = {"products": [{"sku": "A"}, {"sku": "B"}]}
    result = build(make_event(base=BARE, event=event, properties=properties))
    assert [p["products"] for p in sent_properties(result)] == [[{"id": "A"}], [{"id": "B"}]]


def test_fan_out_is_bounded_by_the_product_limit() -> None:
    properties = {"products": [{"sku": f"S{i}"} for i in range(31)]}
    result = skipped(build(make_event(base=BARE, event="add_to_cart", properties=properties)))
    assert result.reason == "TOO_MANY_PRODUCTS"


# --- purchase ----------------------------------------------------------------------------------


def purchase(properties: dict[str, Any]) -> delivery_pb2.DataflyEvent:
    return make_event(
        base=BARE, event="Order Completed", traits={"email": EMAIL}, properties=properties
    )


LINES = [{"sku": "A", "price": 10.0, "quantity": 2}, {"sku": "B", "price": 5.25}]


@pytest.mark.parametrize(
    ("extra", "total"),
    [
        ({"total": 30, "revenue": 20, "value": 10}, 30.0),
        ({"revenue": 20, "value": 10}, 20.0),
        ({"value": "10.50"}, 10.5),
        ({}, 25.25),
        ({"total": 0}, 0.0),
        ({"total": None, "revenue": ""}, 25.25),
    ],
    ids=["total", "revenue", "value-string", "sum-of-lines", "zero-is-valid", "null-blank-skipped"],
)
def test_purchase_total_precedence(extra: dict[str, Any], total: float) -> None:
    """The total is total, else revenue, else value, else the sum of the lines; always a
    float, zero kept, null and blank skipped."""
    props = only_properties(build(purchase({"order_id": "O", "products": LINES, **extra})))
    assert props["total"] == total
    assert type(props["total"]) is float


def test_computed_total_has_no_float_noise() -> None:
    lines = [{"sku": "A", "price": 0.1}, {"sku": "B", "price": 0.1}, {"sku": "C", "price": 0.1}]
    props = only_properties(build(purchase({"order_id": "O", "products": lines})))
    assert props["total"] == 0.3


@pytest.mark.parametrize(
    ("properties", "reason", "detail"),
    [
        ({"products": LINES, "total": 1}, "MISSING_ORDER_ID", "order_id"),
        ({"order_id": "  ", "products": LINES}, "MISSING_ORDER_ID", "order_id"),
        ({"order_id": {"id": 1}, "products": LINES}, "MISSING_ORDER_ID", "order_id"),
        ({"order_id": "O", "products": LINES, "total": "abc"}, "INVALID_TOTAL", "properties.total"),
        ({"order_id": "O", "products": LINES, "revenue": -5}, "INVALID_TOTAL", "revenue"),
        ({"order_id": "O", "products": LINES, "value": NAN}, "INVALID_TOTAL", "value"),
        ({"order_id": "O", "products": [{"sku": "A"}]}, "MISSING_TOTAL", "no price"),
        (
            {"order_id": "O", "products": [{"sku": "A", "price": 1e308, "quantity": 10}]},
            "INVALID_TOTAL",
            "not finite",
        ),
        ({"order_id": "O", "total": 1}, "NO_VALID_PRODUCTS", "product id"),
        ({"order_id": "O", "total": 1, "products": [{"name": "x"}]}, "NO_VALID_PRODUCTS", "id"),
    ],
    ids=[
        "no-order-id",
        "blank-order-id",
        "object-order-id",
        "total-abc",
        "negative-revenue",
        "nan-value",
        "no-price-to-sum",
        "sum-overflows",
        "no-products",
        "no-product-ids",
    ],
)
def test_invalid_purchases_are_rejected(
    properties: dict[str, Any], reason: str, detail: str
) -> None:
    result = skipped(build(purchase(properties)))
    assert (result.status, result.reason) == (INVALID, reason)
    assert detail in result.detail


def test_transaction_id_is_accepted_as_the_order_id() -> None:
    props = only_properties(build(purchase({"transaction_id": 1001, "value": 1, "items": LINES})))
    assert props["order_id"] == "1001"


def test_purchase_merges_duplicate_ids_summing_quantities() -> None:
    lines = [
        {"sku": "A", "price": 10.0, "quantity": 2, "name": "First"},
        {"sku": "B", "price": 1.0},
        {"sku": "A", "price": 8.0, "brand": "Acme", "name": "Second"},
    ]
    props = only_properties(build(purchase({"order_id": "O", "products": lines})))
    assert props["products"] == [
        {"id": "A", "name": "First", "price": 10.0, "quantity": 3, "brand": "Acme"},
        {"id": "B", "price": 1.0},
    ]
    # The total is summed over the lines as sent by the site, before merging.
    assert props["total"] == 29.0


@pytest.mark.parametrize(
    ("unique", "duplicates", "ok"),
    [(30, 0, True), (30, 5, True), (31, 0, False)],
    ids=["30-unique", "30-unique-with-duplicates", "31-unique"],
)
def test_purchase_allows_at_most_30_unique_product_ids(
    unique: int, duplicates: int, ok: bool
) -> None:
    lines = [{"sku": f"S{i}", "price": 1} for i in range(unique)]
    lines += [{"sku": "S0", "price": 1} for _ in range(duplicates)]
    result = build(purchase({"order_id": "O", "products": lines}))
    if ok:
        assert len(only_properties(result)["products"]) == unique
    else:
        skip = skipped(result)
        assert (skip.status, skip.reason) == (INVALID, "TOO_MANY_PRODUCTS")
        assert "31" in skip.detail


def test_product_limit_is_configurable() -> None:
    rules = MappingRules(max_purchase_products=2)
    lines = [{"sku": s, "price": 1} for s in "ABC"]
    assert skipped(build(purchase({"order_id": "O", "products": lines}), rules)).reason == (
        "TOO_MANY_PRODUCTS"
    )


# --- the request object -----------------------------------------------------------------------


def test_the_redacted_form_is_the_wire_form_with_the_token_starred() -> None:
    result = build(make_event(base=BARE, event="Signed Up", traits={"email": EMAIL}))
    assert not isinstance(result, Skip)
    [request] = result
    redacted = wire.redacted(request.body)
    assert redacted == (
        '{"event":"optin","properties":{"token":"***","distinct_id":"jane@example.com",'
        '"customer":{"email":"jane@example.com"}}}'
    )
    assert wire.serialise(request.body, TOKEN) == redacted.replace("***", TOKEN).encode()
    assert "token" not in request.body["properties"]  # serialising does not mutate the body


def test_non_ascii_text_is_sent_as_utf8() -> None:
    result = build(make_event(base=BARE, event="search", properties={"query": "crème brûlée"}))
    assert not isinstance(result, Skip)
    assert "crème brûlée".encode() in wire.serialise(result[0].body, TOKEN)


def test_building_never_mutates_the_event() -> None:
    message = purchase({"order_id": "O", "products": LINES})
    before = message.SerializeToString(deterministic=True)
    build(message)
    build_requests(message, "viewed_page", RULES)
    assert message.SerializeToString(deterministic=True) == before


@pytest.mark.parametrize(
    "body",
    [
        {"properties": {"distinct_id": "a"}, "event": "search"},  # properties first
        {"event": "search", "properties": {}},  # nothing to put the token before
        {"event": "search", "properties": {"token": "old", "distinct_id": "a"}},
        {"event": "search", "properties": ["not", "an", "object"]},
        {"event": "search"},
        {"event": 7, "properties": {"distinct_id": "a"}},
    ],
)
def test_a_body_of_another_shape_is_encoded_anew_with_the_token(body: dict[str, Any]) -> None:
    """Only the mapper's usual shape takes the shortcut; any other still gets exact bytes."""
    encoded = wire.encode(body)
    assert encoded.token_at == -1
    assert wire.serialise(body, TOKEN, encoded) == wire.serialise(body, TOKEN)
