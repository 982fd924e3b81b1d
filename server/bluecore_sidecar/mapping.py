"""Pure mapping of Datafly Signal events to Bluecore Events API request bodies.

No I/O and no clock: `resolve_bluecore_event` finds the Bluecore event for a `DataflyEvent`
(the alias table below, plus operator overrides), and `build_requests` turns the event into the
JSON bodies to POST (the upstream client adds the token), or a `Skip` saying why it cannot
become a valid Bluecore event.

The table is data: `_TRACK_ALIASES` maps normalised Datafly names to Bluecore events and
`_SPECS` maps each Bluecore event to the function that builds its event-specific properties.

Rules worth knowing when reading the code (see also docs/decisions.md):

* Email: the first *valid* of `traits.email`, `context.traits.email`, `properties.email`,
  trimmed and lower-cased. Valid means: printable, no whitespace, exactly one `@`, a non-empty
  local part and a domain of at least two non-empty dot-separated labels. Invalid values are
  ignored as if absent.
* Numbers: protobuf `Struct` numbers are doubles. Quantities that are whole numbers are sent
  as JSON integers; prices and totals stay floats. Numeric strings (`"39.90"`) become numbers;
  anything else (`"abc"`, `"1,5"`, `"NaN"`, booleans, objects), non-finite or negative values
  are rejected with a reason naming the field, never its value.
* Products come from the first non-empty `properties.products` or `properties.items` (a list,
  or a single object), else from the flat properties. Entries that are not objects or have no
  id are dropped; duplicates are merged by id (first occurrence keeps its position, price and
  text fields; quantities are summed, a missing quantity counting as 1).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, NamedTuple, TypeAlias

from datafly.bluecore.v1 import delivery_pb2
from google.protobuf import struct_pb2

from bluecore_sidecar import skip as sk
from bluecore_sidecar import wire
from bluecore_sidecar.skip import Skip

JSON: TypeAlias = bool | int | float | str | list["JSON"] | dict[str, "JSON"] | None

# Datafly aliases (already normalised) -> Bluecore event, for `track` events. Segment Title
# Case and snake_case normalise to the same key; GA4 names and Bluecore's own names are here too.
_TRACK_ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "productviewed": "viewed_product",
        "viewitem": "viewed_product",
        "viewedproduct": "viewed_product",
        "productssearched": "search",
        "productsearched": "search",
        "search": "search",
        "viewsearchresults": "search",
        "productadded": "add_to_cart",
        "addtocart": "add_to_cart",
        "productremoved": "remove_from_cart",
        "removefromcart": "remove_from_cart",
        "productaddedtowishlist": "wishlist",
        "addtowishlist": "wishlist",
        "wishlist": "wishlist",
        "ordercompleted": "purchase",
        "purchase": "purchase",
        "signedup": "optin",
        "signup": "optin",
        "optin": "optin",
        "unsubscribed": "unsubscribe",
        "unsubscribe": "unsubscribe",
    }
)

# Event types mapped by `type` rather than by name.
_TYPE_EVENTS: Final[Mapping[str, str]] = MappingProxyType(
    {"page": "viewed_page", "identify": "identify"}
)

_EMAIL_RE: Final = re.compile(r"[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+")
_NUMBER_RE: Final = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_NAME_STRIP_RE: Final = re.compile(r"[\s_\-]+")
_CAMEL_RE: Final = re.compile(r"([a-z0-9])([A-Z])")
# One capital before a capitalised word ("HTMLParser" -> "HTML_Parser"). A lookahead, not
# `([A-Z]+)([A-Z][a-z])`: that form rescans a run of capitals from every position, which is
# quadratic (a 10k-capital key took seconds).
_ACRONYM_RE: Final = re.compile(r"([A-Z])(?=[A-Z][a-z])")
_NON_ALNUM_RE: Final = re.compile(r"[^0-9A-Za-z]+")
_MAX_EMAIL_LENGTH: Final = 254
#: Trait keys longer than this are never customer attributes (and are not converted at all).
MAX_ATTRIBUTE_KEY: Final = 128
_MAX_EXACT_INT: Final = 2**53

# Text fields kept on a product, in body order, with the keys they are read from.
_PRODUCT_TEXT_BEFORE_NUMBERS: Final = (("name", ("name", "item_name")),)
_PRODUCT_TEXT_AFTER_NUMBERS: Final = (
    ("url", ("url",)),
    ("image", ("image_url", "image")),
    ("category", ("category", "item_category")),
    ("brand", ("brand", "item_brand")),
    ("variant", ("variant", "item_variant")),
)
_PRODUCT_TEXT_KEYS: Final = frozenset(
    key for _, keys in (*_PRODUCT_TEXT_BEFORE_NUMBERS, *_PRODUCT_TEXT_AFTER_NUMBERS) for key in keys
)
# GA4 items carry `item_id`; it is always tried after the configured id fields.
_GA4_ID_FIELD: Final = "item_id"


def _empty_event_map() -> Mapping[str, str | None]:
    return MappingProxyType({})


def normalise_event_name(name: str) -> str:
    """Lower-case `name` and remove whitespace, underscores and hyphens.

    `Order Completed`, `order_completed` and `ORDER-COMPLETED` all become `ordercompleted`.
    """
    return _NAME_STRIP_RE.sub("", name).lower()


#: Event names up to this long are normalised once each (the cache holds 1,024 of them).
_CACHED_NAME: Final = 128


@functools.lru_cache(maxsize=1024)  # event names repeat from event to event; bounded
def _normalised(name: str) -> str:
    return normalise_event_name(name)


@functools.lru_cache(maxsize=1024)  # trait names repeat from event to event; bounded
def snake_case(key: str) -> str:
    """Convert an attribute name to Bluecore's lowercase snake_case.

    `firstName`, `First Name`, `first-name` and `FIRST_NAME` all become `first_name`.
    """
    spaced = _ACRONYM_RE.sub(r"\1_", _CAMEL_RE.sub(r"\1_\2", key))
    return _NON_ALNUM_RE.sub("_", spaced).strip("_").lower()


@dataclass(frozen=True, slots=True)
class MappingRules:
    """Operator-configurable mapping settings. Construction normalises and validates them.

    There is no namespace here: the token is a credential of the HTTP edge, added by the
    upstream client when it serialises a body (see `bluecore_sidecar.wire`).
    """

    product_id_fields: tuple[str, ...] = ("product_id", "sku", "id")
    """Product keys tried in order for the Bluecore product `id` (then GA4 `item_id`)."""
    event_map: Mapping[str, str | None] = field(default_factory=_empty_event_map)
    """Overrides: Datafly name (or `page` / `identify`) -> Bluecore event, `None` to drop."""
    customer_attributes: tuple[str, ...] = ("first_name", "last_name")
    """Traits copied into `customer`, matched after conversion to snake_case."""
    max_purchase_products: int = 30
    """Most unique product ids in one purchase (and most requests one event fans out to)."""

    def __post_init__(self) -> None:
        if self.max_purchase_products < 1:
            raise ValueError("max_purchase_products must be at least 1")
        overrides: dict[str, str | None] = {}
        for name, target in self.event_map.items():
            key = normalise_event_name(name)
            if not key:
                raise ValueError("event_map has an empty event name")
            if target is not None and not target.strip():
                raise ValueError(f"event_map value for {name!r} must be an event name or null")
            overrides[key] = None if target is None else target.strip()
        ids = tuple(f.strip() for f in self.product_id_fields if f.strip())
        if any(len(a) > MAX_ATTRIBUTE_KEY for a in self.customer_attributes):
            raise ValueError(f"customer attribute names are at most {MAX_ATTRIBUTE_KEY} characters")
        attributes = tuple(dict.fromkeys(snake_case(a) for a in self.customer_attributes))
        object.__setattr__(self, "event_map", MappingProxyType(overrides))
        object.__setattr__(self, "product_id_fields", ids)
        object.__setattr__(
            self, "customer_attributes", tuple(a for a in attributes if a and a != "email")
        )


class BluecoreRequest(NamedTuple):
    """One POST to the Bluecore Events API (a named tuple, made per event: see ``dedup.Record``)."""

    event: str
    """Bluecore event name, e.g. `purchase`."""
    body: Mapping[str, Any]
    """The JSON body without `properties.token`. Only JSON types, every number finite."""
    encoded: wire.Encoded | None = None
    """`body` as JSON, kept from the validity check so that it is not encoded again to send."""


class _Reject(Exception):  # internal control flow, never leaves this module
    """Raised inside builders to abandon the event with a `Skip`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.skip = sk.skip(reason, detail)


# --- reading Struct values ------------------------------------------------------------------


#: A Struct's ``fields``: read once per event and passed around, since every access to
#: ``struct.fields`` (or to a sub-message) builds a new wrapper object.
Fields: TypeAlias = Mapping[str, struct_pb2.Value]


def _present(fields: Fields, key: str) -> struct_pb2.Value | None:
    """The value at `key` of a Struct's fields, or None when absent or JSON null.

    `.get`, never `[]`: indexing a protobuf map inserts the missing key.
    """
    value = fields.get(key)
    if value is None or value.WhichOneof("kind") in (None, "null_value"):
        return None
    return value


def _format_number(number: float) -> str:
    if number.is_integer() and abs(number) < _MAX_EXACT_INT:
        return str(int(number))
    return repr(number)


def _text(value: struct_pb2.Value | None) -> str | None:
    """A non-empty trimmed string, or a finite number rendered as text; else None."""
    if value is None:
        return None
    # A non-empty string_value can only be the set member of the oneof: most texts are
    # strings, and this spares them the WhichOneof call.
    text = value.string_value
    if text:
        return text.strip() or None
    if value.WhichOneof("kind") == "number_value" and math.isfinite(value.number_value):
        return _format_number(value.number_value)
    return None


def _first_text(fields: Fields, keys: Iterable[str]) -> str | None:
    for key in keys:  # _text answers None for a JSON null, as _present would
        value = fields.get(key)
        if value is not None and (text := _text(value)) is not None:
            return text
    return None


def _amount(value: struct_pb2.Value | None, path: str, key: str, reason: str) -> float | None:
    """A finite, non-negative number (numeric strings accepted); None when absent or blank.

    Raises `_Reject(reason)` for anything else. The detail names `path` + `key`, never the value.
    """
    if value is None:
        return None
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
    elif kind == "string_value":
        text = value.string_value.strip()
        if not text:
            return None
        if not _NUMBER_RE.fullmatch(text):
            raise _Reject(reason, f"{path}{key} is not a number")
        number = float(text)
    elif kind in (None, "null_value"):
        return None
    else:
        raise _Reject(reason, f"{path}{key} is not a number")
    if not math.isfinite(number):
        raise _Reject(reason, f"{path}{key} is not a finite number")
    if number < 0:
        raise _Reject(reason, f"{path}{key} is negative")
    return number


def _json_number(number: float) -> int | float:
    """Whole numbers become JSON integers (quantity 1, not 1.0)."""
    if number.is_integer() and abs(number) < _MAX_EXACT_INT:
        return int(number)
    return number


# --- identity -------------------------------------------------------------------------------


def _valid_email(value: struct_pb2.Value) -> str | None:
    if value.WhichOneof("kind") != "string_value":
        return None
    email = value.string_value.strip().lower()
    if len(email) > _MAX_EMAIL_LENGTH or not email.isprintable():
        return None
    return email if _EMAIL_RE.fullmatch(email) else None


#: Where an email is looked for, in order.
_EMAIL_PATHS: Final = ("traits.email", "context.traits.email", "properties.email")


def _find_email(
    traits: Fields, context_traits: Fields, properties: Fields
) -> tuple[str | None, str | None]:
    """(the email, None) or (None, the path of the first present but invalid email)."""
    invalid: str | None = None
    for path, fields in zip(_EMAIL_PATHS, (traits, context_traits, properties), strict=True):
        value = _present(fields, "email") if "email" in fields else None
        if value is None:
            continue
        email = _valid_email(value)
        if email is not None:
            return email, None
        if invalid is None:
            invalid = path
    return None, invalid


def extract_email(event: delivery_pb2.DataflyEvent) -> str | None:
    """The first valid email of `traits`, `context.traits`, `properties` (trimmed, lower-cased)."""
    fields = event.traits.fields, event.context.traits.fields, event.properties.fields
    return _find_email(*fields)[0]


def _attribute(value: struct_pb2.Value) -> JSON:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value.strip() or None
    if kind == "number_value" and math.isfinite(value.number_value):
        return _json_number(value.number_value)
    if kind == "bool_value":
        return value.bool_value
    return None  # objects, lists, null and non-finite numbers are not attributes


def _converted_key(fields: Fields, name: str) -> str | None:
    """The key of ``fields`` that becomes ``name`` in snake_case (the first in sort order).

    Keys longer than :data:`MAX_ATTRIBUTE_KEY` are not converted: no allow-listed name is that
    long, and the caller controls their length.
    """
    found = [key for key in fields if len(key) <= MAX_ATTRIBUTE_KEY and snake_case(key) == name]
    return min(found) if found else None


def _customer(
    sources: tuple[Fields, Fields], rules: MappingRules, email: str | None
) -> dict[str, JSON]:
    customer: dict[str, JSON] = {}
    if email is not None:
        customer["email"] = email
    if not rules.customer_attributes:
        return customer
    for name in rules.customer_attributes:
        for fields in sources:
            if not fields:
                continue
            # The key as it is wins; else a key that converts to it (`firstName`).
            value = fields.get(name)
            if value is None:
                key = _converted_key(fields, name)
                value = None if key is None else fields[key]
            attribute = None if value is None else _attribute(value)
            if attribute is not None:
                customer[name] = attribute
                break
    return customer


# --- products -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Product:
    id: str
    price: float | None
    quantity: float | None
    before: dict[str, str]
    after: dict[str, str]

    def render(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {"id": self.id}
        out.update(self.before)
        if self.price is not None:
            out["price"] = self.price
        if self.quantity is not None:
            out["quantity"] = _json_number(self.quantity)
        out.update(self.after)
        return out


def _id_fields(rules: MappingRules) -> tuple[str, ...]:
    return _with_ga4_id(rules.product_id_fields)


@functools.lru_cache(maxsize=16)  # one entry per configuration in practice
def _with_ga4_id(fields: tuple[str, ...]) -> tuple[str, ...]:
    return fields if _GA4_ID_FIELD in fields else (*fields, _GA4_ID_FIELD)


def _product(fields: Fields, rules: MappingRules, path: str) -> _Product | None:
    """The product described by a Struct's `fields`, or None when it has no id."""
    product_id = _first_text(fields, _id_fields(rules))
    if product_id is None:
        return None
    # Which of the text keys the product has at all: usually few or none of the eleven.
    present = _PRODUCT_TEXT_KEYS.intersection(fields)
    price = fields.get("price")
    quantity = fields.get("quantity")
    return _Product(
        id=product_id,
        price=None if price is None else _amount(price, path, ".price", sk.INVALID_PRICE),
        quantity=None
        if quantity is None
        else _amount(quantity, path, ".quantity", sk.INVALID_QUANTITY),
        before=_texts(fields, present, _PRODUCT_TEXT_BEFORE_NUMBERS) if present else {},
        after=_texts(fields, present, _PRODUCT_TEXT_AFTER_NUMBERS) if present else {},
    )


def _texts(
    fields: Fields,
    present: frozenset[str],
    table: tuple[tuple[str, tuple[str, ...]], ...],
) -> dict[str, str]:
    """The text fields of ``table`` a product has: the first usable key of each."""
    plan = _TEXT_PLANS.get((present, table))
    if plan is None:
        plan = _TEXT_PLANS[present, table] = _text_plan(present, table)
    found: dict[str, str] = {}
    for name, keys in plan:
        for key in keys:
            if (text := _text(fields.get(key))) is not None:
                found[name] = text
                break
    return found


#: The part of a text table that a product's set of present text keys can use, by that set
#: and table. Bounded by nature: the keys are subsets of the eleven of _PRODUCT_TEXT_KEYS.
_TEXT_PLANS: dict[
    tuple[frozenset[str], tuple[tuple[str, tuple[str, ...]], ...]],
    tuple[tuple[str, tuple[str, ...]], ...],
] = {}


def _text_plan(
    present: frozenset[str], table: tuple[tuple[str, tuple[str, ...]], ...]
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``table`` with only the keys in ``present``, and without names left with none."""
    plan = []
    for name, keys in table:
        usable = tuple(key for key in keys if key in present)
        if usable:
            plan.append((name, usable))
    return tuple(plan)


def _products(props: Fields, rules: MappingRules) -> list[_Product]:
    """Every product with an id, in order (not merged). Rejects when none is left."""
    for key in ("products", "items"):
        value = _present(props, key)
        if value is None:
            continue
        kind = value.WhichOneof("kind")
        if kind == "struct_value":
            entries: list[struct_pb2.Value] = [value]
        elif kind == "list_value":
            entries = list(value.list_value.values)
        else:
            raise _Reject(sk.INVALID_PRODUCTS, f"properties.{key} is not a list of products")
        if not entries:
            continue
        products: list[_Product] = []
        not_objects = 0
        for index, entry in enumerate(entries):
            if entry.WhichOneof("kind") != "struct_value":
                not_objects += 1
                continue
            product = _product(entry.struct_value.fields, rules, f"properties.{key}[{index}]")
            if product is not None:
                products.append(product)
        if not products:
            raise _Reject(
                sk.NO_VALID_PRODUCTS,
                f"none of the {len(entries)} entries of properties.{key} is a product with an id"
                f" ({not_objects} not objects; id fields tried: {_id_fields_text(rules)})",
            )
        return products
    product = _product(props, rules, "properties")
    if product is None:
        raise _Reject(
            sk.NO_VALID_PRODUCTS,
            f"no products or items, and the properties have no product id"
            f" (id fields tried: {_id_fields_text(rules)})",
        )
    return [product]


def _id_fields_text(rules: MappingRules) -> str:
    return ", ".join(_id_fields(rules))


def _merge(products: list[_Product]) -> list[_Product]:
    """One product per id, in first-seen order; quantities summed (missing counts as 1)."""
    if len({product.id for product in products}) == len(products):
        return products  # nothing to merge (the usual case); nobody changes them later
    merged: dict[str, _Product] = {}
    for product in products:
        first = merged.get(product.id)
        if first is None:
            merged[product.id] = _Product(
                id=product.id,
                price=product.price,
                quantity=product.quantity,
                before=dict(product.before),
                after=dict(product.after),
            )
            continue
        quantity = (first.quantity if first.quantity is not None else 1.0) + (
            product.quantity if product.quantity is not None else 1.0
        )
        if not math.isfinite(quantity):
            raise _Reject(sk.INVALID_QUANTITY, "the summed quantity of a product is not finite")
        first.quantity = quantity
        if first.price is None:
            first.price = product.price
        for name, text in product.before.items():
            first.before.setdefault(name, text)
        for name, text in product.after.items():
            first.after.setdefault(name, text)
    return list(merged.values())


def _limit(count: int, rules: MappingRules, what: str) -> None:
    if count > rules.max_purchase_products:
        raise _Reject(
            sk.TOO_MANY_PRODUCTS,
            f"{what} has {count} unique product ids; the limit is {rules.max_purchase_products}",
        )


# --- per-event builders: each returns the event-specific properties of every request ----------

_Extra: TypeAlias = dict[str, JSON]


def _build_page(
    event: delivery_pb2.DataflyEvent, props: Fields, _rules: MappingRules
) -> list[_Extra]:
    page = event.context.page
    url = _text(props.get("url")) or page.url.strip()
    title = _text(props.get("title")) or page.title.strip()
    if not url:
        raise _Reject(sk.MISSING_PAGE_URL, "neither properties.url nor context.page.url is set")
    extra: _Extra = {"url": url}
    if title:
        extra["title"] = title
    return [extra]


def _build_search(
    _event: delivery_pb2.DataflyEvent, props: Fields, _rules: MappingRules
) -> list[_Extra]:
    term = _first_text(props, ("query", "search_term", "keywords"))
    if term is None:
        raise _Reject(
            sk.MISSING_SEARCH_TERM, "none of properties.query, search_term, keywords is set"
        )
    return [{"search_term": term}]


def _build_one_product_each(
    _event: delivery_pb2.DataflyEvent, props: Fields, rules: MappingRules
) -> list[_Extra]:
    products = _merge(_products(props, rules))
    _limit(len(products), rules, "the event")
    return [{"products": [product.render()]} for product in products]


def _build_purchase(
    _event: delivery_pb2.DataflyEvent, props: Fields, rules: MappingRules
) -> list[_Extra]:
    order_id = _first_text(props, ("order_id", "transaction_id"))
    if order_id is None:
        raise _Reject(sk.MISSING_ORDER_ID, "properties.order_id is not set")
    lines = _products(props, rules)
    products = _merge(lines)
    _limit(len(products), rules, "the purchase")
    total = _total(props, lines)
    return [
        {
            "order_id": order_id,
            "total": total,
            "products": [product.render() for product in products],
        }
    ]


def _total(props: Fields, lines: list[_Product]) -> float:
    """`total`, else `revenue`, else `value`, else the sum of price x quantity of the lines."""
    for key in ("total", "revenue", "value"):
        amount = _amount(props.get(key), "properties.", key, sk.INVALID_TOTAL)
        if amount is not None:
            return amount
    total = 0.0
    for line in lines:
        if line.price is None:
            raise _Reject(
                sk.MISSING_TOTAL,
                "no properties.total, revenue or value, and a product has no price to sum",
            )
        total += line.price * (line.quantity if line.quantity is not None else 1.0)
    if not math.isfinite(total):
        raise _Reject(sk.INVALID_TOTAL, "the sum of price x quantity is not finite")
    # Sums of binary floats pick up noise (0.1 * 3 = 0.30000000000000004); no currency needs
    # more than six decimals.
    return round(total, 6)


def _build_nothing(
    _event: delivery_pb2.DataflyEvent, _props: Fields, _rules: MappingRules
) -> list[_Extra]:
    return [{}]


@dataclass(frozen=True, slots=True)
class _EventSpec:
    needs_email: bool
    build: Callable[[delivery_pb2.DataflyEvent, Fields, MappingRules], list[_Extra]]


_SPECS: Final[Mapping[str, _EventSpec]] = MappingProxyType(
    {
        "viewed_page": _EventSpec(needs_email=False, build=_build_page),
        "viewed_product": _EventSpec(needs_email=False, build=_build_one_product_each),
        "search": _EventSpec(needs_email=False, build=_build_search),
        "add_to_cart": _EventSpec(needs_email=False, build=_build_one_product_each),
        "remove_from_cart": _EventSpec(needs_email=False, build=_build_one_product_each),
        "wishlist": _EventSpec(needs_email=False, build=_build_one_product_each),
        "purchase": _EventSpec(needs_email=True, build=_build_purchase),
        "optin": _EventSpec(needs_email=True, build=_build_nothing),
        "unsubscribe": _EventSpec(needs_email=True, build=_build_nothing),
        "identify": _EventSpec(needs_email=True, build=_build_nothing),
    }
)
# Operator overrides may name Bluecore events this table does not know (custom events): they
# get the identity properties only.
_GENERIC_SPEC: Final = _EventSpec(needs_email=False, build=_build_nothing)

#: Bluecore events with a dedicated builder. Others (from overrides) carry identity only.
KNOWN_BLUECORE_EVENTS: Final = frozenset(_SPECS)


# --- public entry points --------------------------------------------------------------------


def resolve_event(event: delivery_pb2.DataflyEvent, rules: MappingRules) -> tuple[str, str] | Skip:
    """(Datafly label, Bluecore event), or a SKIPPED_UNMAPPED `Skip` saying why not.

    The label is the track event name (trimmed) or the type (`page`, `identify`). An empty
    `type` with a non-empty `event` is treated as `track`. Operator overrides in
    `rules.event_map` are looked up by the normalised label before the built-in table.
    """
    kind = event.type.strip().lower()
    name = event.event.strip()
    if not kind and name:
        kind = "track"
    if kind == "track":
        if not name:
            return sk.skip(sk.MISSING_EVENT_NAME, "track event has an empty event name")
        label = name
        key = _normalised(name) if len(name) <= _CACHED_NAME else normalise_event_name(name)
        default = _TRACK_ALIASES.get(key)
    elif kind in _TYPE_EVENTS:
        label = key = kind  # `page` and `identify` are their own normalised names
        default = _TYPE_EVENTS[kind]
    else:
        detail = "event type is empty" if not kind else "event type is not track, page or identify"
        return Skip(sk.UNMAPPED, sk.UNSUPPORTED_TYPE, detail, datafly_event=event.type.strip())
    if key in rules.event_map:
        target = rules.event_map[key]
        if target is None:
            return Skip(
                sk.UNMAPPED, sk.EVENT_DISABLED, "the configured event map drops this event", label
            )
        return label, target
    if default is None:
        return Skip(
            sk.UNMAPPED, sk.UNMAPPED_EVENT, "no Bluecore event is mapped to this event name", label
        )
    return label, default


def resolve_bluecore_event(
    event: delivery_pb2.DataflyEvent, rules: MappingRules
) -> tuple[str, str | None]:
    """(Datafly label, Bluecore event or None when the event is not mapped)."""
    resolved = resolve_event(event, rules)
    if isinstance(resolved, Skip):
        return resolved.datafly_event, None
    return resolved


def build_requests(
    event: delivery_pb2.DataflyEvent, bluecore_event: str, rules: MappingRules
) -> tuple[BluecoreRequest, ...] | Skip:
    """The Bluecore requests for `event`, or a REJECTED_INVALID `Skip`.

    Every body is `{"event": ..., "properties": {"distinct_id", ["customer"], ...}}`; the
    upstream client adds `properties.token` when it sends.
    Checks run in this order: identity, email (for the events that need one), then the
    event's own fields. Returns one request, or one per product for single-product events.
    """
    traits, context_traits = event.traits.fields, event.context.traits.fields
    props = event.properties.fields
    email, invalid_path = _find_email(traits, context_traits, props)
    anonymous_id = event.anonymous_id.strip()
    if email is None:
        why_no_email = f"{invalid_path} is not a valid email" if invalid_path else "no email is set"
        if not anonymous_id:
            return sk.skip(sk.MISSING_IDENTITY, f"no anonymous id and {why_no_email}")
    spec = _SPECS.get(bluecore_event, _GENERIC_SPEC)
    if spec.needs_email and email is None:
        return sk.skip(sk.MISSING_EMAIL, f"{bluecore_event} needs an email: {why_no_email}")
    # identify links the anonymous id to the email; every other event is keyed on the email.
    identify = bluecore_event == "identify"
    distinct_id = (anonymous_id or email) if identify else (email or anonymous_id)
    try:
        extras = spec.build(event, props, rules)
    except _Reject as reject:
        return reject.skip

    customer = _customer((traits, context_traits), rules, email)
    requests = []
    for extra in extras:
        properties: dict[str, JSON] = {"distinct_id": distinct_id}
        if customer:
            properties["customer"] = dict(customer)  # a copy per request: bodies never alias
        properties.update(extra)
        try:
            encoded = wire.encode_request(bluecore_event, properties)
        except ValueError:  # a non-finite number slipped through; never send invalid JSON
            return sk.skip(sk.INVALID_BODY, "the body contains a value that is not valid JSON")
        built: dict[str, JSON] = {"event": bluecore_event, "properties": properties}
        requests.append(BluecoreRequest(bluecore_event, built, encoded))  # positional: cheaper
    return tuple(requests)
