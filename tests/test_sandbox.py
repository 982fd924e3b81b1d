"""The fake Bluecore Events API answers, records and misbehaves as documented."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import pytest
from bluecore_devtools.sandbox import BluecoreSandbox, run_sandbox
from multidict import CIMultiDictProxy

from .conftest import EMAIL

TOKEN = "bluestore"
SHORT_TIMEOUT = aiohttp.ClientTimeout(total=0.3)


def body(event: str, **properties: Any) -> dict[str, Any]:
    """A valid-looking Events API body for ``event`` with extra ``properties``."""
    return {"event": event, "properties": {"token": TOKEN, "distinct_id": EMAIL, **properties}}


CUSTOMER = {"email": EMAIL}
PRODUCT = {"id": "SKU123", "price": 39.9, "quantity": 1}

VALID_EVENTS = {
    "viewed_page": body("viewed_page", url="https://shop.example/", title="Home"),
    "viewed_product": body("viewed_product", products=[PRODUCT]),
    "search": body("search", search_term="red shoes"),
    "add_to_cart": body("add_to_cart", products=[PRODUCT]),
    "remove_from_cart": body("remove_from_cart", products=[{"id": "SKU123"}]),
    "wishlist": body("wishlist", products=[{"id": 123}]),
    "purchase": body(
        "purchase",
        customer=CUSTOMER,
        order_id="ORD-1001",
        total=49.9,
        products=[PRODUCT, {"id": "SKU456", "price": 10.0, "quantity": 1}],
    ),
    "optin": body("optin", customer={"email": EMAIL, "first_name": "Jane"}),
    "unsubscribe": body("unsubscribe", customer=CUSTOMER),
    "identify": {
        "event": "identify",
        "properties": {"token": TOKEN, "distinct_id": "anon-42", "customer": CUSTOMER},
    },
}


@pytest.fixture
def sandbox_tokens() -> list[str] | None:
    """The fake's own default for these tests: any token is accepted (``None``)."""
    return None


ONLY_OUR_TOKEN = pytest.mark.parametrize("sandbox_tokens", [[TOKEN]], ids=["only-bluestore"])


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def post(
    session: aiohttp.ClientSession, url: str, payload: Any, **kwargs: Any
) -> tuple[int, Any, CIMultiDictProxy[str]]:
    """POST ``payload`` as JSON; returns (status, decoded JSON body, headers)."""
    async with session.post(url, json=payload, **kwargs) as response:
        return response.status, await response.json(), response.headers


async def control(
    session: aiohttp.ClientSession, sandbox: BluecoreSandbox, method: str, path: str, **kw: Any
) -> tuple[int, Any]:
    async with session.request(method, f"{sandbox.base_url}/_sandbox/{path}", **kw) as response:
        return response.status, await response.json()


# -- valid events ---------------------------------------------------------------------------


def test_url_points_at_the_events_path_of_the_bound_port(sandbox: BluecoreSandbox) -> None:
    assert sandbox.base_url.startswith("http://127.0.0.1:")
    assert not sandbox.base_url.endswith(":0")
    assert sandbox.url == sandbox.base_url + "/api/track/mobile/v1"


@pytest.mark.parametrize("event", sorted(VALID_EVENTS))
async def test_valid_event_is_accepted_and_recorded(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession, event: str
) -> None:
    status, answer, _ = await post(session, sandbox.url, VALID_EVENTS[event])

    assert (status, answer) == (202, {"status": "accepted"})
    [record] = sandbox.received
    assert record.method == "POST"
    assert record.path == "/api/track/mobile/v1"
    assert record.headers["content-type"] == "application/json"
    assert record.body == VALID_EVENTS[event]
    assert record.event == event
    assert record.status == 202
    assert record.faults == ()


async def test_purchase_counts_unique_product_ids_against_the_limit_of_30(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    """31 lines naming 30 distinct ids are fine; 31 distinct ids are not."""
    thirty = [{"id": f"SKU{i}"} for i in range(30)]
    repeated = body("purchase", customer=CUSTOMER, order_id="O1", products=[*thirty, thirty[0]])
    too_many = body("purchase", customer=CUSTOMER, order_id="O2", products=[*thirty, {"id": "X"}])

    assert (await post(session, sandbox.url, repeated))[0] == 202
    status, answer, _ = await post(session, sandbox.url, too_many)
    assert (status, answer["error"]) == (400, "too_many_products")


# -- rejected events ------------------------------------------------------------------------

INVALID_BODIES = {
    "array_body": ([VALID_EVENTS["search"]], "invalid_body"),
    "missing_properties": ({"event": "search"}, "missing_properties"),
    "properties_not_object": ({"event": "search", "properties": []}, "missing_properties"),
    "missing_event": ({"properties": {"token": TOKEN, "distinct_id": "a"}}, "missing_event"),
    "empty_event": (body(" ", search_term="x"), "missing_event"),
    "missing_distinct_id": (
        {"event": "viewed_page", "properties": {"token": TOKEN}},
        "missing_distinct_id",
    ),
    "empty_distinct_id": (body("viewed_page", distinct_id=""), "missing_distinct_id"),
    "purchase_without_order_id": (
        body("purchase", customer=CUSTOMER, products=[PRODUCT]),
        "missing_order_id",
    ),
    "purchase_without_products": (
        body("purchase", customer=CUSTOMER, order_id="O1"),
        "missing_products",
    ),
    "purchase_without_email": (
        body("purchase", order_id="O1", products=[PRODUCT]),
        "missing_email",
    ),
    "add_to_cart_with_two_products": (
        body("add_to_cart", products=[PRODUCT, {"id": "SKU456"}]),
        "too_many_products",
    ),
    "viewed_product_without_product_id": (
        body("viewed_product", products=[{"name": "Shoe"}]),
        "missing_product_id",
    ),
    "remove_from_cart_without_products": (body("remove_from_cart"), "missing_products"),
    "wishlist_with_empty_product_id": (
        body("wishlist", products=[{"id": ""}]),
        "missing_product_id",
    ),
    "search_without_search_term": (body("search"), "missing_search_term"),
    "optin_without_email": (body("optin", customer={"first_name": "Jane"}), "missing_email"),
    "unsubscribe_without_customer": (body("unsubscribe"), "missing_email"),
    "identify_with_invalid_email": (body("identify", customer={"email": "jane"}), "missing_email"),
    "camel_case_customer_attribute": (
        body("optin", customer={"email": EMAIL, "firstName": "Jane"}),
        "invalid_customer_attribute",
    ),
    "customer_not_object": (body("viewed_page", customer="jane"), "invalid_customer"),
}


@pytest.mark.parametrize("case", sorted(INVALID_BODIES))
async def test_invalid_event_is_rejected_with_400(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession, case: str
) -> None:
    payload, code = INVALID_BODIES[case]

    status, answer, _ = await post(session, sandbox.url, payload)

    assert (status, answer["error"]) == (400, code)
    assert EMAIL not in answer["message"]
    assert [record.status for record in sandbox.received] == [400]


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"event": NaN}', b"\xff\xfe{"])
async def test_body_that_is_not_json_is_rejected_with_400(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession, raw: bytes
) -> None:
    headers = {"Content-Type": "application/json"}
    async with session.post(sandbox.url, data=raw, headers=headers) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "invalid_json"
    assert sandbox.received[0].body is None


@pytest.mark.parametrize("token", [None, "", "  "])
async def test_missing_or_empty_token_is_401(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession, token: str | None
) -> None:
    payload = body("viewed_page")
    if token is None:
        del payload["properties"]["token"]
    else:
        payload["properties"]["token"] = token

    status, answer, _ = await post(session, sandbox.url, payload)

    assert (status, answer["error"]) == (401, "missing_token")


@ONLY_OUR_TOKEN
async def test_only_configured_tokens_are_accepted(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    good = await post(session, sandbox.url, body("viewed_page"))
    bad = await post(session, sandbox.url, body("viewed_page", token="otherstore"))

    assert good[0] == 202
    assert (bad[0], bad[1]["error"]) == (403, "unknown_token")
    assert "otherstore" not in bad[1]["message"]


@ONLY_OUR_TOKEN
async def test_configured_token_status_wins_over_the_accepted_token_check(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.set_token_status("otherstore", 429)
    status, answer, _ = await post(session, sandbox.url, body("viewed_page", token="otherstore"))

    assert (status, answer["error"]) == (429, "token_status")


async def test_body_over_one_mebibyte_is_413(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    payload = body("viewed_page", padding="x" * (1024 * 1024))
    data = io.BytesIO(json.dumps(payload).encode())
    headers = {"Content-Type": "application/json"}

    async with session.post(sandbox.url, data=data, headers=headers) as response:
        assert response.status == 413
        assert (await response.json())["error"] == "payload_too_large"
    # The connection is still usable afterwards.
    assert (await post(session, sandbox.url, body("viewed_page")))[0] == 202


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_non_json_content_type_is_415(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession, content_type: str
) -> None:
    data = json.dumps(VALID_EVENTS["viewed_page"])
    async with session.post(sandbox.url, data=data, headers={"Content-Type": content_type}) as resp:
        assert resp.status == 415
        assert (await resp.json())["error"] == "unsupported_media_type"
    assert sandbox.received[0].body == VALID_EVENTS["viewed_page"]


async def test_get_on_the_events_path_is_405_and_recorded(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    async with session.get(sandbox.url) as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
    assert [(r.method, r.status) for r in sandbox.received] == [("GET", 405)]


# -- faults, from Python --------------------------------------------------------------------


async def test_fail_next_three_503_then_accepts(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.fail_next(3, status=503)

    statuses = [(await post(session, sandbox.url, body("viewed_page")))[0] for _ in range(4)]

    assert statuses == [503, 503, 503, 202]
    assert [r.faults for r in sandbox.received] == [("fail",)] * 3 + [()]


async def test_429_with_retry_after_in_seconds(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.fail_next(1, status=429, retry_after=2)

    status, answer, headers = await post(session, sandbox.url, body("viewed_page"))

    assert (status, headers["Retry-After"], answer["error"]) == (429, "2", "injected_fault")


async def test_429_with_retry_after_as_a_fixed_http_date(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.fail_next(1, status=429, retry_after=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))

    status, _, headers = await post(session, sandbox.url, body("viewed_page"))

    assert (status, headers["Retry-After"]) == (429, "Wed, 02 Jan 2030 03:04:05 GMT")


async def test_429_with_retry_after_as_an_http_date_relative_to_the_answer(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.fail_next(1, status=429, retry_after=timedelta(seconds=5))
    before = datetime.now(UTC)

    status, _, headers = await post(session, sandbox.url, body("viewed_page"))

    assert status == 429
    assert headers["Retry-After"].endswith(" GMT")
    assert parsedate_to_datetime(headers["Retry-After"]) >= before + timedelta(seconds=5)


async def test_failures_queue_in_the_order_they_were_added(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.fail_next(1, status=503)
    sandbox.fail_next(2, status=429, retry_after=1)

    results = [await post(session, sandbox.url, body("viewed_page")) for _ in range(4)]

    assert [status for status, _, _ in results] == [503, 429, 429, 202]
    assert "Retry-After" not in results[0][2]


async def test_an_injected_failure_answers_even_an_invalid_request(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.fail_next(1, status=500)

    status, _, _ = await post(session, sandbox.url, {"not": "an event"})

    assert status == 500
    assert (await post(session, sandbox.url, {"not": "an event"}))[0] == 400


async def test_delayed_answer_outlasts_a_short_client_timeout(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    """A stalled upstream makes the client time out; once the count is used up it answers."""
    sandbox.delay(30, count=1)

    with pytest.raises(asyncio.TimeoutError):
        await post(session, sandbox.url, body("viewed_page"), timeout=SHORT_TIMEOUT)
    status, _, _ = await post(session, sandbox.url, body("viewed_page"), timeout=SHORT_TIMEOUT)

    assert status == 202
    assert sandbox.received[0].faults == ("delay",)
    assert sandbox.faults()["delay"] is None


async def test_delay_without_count_lasts_until_removed(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.delay(30)
    for _ in range(2):
        with pytest.raises(asyncio.TimeoutError):
            await post(session, sandbox.url, body("viewed_page"), timeout=SHORT_TIMEOUT)

    sandbox.delay(0)

    assert (await post(session, sandbox.url, body("viewed_page"), timeout=SHORT_TIMEOUT))[0] == 202


async def test_reset_next_drops_the_connection_without_an_answer(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.reset_next(1)

    with pytest.raises(aiohttp.ClientConnectionError):
        await post(session, sandbox.url, body("viewed_page"))
    status, _, _ = await post(session, sandbox.url, body("viewed_page"))

    assert status == 202
    assert [(r.status, r.faults) for r in sandbox.received] == [(None, ("reset",)), (202, ())]


async def test_reset_comes_before_a_queued_failure(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.fail_next(1, status=503)
    sandbox.reset_next(1)

    with pytest.raises(aiohttp.ClientConnectionError):
        await post(session, sandbox.url, body("viewed_page"))
    statuses = [(await post(session, sandbox.url, body("viewed_page")))[0] for _ in range(2)]

    assert statuses == [503, 202]


async def test_token_status_answers_requests_carrying_that_token(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.set_token_status("revoked", 403)

    revoked = await post(session, sandbox.url, body("viewed_page", token="revoked"))
    other = await post(session, sandbox.url, body("viewed_page"))
    sandbox.set_token_status("revoked", None)
    restored = await post(session, sandbox.url, body("viewed_page", token="revoked"))

    assert (revoked[0], revoked[1]["error"]) == (403, "token_status")
    assert "revoked" not in revoked[1]["message"]
    assert (other[0], restored[0]) == (202, 202)
    assert sandbox.received[0].faults == ("token_status",)


async def test_clear_removes_faults_and_the_record(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    await post(session, sandbox.url, body("viewed_page"))
    sandbox.fail_next(1)
    sandbox.reset_next(1)
    sandbox.delay(30)
    sandbox.set_token_status(TOKEN, 401)

    sandbox.clear()

    assert sandbox.received == []
    assert (await post(session, sandbox.url, body("viewed_page"), timeout=SHORT_TIMEOUT))[0] == 202


async def test_record_keeps_only_the_most_recent_requests(session: aiohttp.ClientSession) -> None:
    async with run_sandbox(max_records=3) as sandbox:
        for i in range(5):
            await post(session, sandbox.url, body("search", search_term=f"q{i}"))

        terms = [r.body["properties"]["search_term"] for r in sandbox.received]

    assert terms == ["q2", "q3", "q4"]


@pytest.mark.parametrize(
    "configure",
    [
        lambda s: s.fail_next(-1),
        lambda s: s.fail_next(1, status=99),
        lambda s: s.fail_next(1, retry_after=-1),
        lambda s: s.delay(-1),
        lambda s: s.delay(float("nan")),
        lambda s: s.reset_next(-2),
        lambda s: s.set_token_status("", 403),
        lambda s: s.answer_next(1),
        lambda s: s.answer_next(1, text="x", size=1),
        lambda s: s.answer_next(1, size=-1),
    ],
)
def test_nonsensical_fault_settings_are_refused(configure: Any) -> None:
    with pytest.raises(ValueError, match="must"):
        configure(BluecoreSandbox())


async def test_logs_contain_neither_token_nor_email(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sandbox.fail_next(1)
    sandbox.set_token_status("secret-namespace", 500)

    await post(session, sandbox.url, VALID_EVENTS["purchase"])
    await post(session, sandbox.url, VALID_EVENTS["purchase"])
    await post(session, sandbox.url, body("optin", token="secret-namespace", customer=CUSTOMER))
    await post(session, sandbox.url, body("optin", customer={"email": EMAIL, "BadName": 1}))

    assert TOKEN not in caplog.text
    assert "secret-namespace" not in caplog.text
    assert EMAIL not in caplog.text


# -- faults and record over the control API -------------------------------------------------


async def test_health_reports_record_size_and_faults(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    await post(session, sandbox.url, body("viewed_page"))
    sandbox.reset_next(2)

    status, health = await control(session, sandbox, "GET", "health")

    assert status == 200
    assert health == {
        "status": "ok",
        "received": 1,
        "faults": {"fail": [], "delay": None, "reset": 2, "token_status": {}},
    }


async def test_http_fail_fault_answers_503_with_retry_after(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    spec = {"kind": "fail", "count": 2, "status": 503, "retry_after": 1}
    status, answer = await control(session, sandbox, "POST", "faults", json=spec)
    assert status == 200
    assert answer["faults"]["fail"] == [{"status": 503, "remaining": 2, "retry_after": 1}]

    results = [await post(session, sandbox.url, body("viewed_page")) for _ in range(3)]

    assert [(s, h.get("Retry-After")) for s, _, h in results] == [
        (503, "1"),
        (503, "1"),
        (202, None),
    ]


async def test_http_fail_fault_with_relative_and_verbatim_retry_after(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    relative = {"kind": "fail", "status": 429, "retry_after": {"http_date_in": 3}}
    verbatim = {"kind": "fail", "status": 429, "retry_after": "Wed, 02 Jan 2030 03:04:05 GMT"}
    await control(session, sandbox, "POST", "faults", json=relative)
    await control(session, sandbox, "POST", "faults", json=verbatim)
    before = datetime.now(UTC)

    first = await post(session, sandbox.url, body("viewed_page"))
    second = await post(session, sandbox.url, body("viewed_page"))

    assert first[0] == second[0] == 429
    assert parsedate_to_datetime(first[2]["Retry-After"]) >= before + timedelta(seconds=3)
    assert second[2]["Retry-After"] == "Wed, 02 Jan 2030 03:04:05 GMT"


async def test_http_delay_fault_stalls_the_next_answer(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    spec = {"kind": "delay", "seconds": 30, "count": 1}
    status, answer = await control(session, sandbox, "POST", "faults", json=spec)
    assert (status, answer["faults"]["delay"]) == (200, {"seconds": 30.0, "remaining": 1})

    with pytest.raises(asyncio.TimeoutError):
        await post(session, sandbox.url, body("viewed_page"), timeout=SHORT_TIMEOUT)
    assert (await post(session, sandbox.url, body("viewed_page"), timeout=SHORT_TIMEOUT))[0] == 202


async def test_http_reset_fault_drops_the_connection(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    await control(session, sandbox, "POST", "faults", json={"kind": "reset", "count": 1})

    with pytest.raises(aiohttp.ClientConnectionError):
        await post(session, sandbox.url, body("viewed_page"))
    assert (await post(session, sandbox.url, body("viewed_page")))[0] == 202


async def test_http_token_status_fault_and_its_removal(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    spec = {"kind": "token_status", "token": TOKEN, "status": 401}
    await control(session, sandbox, "POST", "faults", json=spec)
    refused = await post(session, sandbox.url, body("viewed_page"))

    await control(session, sandbox, "POST", "faults", json={**spec, "status": None})
    accepted = await post(session, sandbox.url, body("viewed_page"))

    assert (refused[0], accepted[0]) == (401, 202)


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "explode"},
        {"kind": "fail", "count": "3"},
        {"kind": "fail", "status": 42},
        {"kind": "fail", "retry_after": 1.5},
        {"kind": "fail", "retry_after": {"when": 3}},
        {"kind": "delay"},
        {"kind": "delay", "seconds": -1},
        {"kind": "reset", "count": True},
        {"kind": "token_status", "status": 403},
        {"kind": "body"},
        {"kind": "body", "text": "x", "endless": True},
        {"kind": "body", "size": "1"},
        {"kind": "body", "text": 3},
        {"kind": "body", "endless": "yes"},
        ["not", "an", "object"],
    ],
)
async def test_http_invalid_fault_is_400_and_changes_nothing(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession, spec: Any
) -> None:
    status, answer = await control(session, sandbox, "POST", "faults", json=spec)

    assert (status, answer["error"]) == (400, "invalid_fault")
    assert (await post(session, sandbox.url, body("viewed_page")))[0] == 202


async def test_http_received_lists_records_and_filters_by_event(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    await post(session, sandbox.url, VALID_EVENTS["search"])
    await post(session, sandbox.url, VALID_EVENTS["optin"])
    await post(session, sandbox.url, body("search"))

    _, everything = await control(session, sandbox, "GET", "received")
    _, searches = await control(session, sandbox, "GET", "received", params={"event": "search"})

    assert [r["body"]["event"] for r in everything] == ["search", "optin", "search"]
    assert [r["status"] for r in searches] == [202, 400]
    first = searches[0]
    assert first["method"] == "POST"
    assert first["path"] == "/api/track/mobile/v1"
    assert first["headers"]["Content-Type"] == "application/json"
    assert first["body"] == VALID_EVENTS["search"]
    assert first["faults"] == []
    assert isinstance(first["received_at"], float)


async def test_http_delete_received_empties_the_record(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    await post(session, sandbox.url, body("viewed_page"))
    await post(session, sandbox.url, body("viewed_page"))

    status, answer = await control(session, sandbox, "DELETE", "received")

    assert (status, answer) == (200, {"cleared": 2})
    assert (await control(session, sandbox, "GET", "received"))[1] == []


async def test_http_get_and_delete_faults(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    """GET /_sandbox/faults lists every queued fault; DELETE clears them all, so the next
    event is accepted at once."""
    sandbox.fail_next(2, status=429, retry_after=timedelta(seconds=4))
    sandbox.delay(1.5)
    sandbox.reset_next(1)
    sandbox.set_token_status("revoked", 403)

    _, faults = await control(session, sandbox, "GET", "faults")
    _, cleared = await control(session, sandbox, "DELETE", "faults")

    assert faults == {
        "fail": [{"status": 429, "remaining": 2, "retry_after": {"http_date_in": 4.0}}],
        "delay": {"seconds": 1.5, "remaining": None},
        "reset": 1,
        "token_status": {"revoked": 403},
    }
    assert cleared == {"faults": {"fail": [], "delay": None, "reset": 0, "token_status": {}}}
    assert (await post(session, sandbox.url, body("viewed_page"), timeout=SHORT_TIMEOUT))[0] == 202


async def test_http_reset_clears_faults_and_record(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    await post(session, sandbox.url, body("viewed_page"))
    sandbox.fail_next(5)

    status, answer = await control(session, sandbox, "POST", "reset")

    assert (status, answer["cleared"], answer["faults"]["fail"]) == (200, 1, [])
    assert (await post(session, sandbox.url, body("viewed_page")))[0] == 202
    assert len(sandbox.received) == 1


async def test_control_requests_are_not_recorded_and_consume_no_fault(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.fail_next(1)

    await control(session, sandbox, "GET", "health")
    await control(session, sandbox, "GET", "received")

    assert sandbox.received == []
    assert (await post(session, sandbox.url, body("viewed_page")))[0] == 503


# -- odd bodies and per-event counts --------------------------------------------------------


async def test_answer_next_sends_the_given_text_with_its_status(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    text = "a" * 60_000 + "@"
    sandbox.answer_next(1, text=text)

    async with session.post(sandbox.url, json=body("viewed_page")) as response:
        got = (response.status, await response.text())

    assert got == (202, text)
    assert sandbox.received[0].faults == ("body",)
    assert (await post(session, sandbox.url, body("viewed_page")))[0] == 202


async def test_answer_next_streams_exactly_size_bytes(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    """An odd size (not a whole number of chunks) arrives complete, with its length announced."""
    size = 3 * 64 * 1024 + 7
    sandbox.answer_next(1, status=200, size=size)

    async with session.post(sandbox.url, json=body("viewed_page")) as response:
        raw = await response.read()
        length = response.content_length

    assert (response.status, len(raw), length, set(raw)) == (200, size, size, {ord("x")})


async def test_endless_body_streams_until_the_client_leaves(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    """A client can read far more than any real answer; when it hangs up, the sandbox goes on."""
    sandbox.answer_next(1, endless=True)
    read = 0
    async with session.post(sandbox.url, json=body("viewed_page")) as response:
        while read < 8 * 1024 * 1024:
            read += len(await response.content.readany())
        response.close()

    assert response.status == 202
    assert response.content_length is None
    assert (await post(session, sandbox.url, body("viewed_page")))[0] == 202


async def test_body_rules_take_their_turn_in_the_failure_queue(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.fail_next(1, status=503)
    sandbox.answer_next(1, status=429, text="slow down", retry_after="99999999999")

    first = await post(session, sandbox.url, body("viewed_page"))
    async with session.post(sandbox.url, json=body("viewed_page")) as response:
        second = (response.status, await response.text(), response.headers["Retry-After"])

    assert first[0] == 503
    assert second == (429, "slow down", "99999999999")
    assert [r.faults for r in sandbox.received] == [("fail",), ("body",)]


async def test_http_body_faults_are_listed_in_the_failure_queue(
    sandbox: BluecoreSandbox, session: aiohttp.ClientSession
) -> None:
    specs = [
        {"kind": "body", "text": "héllo"},
        {"kind": "body", "count": 2, "status": 200, "size": 1000},
        {"kind": "body", "endless": True, "retry_after": "Fri, 31 Dec 9999 23:59:59 GMT"},
    ]
    for spec in specs:
        assert (await control(session, sandbox, "POST", "faults", json=spec))[0] == 200

    _, faults = await control(session, sandbox, "GET", "faults")

    assert faults["fail"] == [
        {"status": 202, "remaining": 1, "retry_after": None, "body": {"text_bytes": 6}},
        {"status": 200, "remaining": 2, "retry_after": None, "body": {"size": 1000}},
        {
            "status": 202,
            "remaining": 1,
            "retry_after": "Fri, 31 Dec 9999 23:59:59 GMT",
            "body": {"endless": True},
        },
    ]
    async with session.post(sandbox.url, json=body("viewed_page")) as response:
        assert await response.text() == "héllo"


async def test_counts_requests_per_distinct_id_beyond_the_record(
    session: aiohttp.ClientSession,
) -> None:
    """Counts survive the record's size limit, include failed tries, and clear with it."""
    async with run_sandbox(max_records=2) as sandbox:
        sandbox.fail_next(1, status=503)
        for distinct_id in ("anon-1", "anon-1", "anon-2", "anon-1"):
            await post(session, sandbox.url, body("viewed_page", distinct_id=distinct_id))
        await post(session, sandbox.url, {"not": "an event"})

        _, counts = await control(session, sandbox, "GET", "counts")
        await control(session, sandbox, "DELETE", "received")
        _, cleared = await control(session, sandbox, "GET", "counts")

    assert counts == {"total": 5, "by_distinct_id": {"anon-1": 3, "anon-2": 1}}
    assert cleared == {"total": 0, "by_distinct_id": {}}


# -- the CLI entry point --------------------------------------------------------------------


@pytest.mark.slow
async def test_serve_sandbox_prints_its_url_and_exits_cleanly_on_sigterm(
    session: aiohttp.ClientSession,
) -> None:
    code = "from bluecore_devtools.sandbox import serve_sandbox; serve_sandbox('127.0.0.1', 0)"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=20)).decode()
        url = line.split()[-1]
        status, _, _ = await post(session, url, body("viewed_page"))
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(process.wait(), timeout=20)

    assert line.startswith("Bluecore sandbox listening on http://127.0.0.1:")
    assert url.endswith("/api/track/mobile/v1")
    assert status == 202
    assert returncode == 0
