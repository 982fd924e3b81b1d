"""Property-based tests: any DataflyEvent yields a Send or a Skip, never a crash or a leak."""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

from bluecore_sidecar import wire
from bluecore_sidecar.decision import Send, Skip, decide
from bluecore_sidecar.gates import GatePolicy
from bluecore_sidecar.mapping import MappingRules
from bluecore_sidecar.skip import MAPPING_ERROR, REASONS
from datafly.bluecore.v1 import delivery_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import event as target_event
from hypothesis import strategies as st

from .conftest import make_event

TOKEN = "bluestore-secret-token"
NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)

RULES = [
    MappingRules(),
    MappingRules(
        product_id_fields=("sku", "id"),
        event_map={"Checkout Started": "checkout", "Product Viewed": None},
        customer_attributes=("first_name", "loyaltyTier", "vip"),
        max_purchase_products=3,
    ),
]
POLICIES = [
    GatePolicy(),
    GatePolicy(consent_default=True, max_event_age=datetime.timedelta(0)),
    GatePolicy(consent_category="ads", consent_default=True),
]

TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12)
ALIASES = st.sampled_from(
    [
        "Product Viewed",
        "view_item",
        "Products Searched",
        "search",
        "Product Added",
        "add_to_cart",
        "Product Removed",
        "remove_from_cart",
        "Product Added to Wishlist",
        "add_to_wishlist",
        "Order Completed",
        "purchase",
        "Signed Up",
        "sign_up",
        "Unsubscribed",
        "ORDER-completed",
        "Checkout Started",
        "",
        "  ",
    ]
)
TYPES = st.sampled_from(["track", "page", "identify", "screen", "group", "", "TRACK", " Page "])
KEYS = (
    st.sampled_from(
        [
            "product_id",
            "sku",
            "id",
            "item_id",
            "name",
            "item_name",
            "price",
            "quantity",
            "url",
            "image_url",
            "category",
            "brand",
            "variant",
            "products",
            "items",
            "order_id",
            "transaction_id",
            "total",
            "revenue",
            "value",
            "query",
            "search_term",
            "keywords",
            "title",
            "email",
            "first_name",
            "firstName",
            "Loyalty Tier",
            "vip",
        ]
    )
    | TEXT
)
EMAILS = st.sampled_from(
    ["jane@example.com", " Jane@Example.COM ", "not-an-email", "a@b", "x@y.z", "", "@@"]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(2**62), max_value=2**62)
    | st.sampled_from(["39.90", "abc", "-1", "1e999", "NaN", "inf", " 2 ", "", "SKU1", "0"])
    | EMAILS
    | TEXT
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=25,
)
PRODUCT = st.dictionaries(KEYS, SCALARS, max_size=6).map(lambda p: {"sku": "S", **p})
PRODUCTS = st.lists(PRODUCT | JSON_VALUES, max_size=35)
PROPERTIES = st.dictionaries(KEYS, JSON_VALUES, max_size=8) | st.builds(
    lambda base, key, products: {**base, key: products},
    st.dictionaries(KEYS, SCALARS, max_size=6),
    st.sampled_from(["products", "items"]),
    PRODUCTS,
)
TRAITS = st.dictionaries(KEYS | st.just("email"), SCALARS, max_size=5) | st.builds(
    lambda email, rest: {**rest, "email": email}, EMAILS | TEXT, st.dictionaries(KEYS, SCALARS)
)
CONSENT = st.dictionaries(st.sampled_from(["marketing", "Marketing", "ads"]) | TEXT, st.booleans())


def mostly(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`common` nine times in ten, else `rare`: keeps most examples deep in the mapper."""
    return st.sampled_from(range(10)).flatmap(lambda i: rare if i == 0 else common)


GOOD_PRODUCT = st.fixed_dictionaries(
    {"sku": st.sampled_from(["A", "B", "C", "D"]) | TEXT},
    optional={
        "price": st.floats(min_value=0, max_value=1e6) | st.sampled_from(["39.90", "0"]),
        "quantity": st.integers(min_value=0, max_value=99),
        "name": TEXT,
        "image_url": TEXT,
    },
)


@st.composite
def events(draw: st.DrawFn) -> delivery_pb2.DataflyEvent:
    event = delivery_pb2.DataflyEvent(
        message_id=draw(TEXT),
        type=draw(mostly(st.sampled_from(["track"] * 5 + ["page", "identify"]), TYPES | TEXT)),
        event=draw(mostly(ALIASES, TEXT)),
        name=draw(TEXT),
        anonymous_id=draw(mostly(st.just("anon-1"), st.sampled_from(["", "  "]) | TEXT)),
        user_id=draw(TEXT),
    )
    properties = draw(PROPERTIES)
    if draw(st.booleans()):
        products = draw(st.lists(mostly(GOOD_PRODUCT, PRODUCT | JSON_VALUES), max_size=35))
        properties[draw(st.sampled_from(["products", "items"]))] = products
    event.properties.update(properties)
    if draw(st.booleans()):
        event.traits.update(draw(mostly(st.just({"email": "jane@example.com"}), TRAITS)))
    if draw(st.booleans()):
        event.context.traits.update(draw(TRAITS))
    consent = draw(mostly(st.just({"marketing": True, "ads": True}), CONSENT))
    event.context.consent.update(consent)
    if draw(st.booleans()):
        event.context.page.url = draw(TEXT)
        event.context.page.title = draw(TEXT)
    if draw(st.booleans()):
        event.timestamp.seconds = draw(
            mostly(
                st.integers(min_value=int(NOW.timestamp()) - 7200, max_value=int(NOW.timestamp())),
                st.integers(min_value=-(2**62), max_value=2**62),
            )
        )
        event.timestamp.nanos = draw(st.integers(min_value=0, max_value=999_999_999))
    return event


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    event=events(),
    rules=st.sampled_from(RULES),
    policy=st.sampled_from(POLICIES),
    max_event_bytes=mostly(st.just(65536), st.just(200)),
)
def test_decide_never_raises_and_every_send_is_valid_json(
    event: delivery_pb2.DataflyEvent,
    rules: MappingRules,
    policy: GatePolicy,
    max_event_bytes: int,
) -> None:
    before = event.SerializeToString(deterministic=True)
    result = decide(event, rules, policy, NOW, max_event_bytes)
    assert event.SerializeToString(deterministic=True) == before, "decide mutated the event"

    target_event(result.reason if isinstance(result, Skip) else f"send {result.bluecore_event}")
    if isinstance(result, Skip):
        assert result.reason in REASONS
        assert result.reason != MAPPING_ERROR
        assert result.status == REASONS[result.reason][0]
        assert TOKEN not in result.detail
        assert "@" not in result.detail  # no email, whatever its spelling
        return

    assert isinstance(result, Send)
    assert result.requests
    for request in result.requests:
        assert request.event == result.bluecore_event
        text = json.dumps(request.body, allow_nan=False)
        wire_bytes = wire.serialise(request.body, TOKEN)
        # The text the mapper kept gets the very bytes an encoding from scratch would.
        assert request.encoded is not None
        assert request.encoded.token_at > 0
        assert wire.serialise(request.body, TOKEN, request.encoded) == wire_bytes
        wire_form = json.loads(wire_bytes)
        assert wire_form == json.loads(wire.redacted(request.body).replace("***", TOKEN))
        props = request.body["properties"]
        assert "token" not in props
        assert wire_form["properties"] == {"token": TOKEN, **json.loads(text)["properties"]}
        assert isinstance(props["distinct_id"], str)
        assert props["distinct_id"].strip()
        assert props["distinct_id"] == props["distinct_id"].strip()
        assert all(math.isfinite(n) for n in _numbers(request.body))
        assert TOKEN not in wire.redacted(request.body)
        customer = props.get("customer", {})
        assert all(key == key.lower() and " " not in key for key in customer)
        if "email" in customer:
            assert customer["email"] == customer["email"].strip().lower()
        products = props.get("products")
        if products is not None:
            ids = [p["id"] for p in products]
            assert len(ids) == len(set(ids))
            assert 1 <= len(ids) <= rules.max_purchase_products
            assert all(isinstance(i, str) and i for i in ids)
        if result.bluecore_event in {"add_to_cart", "remove_from_cart", "wishlist"}:
            assert len(products or []) == 1
        if result.bluecore_event == "purchase":
            assert props["total"] >= 0
            assert props["order_id"]
    assert len(result.requests) <= rules.max_purchase_products


LINE = st.fixed_dictionaries(
    {"product_id": st.integers(min_value=0, max_value=40).map(lambda i: f"SKU{i}")},
    optional={
        "price": st.floats(min_value=0, max_value=1e6),
        "quantity": st.integers(min_value=0, max_value=99),
    },
)


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(LINE, min_size=1, max_size=40),
    total_key=st.sampled_from([None, "total", "revenue", "value"]),
    amount=st.floats(min_value=0, max_value=1e9),
    name=st.sampled_from(["Order Completed", "order_completed", "purchase"]),
)
def test_well_formed_purchases_send_unique_products_and_the_right_total(
    lines: list[dict[str, Any]], total_key: str | None, amount: float, name: str
) -> None:
    properties: dict[str, Any] = {"order_id": "ORD-1", "products": lines}
    if total_key is not None:
        properties[total_key] = amount
    event = make_event(event=name, traits={"email": "Jane@Example.com"}, properties=properties)

    result = decide(event, RULES[0], POLICIES[0], NOW)

    ids = list(dict.fromkeys(line["product_id"] for line in lines))
    if len(ids) > 30:
        assert isinstance(result, Skip)
        assert result.reason == "TOO_MANY_PRODUCTS"
        return
    if total_key is None and any("price" not in line for line in lines):
        assert isinstance(result, Skip)
        assert result.reason == "MISSING_TOTAL"
        return
    assert isinstance(result, Send), result
    [request] = result.requests
    props = request.body["properties"]
    assert props["distinct_id"] == "jane@example.com"
    assert [p["id"] for p in props["products"]] == ids
    for product in props["products"]:
        mine = [line for line in lines if line["product_id"] == product["id"]]
        if len(mine) > 1:
            assert product["quantity"] == sum(line.get("quantity", 1) for line in mine)
        elif "quantity" in mine[0]:
            assert product["quantity"] == mine[0]["quantity"]
            assert type(product["quantity"]) is int
    if total_key is not None:
        assert props["total"] == amount
    else:
        expected = sum(line["price"] * line.get("quantity", 1) for line in lines)
        assert math.isclose(props["total"], expected, rel_tol=1e-9, abs_tol=1e-6)


#: The product text fields of the mapping table (DESIGN §4), in body order, with their keys.
_REFERENCE_TEXTS = (
    ("name", ("name", "item_name")),
    ("url", ("url",)),
    ("image", ("image_url", "image")),
    ("category", ("category", "item_category")),
    ("brand", ("brand", "item_brand")),
    ("variant", ("variant", "item_variant")),
)
_TEXT_KEYS = sorted({key for _, keys in _REFERENCE_TEXTS for key in keys})


def _reference_text(value: Any) -> str | None:
    """A text field as the rules read it from JSON: a trimmed non-empty string, or a number."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        number = float(value)
        return str(int(number)) if number.is_integer() and abs(number) < 2**53 else repr(number)
    return None


@settings(max_examples=300, deadline=None)
@given(texts=st.dictionaries(st.sampled_from(_TEXT_KEYS), SCALARS | JSON_VALUES, max_size=11))
def test_product_text_fields_are_the_first_usable_key_of_each_in_body_order(
    texts: dict[str, Any],
) -> None:
    """Whatever mix of text keys and values a product has, each text field is its first key
    with a usable value, and the fields come in the table's order."""
    event = make_event(event="Product Viewed")
    event.properties.Clear()
    event.properties.update({"product_id": "P1", **texts})
    rules = MappingRules()
    resolved = decide(event, rules, GatePolicy(consent_default=True), NOW, 1 << 20)
    assert isinstance(resolved, Send)
    (request,) = resolved.requests
    product = request.body["properties"]["products"][0]  # type: ignore[call-overload,index]
    expected: dict[str, str] = {}
    for name, keys in _REFERENCE_TEXTS:
        for key in keys:
            text = _reference_text(json.loads(json.dumps(texts[key]))) if key in texts else None
            if text is not None:
                expected[name] = text
                break
    assert {k: v for k, v in product.items() if k != "id"} == expected
    assert [k for k in product if k != "id"] == list(expected)
