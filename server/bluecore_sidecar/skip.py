"""The `Skip` outcome and its reason codes, shared by mapping, gates and decision.

It lives in its own tiny module so that `mapping.py` and `gates.py` can return skips while
`decision.py` imports both of them, without an import cycle. `decision.py` re-exports `Skip`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from datafly.bluecore.v1 import delivery_pb2

# Status shorthands, so the pure core reads as a table.
UNMAPPED: Final = delivery_pb2.DELIVERY_STATUS_SKIPPED_UNMAPPED
NO_CONSENT: Final = delivery_pb2.DELIVERY_STATUS_SKIPPED_NO_CONSENT
STALE: Final = delivery_pb2.DELIVERY_STATUS_SKIPPED_STALE
INVALID: Final = delivery_pb2.DELIVERY_STATUS_REJECTED_INVALID
DUPLICATE: Final = delivery_pb2.DELIVERY_STATUS_SKIPPED_DUPLICATE
QUEUED: Final = delivery_pb2.DELIVERY_STATUS_QUEUED
RETRYABLE: Final = delivery_pb2.DELIVERY_STATUS_FAILED_RETRYABLE
PERMANENT: Final = delivery_pb2.DELIVERY_STATUS_FAILED_PERMANENT

# Reason codes (UPPER_SNAKE). Each one is documented in `REASONS` below.
MISSING_MESSAGE_ID: Final = "MISSING_MESSAGE_ID"
MESSAGE_ID_TOO_LONG: Final = "MESSAGE_ID_TOO_LONG"
DUPLICATE_MESSAGE_ID: Final = "DUPLICATE_MESSAGE_ID"
EVENT_TOO_LARGE: Final = "EVENT_TOO_LARGE"
UNSUPPORTED_TYPE: Final = "UNSUPPORTED_TYPE"
MISSING_EVENT_NAME: Final = "MISSING_EVENT_NAME"
UNMAPPED_EVENT: Final = "UNMAPPED_EVENT"
EVENT_DISABLED: Final = "EVENT_DISABLED"
NO_MARKETING_CONSENT: Final = "NO_MARKETING_CONSENT"
CONSENT_UNKNOWN: Final = "CONSENT_UNKNOWN"
STALE_EVENT: Final = "STALE_EVENT"
MISSING_IDENTITY: Final = "MISSING_IDENTITY"
MISSING_EMAIL: Final = "MISSING_EMAIL"
MISSING_PAGE_URL: Final = "MISSING_PAGE_URL"
MISSING_SEARCH_TERM: Final = "MISSING_SEARCH_TERM"
INVALID_PRODUCTS: Final = "INVALID_PRODUCTS"
NO_VALID_PRODUCTS: Final = "NO_VALID_PRODUCTS"
INVALID_PRICE: Final = "INVALID_PRICE"
INVALID_QUANTITY: Final = "INVALID_QUANTITY"
TOO_MANY_PRODUCTS: Final = "TOO_MANY_PRODUCTS"
MISSING_ORDER_ID: Final = "MISSING_ORDER_ID"
INVALID_TOTAL: Final = "INVALID_TOTAL"
MISSING_TOTAL: Final = "MISSING_TOTAL"
INVALID_BODY: Final = "INVALID_BODY"
MAPPING_ERROR: Final = "MAPPING_ERROR"
# The durable queue's codes (with a queue only; see docs/architecture-queue.md).
QUEUE_FULL: Final = "QUEUE_FULL"
ALREADY_QUEUED: Final = "ALREADY_QUEUED"
CUSTOMER_BUSY: Final = "CUSTOMER_BUSY"
EXPIRED: Final = "EXPIRED"
AUTH: Final = "AUTH"

#: Every reason code the pure core can produce, with its status and meaning.
REASONS: Final[dict[str, tuple[int, str]]] = {
    MISSING_MESSAGE_ID: (INVALID, "message_id is empty or blank: it is the idempotency key"),
    MESSAGE_ID_TOO_LONG: (INVALID, "message_id is longer than the limit (256 characters)"),
    DUPLICATE_MESSAGE_ID: (DUPLICATE, "the message_id was delivered (or is in flight) already"),
    EVENT_TOO_LARGE: (INVALID, "the serialised event is larger than the configured limit"),
    UNSUPPORTED_TYPE: (UNMAPPED, "the event type is not track, page or identify"),
    MISSING_EVENT_NAME: (UNMAPPED, "a track event has an empty event name"),
    UNMAPPED_EVENT: (UNMAPPED, "the event name has no Bluecore counterpart"),
    EVENT_DISABLED: (UNMAPPED, "the operator's event map drops this event (null)"),
    NO_MARKETING_CONSENT: (NO_CONSENT, "the consent category is present and false"),
    CONSENT_UNKNOWN: (NO_CONSENT, "the consent category is absent and the default is deny"),
    STALE_EVENT: (STALE, "the event timestamp is older than the maximum age"),
    MISSING_IDENTITY: (INVALID, "no valid email and no anonymous id"),
    MISSING_EMAIL: (INVALID, "purchase, optin, unsubscribe and identify need a valid email"),
    MISSING_PAGE_URL: (INVALID, "a page view has no url in properties or context.page"),
    MISSING_SEARCH_TERM: (INVALID, "a search has no query, search_term or keywords"),
    INVALID_PRODUCTS: (INVALID, "products or items is not a list (or object) of products"),
    NO_VALID_PRODUCTS: (INVALID, "a product event has no product with an id"),
    INVALID_PRICE: (INVALID, "a price is not a finite, non-negative number"),
    INVALID_QUANTITY: (INVALID, "a quantity is not a finite, non-negative number"),
    TOO_MANY_PRODUCTS: (INVALID, "more unique product ids than the limit (30)"),
    MISSING_ORDER_ID: (INVALID, "a purchase has no order_id (or transaction_id)"),
    INVALID_TOTAL: (INVALID, "total/revenue/value is not a finite, non-negative number"),
    MISSING_TOTAL: (INVALID, "no total/revenue/value and a product has no price to sum"),
    INVALID_BODY: (INVALID, "the built body is not valid JSON (a non-finite number)"),
    MAPPING_ERROR: (INVALID, "an unexpected error in the mapper (a bug; never expected)"),
    QUEUE_FULL: (
        RETRYABLE,
        "the durable queue is at SIDECAR_QUEUE_MAX_EVENTS/_BYTES, or its disk refused the write",
    ),
    ALREADY_QUEUED: (QUEUED, "the message_id is waiting in the durable queue; not queued twice"),
    CUSTOMER_BUSY: (
        RETRYABLE,
        "DIRECT mode: earlier queued events of the same customer did not leave before the deadline",
    ),
    EXPIRED: (RETRYABLE, "dead letter: the event passed the maximum age before it was delivered"),
    AUTH: (PERMANENT, "dead letter: Bluecore answered 401/403; replay once the token is fixed"),
}


@dataclass(frozen=True, slots=True)
class Skip:
    """An event that is not sent, and why.

    `detail` is for people and never carries the namespace token, an email or any property
    value: it names fields ("traits.email is not a valid email"), never their contents.
    """

    status: int
    """A `delivery_pb2.DeliveryStatus` value."""
    reason: str
    """Machine-readable UPPER_SNAKE code, one of `REASONS`."""
    detail: str
    """Human-readable explanation without PII."""
    datafly_event: str = ""
    """The Datafly event label (event name, or `page` / `identify`), when known."""
    bluecore_event: str = ""
    """The Bluecore event it mapped to, when known."""


def skip(reason: str, detail: str) -> Skip:
    """Build a `Skip` whose status is the one registered for `reason`."""
    return Skip(status=REASONS[reason][0], reason=reason, detail=detail)
