"""The upstream client: the retry loop over a :class:`Transport`.

It owns the write credential (it adds ``properties.token`` when it serialises a body), the
shared slow-down, the bounded concurrency and the deadline arithmetic. The decisions
themselves are pure functions in :mod:`bluecore_sidecar.retry`; the sockets are the
transport's. Its sleep and clock are parameters, so the loop is tested on fake time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from opentelemetry import trace

from . import wire
from .errors import UpstreamError, UpstreamTimeout
from .redaction import excerpt
from .retry import (
    MIN_TRY_SECONDS,
    RetryPolicy,
    Throttle,
    Verdict,
    backoff_delay,
    classify,
    parse_retry_after,
)


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """What the upstream client needs from one HTTP answer."""

    status: int
    retry_after: str | None = None
    """The raw ``Retry-After`` header, if any (parsed by the retry policy)."""
    body: bytes = b""
    """At most the transport's byte bound of the answer's body."""


class Transport(Protocol):
    """Sends one body and returns the answer; raises ``UpstreamError`` subtypes on failure.

    The caller bounds the whole call (sending, headers and the bounded body read) with its
    try timeout, so an implementation must read no more than it promises and never wait
    on a body past its bound.
    """

    async def post(self, body: bytes, attempt: int) -> Answer:
        """POST ``body`` (try number ``attempt``, for tracing) and return the answer."""


class Credential:
    """The namespace token, read where it is used: :meth:`current` at each serialisation.

    Rotation swaps what :meth:`current` returns; nothing else holds the token. Its repr
    never shows it.
    """

    def __init__(self, token: str) -> None:
        self._token = token

    def current(self) -> str:
        """The token to put on the next request."""
        return self._token

    def __repr__(self) -> str:
        return "Credential(***)"


@dataclasses.dataclass(frozen=True, slots=True)
class SendOutcome:
    """The end of all tries for one request."""

    verdict: Verdict
    http_status: int
    attempts: int
    reason: str
    detail: str
    retry_after: float | None = None


class SendObserver(Protocol):
    """Receives one call per HTTP attempt (metrics hook)."""

    def on_attempt(self, status: int | None, error: str | None, retry: bool) -> None:
        """Record one attempt: its HTTP status (None if none came) and whether it is retried."""


class _NullObserver:
    def on_attempt(self, status: int | None, error: str | None, retry: bool) -> None:
        return None


class UpstreamClient:
    """Sends Bluecore bodies through one transport, retrying within the caller's deadline."""

    def __init__(
        self,
        transport: Transport,
        policy: RetryPolicy,
        credential: Credential,
        *,
        max_concurrency: int,
        observer: SendObserver | None = None,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._transport = transport
        self._policy = policy
        self._credential = credential
        self._limit = asyncio.Semaphore(max_concurrency)
        self._observer: SendObserver = observer or _NullObserver()
        self._rand = rand
        self._clock = clock
        self._sleep = sleep
        self._wall_clock = wall_clock
        self.throttle = Throttle(clock)

    def serialise(self, body: Mapping[str, Any]) -> bytes:
        """``body`` as it goes on the wire, with ``properties.token`` = the current token."""
        return wire.serialise(body, self._credential.current())

    async def send(self, body: Mapping[str, Any], deadline: float) -> SendOutcome:
        """POST ``body`` until accepted, refused for good, out of tries or out of time.

        ``deadline`` is on the client's clock and is when the answer is due: no try starts,
        and no backoff sleep runs, that could not finish before it. The caller keeps its own
        margin for building the reply.
        """
        payload = self.serialise(body)
        policy = self._policy
        attempts = 0
        last = SendOutcome(Verdict.RETRY, 0, 0, "DEADLINE_EXCEEDED", "no time left to try")
        while attempts < policy.max_attempts:
            pause = self.throttle.wait_time()
            if pause > 0:
                if self._clock() + pause >= deadline:
                    return _out_of_time(last, attempts, pause)
                trace.get_current_span().add_event("throttle.wait", {"seconds": pause})
                await self._sleep(pause)
            if deadline - self._clock() <= MIN_TRY_SECONDS:
                break
            attempts += 1
            last = await self._attempt(payload, attempts, deadline)
            if last.verdict is not Verdict.RETRY or last.reason == "CONCURRENCY_LIMIT":
                return last
            delay = backoff_delay(policy, attempts, last.retry_after, self._rand)
            if last.http_status == 429 or last.retry_after is not None:
                # Bluecore's "slow down" / "come back later" holds for the whole namespace,
                # also when this request has no tries left.
                self.throttle.pause_for(delay)
            if attempts >= policy.max_attempts:
                return dataclasses.replace(
                    last, detail=f"{last.detail}; gave up after {attempts} attempts"
                )
            if self._clock() + delay >= deadline:
                return dataclasses.replace(
                    last,
                    detail=f"{last.detail}; the next try (in {delay:.2f}s) would pass the deadline",
                )
            trace.get_current_span().add_event(
                "retry.backoff", {"attempt": attempts, "delay_seconds": round(delay, 3)}
            )
            await self._sleep(delay)
        return dataclasses.replace(
            last,
            attempts=attempts,
            reason=last.reason if attempts else "DEADLINE_EXCEEDED",
            detail=last.detail if attempts else "the deadline left no time for a single try",
        )

    async def _attempt(self, payload: bytes, number: int, deadline: float) -> SendOutcome:
        # Waiting for a free slot is bounded by the caller's deadline but is not part of the
        # try: the try's timeout starts once the request can actually be sent.
        wait = deadline - self._clock()
        try:
            if self._limit.locked():
                async with asyncio.timeout(max(wait, 0.0)):
                    await self._limit.acquire()
            else:
                await self._limit.acquire()  # a free slot: taken without waiting
        except TimeoutError:
            return SendOutcome(
                Verdict.RETRY,
                0,
                number - 1,
                "CONCURRENCY_LIMIT",
                f"no free upstream slot within {wait:.2f}s "
                "(SIDECAR_MAX_CONCURRENCY requests already in flight)",
            )
        try:
            seconds = min(self._policy.attempt_timeout, deadline - self._clock())
            if seconds <= MIN_TRY_SECONDS:
                return SendOutcome(
                    Verdict.RETRY,
                    0,
                    number - 1,
                    "CONCURRENCY_LIMIT",
                    "a free upstream slot came too late to try before the deadline",
                )
            answer = await self._post(payload, number, seconds)
        except UpstreamError as exc:
            self._observer.on_attempt(None, exc.reason, True)
            return SendOutcome(Verdict.RETRY, 0, number, exc.reason, self._scrub(str(exc)))
        finally:
            self._limit.release()
        return self._judge(answer, number)

    async def _post(self, payload: bytes, number: int, seconds: float) -> Answer:
        try:
            async with asyncio.timeout(seconds):
                return await self._transport.post(payload, number)
        except TimeoutError:
            raise UpstreamTimeout(f"no answer from Bluecore within {seconds:.2f}s") from None

    def _judge(self, answer: Answer, number: int) -> SendOutcome:
        status = answer.status
        verdict = classify(status, self._policy)
        self._observer.on_attempt(status, None, verdict is Verdict.RETRY)
        if verdict is Verdict.DELIVERED:
            return SendOutcome(verdict, status, number, "", "accepted by Bluecore")
        retry_after = parse_retry_after(answer.retry_after, self._wall_clock())
        if retry_after is not None:
            retry_after = min(retry_after, self._policy.max_pause)
        detail = f"Bluecore answered {status}"
        text = self._scrub(answer.body.decode("utf-8", errors="replace"))
        if text:
            detail += f": {text}"
        return SendOutcome(verdict, status, number, f"HTTP_{status}", detail, retry_after)

    def _scrub(self, text: str) -> str:
        return excerpt(text, (self._credential.current(),))


def _out_of_time(last: SendOutcome, attempts: int, pause: float) -> SendOutcome:
    why = "Bluecore asked to slow down and the deadline ends before the pause"
    return dataclasses.replace(
        last,
        attempts=attempts,
        reason=last.reason if attempts else "RATE_LIMITED",
        detail=f"{last.detail}; {why}" if attempts else why,
        retry_after=pause,
    )
