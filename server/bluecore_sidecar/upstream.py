"""The HTTP client side: one pooled aiohttp session, retries, backoff and classification.

The retry policy is data (:class:`RetryPolicy`); the decisions (:func:`classify`,
:func:`parse_retry_after`, :func:`backoff_delay`) are plain functions. :class:`UpstreamClient`
is the only code that talks to Bluecore. aiohttp exceptions stop at this module's boundary and
come out as :mod:`bluecore_sidecar.errors` types or as data in :class:`SendOutcome`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

import aiohttp
from opentelemetry import trace

from .errors import UpstreamConnectionError, UpstreamError, UpstreamTimeout
from .redaction import excerpt
from .telemetry import attempt_context

#: Statuses Bluecore may answer that are worth another try.
RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 425, 429, *range(500, 600)})

#: Time kept back from the caller's deadline to build and return the answer.
DEADLINE_MARGIN = 0.05


class Verdict(enum.Enum):
    """What one HTTP answer means for the event."""

    DELIVERED = "delivered"
    RETRY = "retry"
    PERMANENT = "permanent"


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try. Delays are in seconds; ``max_attempts`` counts the first try."""

    max_attempts: int = 5
    base: float = 0.2
    cap: float = 10.0
    attempt_timeout: float = 5.0
    retryable_statuses: frozenset[int] = RETRYABLE_STATUSES


def classify(status: int, policy: RetryPolicy) -> Verdict:
    """Classify an HTTP status: any 2xx is accepted, listed codes are retried, the rest fail."""
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status in policy.retryable_statuses:
        return Verdict.RETRY
    return Verdict.PERMANENT


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), if valid."""
    if value is None:
        return None
    text = value.strip()
    # isdigit() alone accepts "²" (float() then raises) and other scripts' digits.
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_delay(
    policy: RetryPolicy, attempt: int, retry_after: float | None, rand: Callable[[], float]
) -> float:
    """Delay before try ``attempt + 1``: capped exponential backoff with full jitter.

    ``Retry-After`` is a floor: Bluecore's own word is never undercut by jitter.
    """
    ceiling = min(policy.cap, policy.base * (2 ** (attempt - 1)))
    delay: float = ceiling * rand()
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


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


class Throttle:
    """Shared slow-down: a 429 (or Retry-After on a 503) pauses every later request.

    Bluecore's rate limit is per namespace, not per event, so one event's 429 means every
    request sent now would get one too. Each request waits until the pause is over.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._resume_at = 0.0

    def pause_for(self, seconds: float) -> None:
        """Hold later requests back for ``seconds`` from now (extends, never shortens)."""
        self._resume_at = max(self._resume_at, self._clock() + seconds)

    def wait_time(self) -> float:
        """Seconds a request must wait before it may be sent."""
        return max(0.0, self._resume_at - self._clock())


class UpstreamClient:
    """Sends Bluecore requests over one pooled session, retrying within the caller's deadline."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        policy: RetryPolicy,
        *,
        max_concurrency: int,
        secrets: Sequence[str] = (),
        observer: SendObserver | None = None,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._url = url
        self._policy = policy
        self._limit = asyncio.Semaphore(max_concurrency)
        self._secrets = tuple(secrets)
        self._observer: SendObserver = observer or _NullObserver()
        self._rand = rand
        self._clock = clock
        self.throttle = Throttle(clock)

    async def send(self, body: bytes, deadline: float) -> SendOutcome:
        """POST ``body`` until accepted, refused for good, out of tries or out of time.

        ``deadline`` is on the ``time.monotonic`` clock. No try starts, and no backoff sleep
        runs, that could not finish before it.
        """
        policy = self._policy
        attempts = 0
        last = SendOutcome(Verdict.RETRY, 0, 0, "DEADLINE_EXCEEDED", "no time left to try")
        while attempts < policy.max_attempts:
            pause = self.throttle.wait_time()
            if pause > 0:
                if self._clock() + pause >= deadline - DEADLINE_MARGIN:
                    return dataclasses.replace(
                        last,
                        attempts=attempts,
                        reason=last.reason if attempts else "RATE_LIMITED",
                        detail=f"{last.detail}; Bluecore asked to slow down and the "
                        "deadline ends before the pause"
                        if attempts
                        else "Bluecore asked to slow down and the deadline ends before the pause",
                        retry_after=pause,
                    )
                trace.get_current_span().add_event("throttle.wait", {"seconds": pause})
                await asyncio.sleep(pause)
            remaining = deadline - DEADLINE_MARGIN - self._clock()
            if remaining <= 0.01:
                break
            attempts += 1
            last = await self._attempt(body, attempts, min(policy.attempt_timeout, remaining))
            if last.verdict is not Verdict.RETRY:
                return last
            if attempts >= policy.max_attempts:
                return dataclasses.replace(
                    last, detail=f"{last.detail}; gave up after {attempts} attempts"
                )
            delay = backoff_delay(policy, attempts, last.retry_after, self._rand)
            if last.http_status == 429 or last.retry_after is not None:
                # Bluecore's "slow down" / "come back later" holds for the whole namespace.
                self.throttle.pause_for(delay)
            if self._clock() + delay >= deadline - DEADLINE_MARGIN:
                return dataclasses.replace(
                    last,
                    detail=f"{last.detail}; the next try (in {delay:.2f}s) would pass the deadline",
                )
            trace.get_current_span().add_event(
                "retry.backoff", {"attempt": attempts, "delay_seconds": round(delay, 3)}
            )
            await asyncio.sleep(delay)
        return dataclasses.replace(
            last,
            attempts=attempts,
            reason=last.reason if attempts else "DEADLINE_EXCEEDED",
            detail=last.detail if attempts else "the deadline left no time for a single try",
        )

    async def _attempt(self, body: bytes, number: int, seconds: float) -> SendOutcome:
        # The CLIENT span of this try (and the traceparent header) come from the aiohttp
        # instrumentation on the session (telemetry.http_trace_configs); the try number rides
        # along in the request's trace context so the span carries the resend count.
        headers = {"Content-Type": "application/json"}
        started = self._clock()
        try:
            # Waiting for a free slot counts against this try's time too, so a backlog
            # behind SIDECAR_MAX_CONCURRENCY can never hold a caller past its deadline.
            if self._limit.locked():
                async with asyncio.timeout(seconds):
                    await self._limit.acquire()
            else:
                await self._limit.acquire()  # a free slot: taken without waiting
        except TimeoutError:
            return SendOutcome(
                Verdict.RETRY,
                0,
                number - 1,
                "CONCURRENCY_LIMIT",
                f"no free upstream slot within {seconds:.2f}s "
                "(SIDECAR_MAX_CONCURRENCY requests already in flight)",
            )
        try:
            left = max(seconds - (self._clock() - started), 0.001)
            status, retry_after, answer = await self._post(body, headers, left, number)
        except UpstreamError as exc:
            self._observer.on_attempt(None, exc.reason, True)
            return SendOutcome(Verdict.RETRY, 0, number, exc.reason, str(exc))
        finally:
            self._limit.release()
        verdict = classify(status, self._policy)
        self._observer.on_attempt(status, None, verdict is Verdict.RETRY)
        if verdict is Verdict.DELIVERED:
            return SendOutcome(verdict, status, number, "", "accepted by Bluecore")
        detail = f"Bluecore answered {status}"
        if answer:
            detail += f": {answer}"
        return SendOutcome(verdict, status, number, f"HTTP_{status}", detail, retry_after)

    async def _post(
        self, body: bytes, headers: dict[str, str], seconds: float, attempt: int
    ) -> tuple[int, float | None, str]:
        try:
            async with asyncio.timeout(seconds):
                async with self._session.post(
                    self._url,
                    data=body,
                    headers=headers,
                    # A 307/308 would re-post the body, namespace token included, elsewhere.
                    allow_redirects=False,
                    trace_request_ctx=attempt_context(attempt),
                ) as response:
                    text = await response.text(errors="replace")
                    retry_after = parse_retry_after(
                        response.headers.get("Retry-After"), datetime.now(UTC)
                    )
                    return response.status, retry_after, excerpt(text, self._secrets)
        except TimeoutError:
            raise UpstreamTimeout(f"no answer from Bluecore within {seconds:.2f}s") from None
        except aiohttp.ClientError as exc:
            # The exception text can carry the URL but never the body, so the token stays out.
            raise UpstreamConnectionError(
                f"{type(exc).__name__}: {excerpt(str(exc), self._secrets)}"
            ) from None
