"""The upstream client's retry loop on an in-memory transport and fake time: attempts,
backoff within the deadline, Retry-After, the shared pause, the slot wait and the token."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pytest
from bluecore_sidecar.errors import UpstreamConnectionError
from bluecore_sidecar.retry import RetryPolicy, Verdict
from bluecore_sidecar.upstream import Answer, Credential, SendOutcome, UpstreamClient

from .conftest import EMAIL, NAMESPACE

BODY: dict[str, Any] = {"event": "viewed_product", "properties": {"distinct_id": "anon-1"}}
POLICY = RetryPolicy(max_attempts=5, base=1.0, cap=8.0, attempt_timeout=2.0, max_pause=60.0)
WALL = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class ScriptedTransport:
    """Answers from a script: an ``Answer``, or an exception to raise, per try."""

    def __init__(self, script: Iterable[Answer | Exception], time: FakeTime | None = None) -> None:
        self.script = deque(script)
        self.sent: list[bytes] = []
        self.sent_at: list[float] = []
        self.time = time

    async def post(self, body: bytes, attempt: int) -> Answer:
        self.sent.append(body)
        if self.time is not None:
            self.sent_at.append(self.time.now)
        step = self.script.popleft() if self.script else Answer(202)
        if isinstance(step, Exception):
            raise step
        return step


def client(
    transport: Any, time: FakeTime, policy: RetryPolicy = POLICY, rand: float = 1.0
) -> UpstreamClient:
    return UpstreamClient(
        transport,
        policy,
        Credential(NAMESPACE),
        max_concurrency=4,
        rand=lambda: rand,
        clock=time.clock,
        sleep=time.sleep,
        wall_clock=lambda: WALL,
    )


async def test_503_503_202_takes_three_tries_with_exponential_full_jitter_backoff():
    time = FakeTime()
    transport = ScriptedTransport([Answer(503), Answer(503), Answer(202)])
    outcome = await client(transport, time, rand=0.5).send(BODY, time.now + 30)
    assert outcome.verdict is Verdict.DELIVERED
    assert outcome.attempts == 3
    # rand() = 0.5 of the ceilings 1 s and 2 s.
    assert time.sleeps == [0.5, 1.0]


async def test_the_wire_body_carries_the_token_and_the_input_body_does_not():
    time = FakeTime()
    transport = ScriptedTransport([Answer(202)])
    await client(transport, time).send(BODY, time.now + 30)
    [sent] = transport.sent
    assert json.loads(sent) == {
        "event": "viewed_product",
        "properties": {"token": NAMESPACE, "distinct_id": "anon-1"},
    }
    assert "token" not in BODY["properties"]


async def test_the_credential_is_read_at_each_send_so_a_rotation_takes_effect():
    class Rotating(Credential):
        def __init__(self) -> None:
            super().__init__("")
            self.tokens = iter(["old-token", "new-token"])

        def current(self) -> str:
            return next(self.tokens)

    time = FakeTime()
    transport = ScriptedTransport([])
    upstream = UpstreamClient(
        transport, POLICY, Rotating(), max_concurrency=1, clock=time.clock, sleep=time.sleep
    )
    await upstream.send(BODY, time.now + 30)
    await upstream.send(BODY, time.now + 30)
    assert [json.loads(b)["properties"]["token"] for b in transport.sent] == [
        "old-token",
        "new-token",
    ]


def test_the_credential_never_shows_its_token_in_a_repr():
    credential = Credential(NAMESPACE)
    assert NAMESPACE not in repr(credential)
    upstream = client(ScriptedTransport([]), FakeTime())
    # Every attribute, read through dir(): a class compiled with mypyc has no __dict__.
    fields = {name: getattr(upstream, name, None) for name in dir(upstream) if name[:2] != "__"}
    assert "_credential" in fields
    assert NAMESPACE not in repr(fields)


async def test_exhausted_attempts_fail_retryably_with_the_last_answer():
    time = FakeTime()
    transport = ScriptedTransport([Answer(503)] * 10)
    outcome = await client(transport, time, RetryPolicy(max_attempts=3, base=0.1)).send(
        BODY, time.now + 30
    )
    assert (outcome.verdict, outcome.attempts, outcome.http_status) == (Verdict.RETRY, 3, 503)
    assert "gave up after 3 attempts" in outcome.detail
    assert len(transport.sent) == 3


async def test_a_400_is_permanent_and_not_retried():
    time = FakeTime()
    transport = ScriptedTransport([Answer(400, body=b"bad request")])
    outcome = await client(transport, time).send(BODY, time.now + 30)
    assert (outcome.verdict, outcome.attempts, outcome.reason) == (Verdict.PERMANENT, 1, "HTTP_400")
    assert outcome.detail == "Bluecore answered 400: bad request"
    assert time.sleeps == []


async def test_an_answer_quoting_the_token_or_an_email_is_scrubbed_in_the_detail():
    time = FakeTime()
    echo = json.dumps({"error": "bad", "token": NAMESPACE, "customer": EMAIL}).encode()
    transport = ScriptedTransport([Answer(422, body=echo)])
    outcome = await client(transport, time).send(BODY, time.now + 30)
    assert NAMESPACE not in outcome.detail
    assert EMAIL not in outcome.detail
    assert "***" in outcome.detail


async def test_connection_errors_are_retried_and_reported_by_reason():
    time = FakeTime()
    transport = ScriptedTransport([UpstreamConnectionError("refused")] * 5)
    outcome = await client(transport, time).send(BODY, time.now + 60)
    assert outcome.reason == "UPSTREAM_CONNECTION_ERROR"
    assert outcome.attempts == 5
    assert outcome.http_status == 0


async def test_no_backoff_sleep_runs_past_the_deadline():
    """With 3 s left, the 4 s backoff after the second 503 is not slept: the answer comes now."""
    time = FakeTime()
    transport = ScriptedTransport([Answer(503)] * 10)
    started = time.now
    outcome = await client(transport, time, RetryPolicy(base=2.0, cap=8.0)).send(
        BODY, started + 3.0
    )
    assert time.sleeps == [2.0]
    assert outcome.attempts == 2
    assert "would pass the deadline" in outcome.detail
    assert time.now < started + 3.0


async def test_retry_after_is_a_floor_for_the_next_try():
    time = FakeTime()
    transport = ScriptedTransport([Answer(503, retry_after="7"), Answer(202)], time)
    outcome = await client(transport, time, rand=0.0).send(BODY, time.now + 30)
    assert outcome.attempts == 2
    assert transport.sent_at[1] - transport.sent_at[0] == pytest.approx(7.0)


@pytest.mark.parametrize(
    "header", ["9" * 400, "99999999999", "Fri, 31 Dec 9999 23:59:59 GMT", "Sat, 01 Jan 0001 x"]
)
async def test_absurd_retry_after_values_are_capped_by_max_pause_and_never_raise(header):
    policy = RetryPolicy(max_attempts=2, base=0.1, cap=1.0, max_pause=30.0)
    time = FakeTime()
    once = client(ScriptedTransport([Answer(429, retry_after=header)]), time, policy)
    outcome = await once.send(BODY, time.now + 10)
    assert outcome.retry_after is None or outcome.retry_after <= 30.0
    assert once.throttle.wait_time() <= 30.0
    time = FakeTime()
    twice = client(ScriptedTransport([Answer(429, retry_after=header), Answer(202)]), time, policy)
    delivered = await twice.send(BODY, time.now + 100)
    assert delivered.verdict is Verdict.DELIVERED
    assert len(time.sleeps) == 1
    assert time.sleeps[0] <= 30.0


async def test_a_429_pauses_every_later_request_of_the_client():
    """Bluecore's slow-down holds for the namespace: a second event waits out the pause too."""
    time = FakeTime()
    transport = ScriptedTransport([Answer(429, retry_after="5")], time)
    upstream = client(transport, time, RetryPolicy(max_attempts=1))
    first = await upstream.send(BODY, time.now + 30)
    assert first.verdict is Verdict.RETRY
    assert upstream.throttle.wait_time() == pytest.approx(5.0)
    paused_at = time.now
    second = await upstream.send(BODY, time.now + 30)
    assert second.verdict is Verdict.DELIVERED
    assert transport.sent_at[1] == pytest.approx(paused_at + 5.0)


async def test_a_pause_longer_than_the_deadline_answers_at_once_as_rate_limited():
    time = FakeTime()
    transport = ScriptedTransport([Answer(429, retry_after="20")], time)
    upstream = client(transport, time, RetryPolicy(max_attempts=1))
    await upstream.send(BODY, time.now + 30)
    before = time.now
    outcome = await upstream.send(BODY, time.now + 3)
    assert (outcome.reason, outcome.attempts) == ("RATE_LIMITED", 0)
    assert outcome.retry_after == pytest.approx(20.0)
    assert time.now == before
    assert len(transport.sent) == 1


async def test_a_deadline_already_past_sends_nothing():
    time = FakeTime()
    transport = ScriptedTransport([])
    outcome = await client(transport, time).send(BODY, time.now)
    assert (outcome.reason, outcome.attempts) == ("DEADLINE_EXCEEDED", 0)
    assert transport.sent == []


class GatedTransport:
    """The first request waits for ``release``; later ones answer 202 at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.posts = 0

    async def post(self, body: bytes, attempt: int) -> Answer:
        self.posts += 1
        if self.posts == 1:
            await self.release.wait()
        return Answer(202)


class HoldThenQuick:
    """The first request is held until ``release``; later ones take a moment of real time."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.posts = 0

    async def post(self, body: bytes, attempt: int) -> Answer:
        self.posts += 1
        if self.posts == 1:
            await self.release.wait()
        else:
            await asyncio.sleep(0.05)
        return Answer(202)


async def test_waiting_for_a_free_slot_is_not_charged_to_the_try():
    """A send that waited 10 s (on the client's clock) for the only slot still gets a whole try.

    Were the wait charged to the 5 s try, nothing would be left of it and the 50 ms request
    would time out.
    """
    time = FakeTime()
    transport = HoldThenQuick()
    upstream = UpstreamClient(
        transport,
        RetryPolicy(attempt_timeout=5.0),
        Credential(NAMESPACE),
        max_concurrency=1,
        clock=time.clock,
        sleep=time.sleep,
    )
    deadline = time.now + 100
    first = asyncio.create_task(upstream.send(BODY, deadline))
    await asyncio.sleep(0)
    queued = asyncio.create_task(upstream.send(BODY, deadline))
    await asyncio.sleep(0.01)
    time.now += 10.0  # the queued send has been waiting for the slot this long
    transport.release.set()
    assert (await first).attempts == 1
    outcome = await queued
    assert (outcome.verdict, outcome.attempts) == (Verdict.DELIVERED, 1)
    assert transport.posts == 2


async def test_waiting_for_a_slot_ends_with_the_deadline():
    transport = GatedTransport()
    upstream = UpstreamClient(
        transport, RetryPolicy(attempt_timeout=5.0), Credential(NAMESPACE), max_concurrency=1
    )
    loop = asyncio.get_running_loop()
    first = asyncio.create_task(upstream.send(BODY, loop.time() + 5))
    await asyncio.sleep(0)
    queued = await upstream.send(BODY, loop.time() + 0.2)
    transport.release.set()
    await first
    assert (queued.reason, queued.attempts) == ("CONCURRENCY_LIMIT", 0)
    assert transport.posts == 1  # the queued send never reached the transport


async def test_a_waiter_that_gives_up_or_is_cancelled_leaves_the_slot_to_the_next_in_line():
    """One slot: the sends that stop waiting (deadline, cancellation) never take it; the
    waiting ones get it in the order they came, and every slot is given back at the end."""
    transport = GatedTransport()
    upstream = UpstreamClient(
        transport, RetryPolicy(attempt_timeout=5.0), Credential(NAMESPACE), max_concurrency=1
    )
    loop = asyncio.get_running_loop()
    order: list[str] = []

    async def send(name: str, seconds: float) -> SendOutcome:
        outcome = await upstream.send(BODY, loop.time() + seconds)
        order.append(name)
        return outcome

    first = asyncio.create_task(send("first", 5))
    await asyncio.sleep(0)
    short = asyncio.create_task(send("short", 0.1))
    cancelled = asyncio.create_task(send("cancelled", 5))
    second = asyncio.create_task(send("second", 5))
    third = asyncio.create_task(send("third", 5))
    await asyncio.sleep(0.3)  # the short one has given up
    cancelled.cancel()
    await asyncio.sleep(0)
    transport.release.set()
    outcomes = await asyncio.gather(first, short, second, third)
    assert [o.verdict for o in outcomes] == [
        Verdict.DELIVERED,
        Verdict.RETRY,
        Verdict.DELIVERED,
        Verdict.DELIVERED,
    ]
    assert outcomes[1].reason == "CONCURRENCY_LIMIT"
    assert cancelled.cancelled()
    assert order == ["short", "first", "second", "third"]
    assert transport.posts == 3
    # The one slot is free again: nothing was lost on the way.
    assert (await upstream.send(BODY, loop.time() + 1)).verdict is Verdict.DELIVERED


class HangingTransport:
    """Answers a try at once unless its body says "hang"; then never (until cancelled)."""

    def __init__(self) -> None:
        self.cancelled = 0

    async def post(self, body: bytes, attempt: int) -> Answer:
        if b"hang" not in body:
            return Answer(202)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        raise AssertionError("unreachable")  # pragma: no cover


def hang_body(name: str) -> dict[str, Any]:
    return {"event": name, "properties": {"distinct_id": "anon-1"}}


async def test_each_try_ends_at_its_own_limit_whatever_the_order_the_tries_started_in():
    """Tries of different limits and quick ones beside them: only the hung ones time out,
    and a hung try with a nearer deadline ends first."""
    transport = HangingTransport()
    upstream = UpstreamClient(
        transport,
        RetryPolicy(max_attempts=1, attempt_timeout=5.0),
        Credential(NAMESPACE),
        max_concurrency=10,
    )
    loop = asyncio.get_running_loop()
    ended: dict[str, float] = {}
    started = loop.time()

    async def send(name: str, within: float) -> SendOutcome:
        outcome = await upstream.send(hang_body(name), time.monotonic() + within)
        ended[name] = loop.time() - started
        return outcome

    long, short, quick = await asyncio.gather(
        send("hang-long", 0.6), send("hang-short", 0.3), send("quick", 0.3)
    )
    assert quick.verdict is Verdict.DELIVERED
    assert (long.reason, short.reason) == ("UPSTREAM_TIMEOUT", "UPSTREAM_TIMEOUT")
    assert ended["hang-short"] < ended["hang-long"]
    assert transport.cancelled == 2
    assert (await send("quick-after", 1.0)).verdict is Verdict.DELIVERED


async def test_a_try_cancelled_from_outside_is_cancelled_not_timed_out():
    """Cancelling the caller of a hung try propagates as a cancel, never as a timeout."""
    transport = HangingTransport()
    upstream = UpstreamClient(
        transport, RetryPolicy(attempt_timeout=5.0), Credential(NAMESPACE), max_concurrency=2
    )
    call = asyncio.ensure_future(upstream.send(hang_body("hang"), time.monotonic() + 10))
    await asyncio.sleep(0.05)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert transport.cancelled == 1
