"""The upstream client: the retry loop over a :class:`Transport`.

It owns the write credential (it adds ``properties.token`` when it serialises a body), the
shared slow-down, the bounded concurrency and the deadline arithmetic. The decisions
themselves are pure functions in :mod:`bluecore_sidecar.retry`; the sockets are the
transport's. Its sleep and clock are parameters, so the loop is tested on fake time.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import heapq
import itertools
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from opentelemetry import trace

from . import wire
from .credential import Credential
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

log = logging.getLogger("bluecore_sidecar")

#: Most distinct accepted outcomes kept for reuse (2xx codes times try numbers).
_MAX_ACCEPTED = 64
#: Answers that mean "this token is not (or no longer) valid for the namespace".
AUTH_STATUSES: frozenset[int] = frozenset({401, 403})


class Answer(NamedTuple):
    """What the upstream client needs from one HTTP answer.

    A named tuple, made once per try (see ``dedup.Record``): a frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__``.
    """

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


@dataclasses.dataclass(frozen=True, slots=True)
class SendOutcome:
    """The end of all tries for one request."""

    verdict: Verdict
    http_status: int
    attempts: int
    reason: str
    detail: str
    retry_after: float | None = None


#: Where every send starts: nothing tried yet (one frozen object for all; it is never changed).
_NOT_TRIED = SendOutcome(Verdict.RETRY, 0, 0, "DEADLINE_EXCEEDED", "no time left to try")


def worst(outcomes: list[SendOutcome]) -> SendOutcome:
    """One event's verdict from its requests: permanent beats retryable beats delivered."""
    for verdict in (Verdict.PERMANENT, Verdict.RETRY):
        for outcome in outcomes:
            if outcome.verdict is verdict:
                return outcome
    return outcomes[-1]


class SendObserver(Protocol):
    """Receives what happens on the way to Bluecore (metrics hook)."""

    def on_attempt(self, status: int | None, error: str | None, retry: bool) -> None:
        """Record one attempt: its HTTP status (None if none came) and whether it is retried."""

    def on_auth_failure(self, status: int) -> None:
        """Record one 401/403 answer: Bluecore refused the namespace token."""

    def on_resend_after_timeout(self) -> None:
        """Record a POST sent again after the previous try timed out (it may have landed)."""


class _NullObserver:
    def on_attempt(self, status: int | None, error: str | None, retry: bool) -> None:
        return None

    def on_auth_failure(self, status: int) -> None:
        return None

    def on_resend_after_timeout(self) -> None:
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
        self._limit = _Slots(max_concurrency)
        self._observer: SendObserver = observer or _NullObserver()
        self._rand = rand
        self._clock = clock
        self._sleep = sleep
        self._wall_clock = wall_clock
        self.throttle = Throttle(clock)
        self._accepted: dict[tuple[int, int], SendOutcome] = {}
        self._deadlines = _TryDeadlines()

    def serialise(self, body: Mapping[str, Any]) -> bytes:
        """``body`` as it goes on the wire, with ``properties.token`` = the current token."""
        return wire.serialise(body, self._credential.current())

    async def send(
        self, body: Mapping[str, Any], deadline: float, *, encoded: wire.Encoded | None = None
    ) -> SendOutcome:
        """POST ``body`` until accepted, refused for good, out of tries or out of time.

        ``deadline`` is on the client's clock and is when the answer is due: no try starts,
        and no backoff sleep runs, that could not finish before it. The caller keeps its own
        margin for building the reply. ``encoded`` is ``body`` as :func:`.wire.encode` wrote
        it, when the caller has it (the mapper's requests do).
        """
        token = self._credential.current()
        payload = wire.serialise(body, token, encoded)
        policy = self._policy
        attempts = 0
        budget = policy.max_attempts
        last = _NOT_TRIED
        while attempts < budget:
            pause = self.throttle.wait_time()
            if pause > 0:
                if self._clock() + pause >= deadline:
                    return _out_of_time(last, attempts, pause)
                trace.get_current_span().add_event("throttle.wait", {"seconds": pause})
                await self._sleep(pause)
            if deadline - self._clock() <= MIN_TRY_SECONDS:
                break
            attempts += 1
            resend = last.reason == UpstreamTimeout.reason
            last = await self._attempt(payload, attempts, deadline, resend=resend)
            if last.http_status in AUTH_STATUSES:
                if self._token_refused(last.http_status, token) and budget == policy.max_attempts:
                    # Rotated since this body was serialised: one more try with the new token,
                    # at once (a refused token is no reason to back off).
                    trace.get_current_span().add_event(
                        "credential.rotated", {"http.response.status_code": last.http_status}
                    )
                    token = self._credential.current()
                    payload = wire.serialise(body, token, encoded)
                    budget += 1
                    continue
                return last
            if last.verdict is not Verdict.RETRY or last.reason == "CONCURRENCY_LIMIT":
                return last
            delay = backoff_delay(policy, attempts, last.retry_after, self._rand)
            if last.http_status == 429 or last.retry_after is not None:
                # Bluecore's "slow down" / "come back later" holds for the whole namespace,
                # also when this request has no tries left.
                self.throttle.pause_for(delay)
            if attempts >= budget:
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

    def _token_refused(self, status: int, sent: str) -> bool:
        """Count and log a refused token; re-read it now. ``True`` if it differs from ``sent``."""
        self._observer.on_auth_failure(status)
        self._credential.refresh()
        rotated = self._credential.current() != sent
        log.error(
            "Bluecore refused the namespace token",
            extra={
                "fields": {
                    "http_status": status,
                    "token_changed": rotated,
                    "hint": "retrying once with the new token"
                    if rotated
                    else "check BLUECORE_NAMESPACE(_FILE): the token is revoked or wrong",
                }
            },
        )
        return rotated

    async def _attempt(
        self, payload: bytes, number: int, deadline: float, *, resend: bool = False
    ) -> SendOutcome:
        # Waiting for a free slot is bounded by the caller's deadline but is not part of the
        # try: the try's timeout starts once the request can actually be sent.
        wait = deadline - self._clock()
        try:
            if not self._limit.take():
                await self._limit.wait(max(wait, 0.0))
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
            if resend:
                self._observer.on_resend_after_timeout()
            expiry = self._deadlines.start(seconds)
            try:
                answer = await self._transport.post(payload, number)
            except BaseException as error:
                if self._deadlines.end(expiry, error) or isinstance(error, TimeoutError):
                    raise UpstreamTimeout(
                        f"no answer from Bluecore within {seconds:.2f}s"
                    ) from None
                raise
            self._deadlines.end(expiry, None)
        except UpstreamError as exc:
            self._observer.on_attempt(None, exc.reason, True)
            return SendOutcome(Verdict.RETRY, 0, number, exc.reason, self._scrub(str(exc)))
        finally:
            self._limit.give()
        return self._judge(answer, number)

    def _judge(self, answer: Answer, number: int) -> SendOutcome:
        status = answer.status
        verdict = classify(status, self._policy)
        self._observer.on_attempt(status, None, verdict is Verdict.RETRY)
        if verdict is Verdict.DELIVERED:
            # The same few (status, try number) pairs every time: built once each.
            accepted = self._accepted.get((status, number))
            if accepted is None:
                accepted = SendOutcome(verdict, status, number, "", "accepted by Bluecore")
                if len(self._accepted) < _MAX_ACCEPTED:
                    self._accepted[status, number] = accepted
            return accepted
        retry_after = parse_retry_after(answer.retry_after, self._wall_clock())
        if retry_after is not None and retry_after > self._policy.max_pause:
            # One header must not stop every request for hours; say so once per clamp.
            log.warning(
                "Retry-After longer than SIDECAR_MAX_PAUSE; pausing for the cap instead",
                extra={
                    "fields": {
                        "http_status": status,
                        "retry_after_seconds": round(retry_after),
                        "max_pause_seconds": self._policy.max_pause,
                    }
                },
            )
            retry_after = self._policy.max_pause
        detail = f"Bluecore answered {status}"
        text = self._scrub(answer.body.decode("utf-8", errors="replace"))
        if text:
            detail += f": {text}"
        return SendOutcome(verdict, status, number, f"HTTP_{status}", detail, retry_after)

    def _scrub(self, text: str) -> str:
        return excerpt(text, self._credential.secrets())


class _Expiry:
    """One try watched by :class:`_TryDeadlines`."""

    __slots__ = ("cancelling", "expired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task: asyncio.Task[Any] | None = task  # None once the try has ended
        self.cancelling = task.cancelling()
        self.expired = False


class _TryDeadlines:
    """Cancels the tries that outlive their time limit, with one loop timer for all of them.

    ``asyncio.timeout`` around each try cost about 34k machine instructions per try, most of
    it for its timer: a ``TimerHandle`` pushed into and later taken out of the loop's heap,
    whose order is compared by a Python method. Tries get nearly the same limit
    (``SIDECAR_ATTEMPT_TIMEOUT``, unless the caller's deadline is nearer), so their deadlines
    arrive almost in order. Here they wait in a heap of plain ``(deadline, number, expiry)``
    tuples, ordered in C, and the loop has one timer, for the earliest deadline of a try still
    running: a try that ends in time only marks its entry, and ended entries leave the heap
    when they reach its top. What happens at a deadline is what ``asyncio.timeout`` does: the
    task is cancelled, and that ``CancelledError`` becomes a timeout unless the task was also
    cancelled by someone else (its ``cancelling()`` count tells).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Expiry]] = []
        self._numbers = itertools.count()  # ties of equal deadlines never compare entries
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def start(self, seconds: float) -> _Expiry:
        """Watch the current task's try, which may last ``seconds`` from now."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a try runs in a task")
        loop = task.get_loop()
        if loop is not self._loop:  # the first try, or a new event loop (tests)
            self._loop, self._heap, self._timer, self._timer_at = loop, [], None, math.inf
        expiry = _Expiry(task)
        when = loop.time() + seconds
        heapq.heappush(self._heap, (when, next(self._numbers), expiry))
        if when < self._timer_at:
            self._set_timer(when)
        return expiry

    def end(self, expiry: _Expiry, error: BaseException | None) -> bool:
        """Stop watching a try; ``True`` if ``error`` is the cancellation of its deadline."""
        task, expiry.task = expiry.task, None
        heap = self._heap
        while heap and heap[0][2].task is None:
            heapq.heappop(heap)
        if not expiry.expired or task is None:
            return False
        # As asyncio.timeout: the deadline's cancel request is taken back; the error is the
        # deadline's only if nobody else asked for one meanwhile.
        return task.uncancel() <= expiry.cancelling and isinstance(error, asyncio.CancelledError)

    def _set_timer(self, when: float) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._expire)
        self._timer_at = when

    def _expire(self) -> None:
        """Cancel every running try whose deadline has come; set the timer for the next."""
        assert self._loop is not None
        self._timer, self._timer_at = None, math.inf
        now = self._loop.time()
        heap = self._heap
        while heap:
            when, _, expiry = heap[0]
            if expiry.task is not None:
                if when > now:
                    self._set_timer(when)
                    return
                expiry.expired = True
                expiry.task.cancel()
            heapq.heappop(heap)


class _Slots:
    """At most ``size`` tries in flight (``SIDECAR_MAX_CONCURRENCY``); others wait in turn.

    An ``asyncio.Semaphore`` with a free slot taken by a plain call: the usual try needs no
    coroutine and no look at the waiters beyond an empty deque.
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    def take(self) -> bool:
        """Take a free slot if there is one and nobody is waiting for one."""
        if self._free and not self._waiting:
            self._free -= 1
            return True
        return False

    async def wait(self, timeout: float) -> None:
        """Wait for a slot, in turn, for at most ``timeout`` seconds (``TimeoutError``)."""
        handed = asyncio.get_running_loop().create_future()
        self._waiting.append(handed)
        try:
            async with asyncio.timeout(timeout):
                await handed
        except BaseException:
            if handed.done() and not handed.cancelled():
                self.give()  # a slot came just as this waiter gave up: the next one has it
            elif handed in self._waiting:  # give() may have passed it over already
                handed.cancel()
                self._waiting.remove(handed)
            raise

    def give(self) -> None:
        """Give a slot back: to the first waiter still waiting, else to the free ones."""
        while self._waiting:
            handed = self._waiting.popleft()
            if not handed.done():
                handed.set_result(None)
                return
        self._free += 1


def _out_of_time(last: SendOutcome, attempts: int, pause: float) -> SendOutcome:
    why = "Bluecore asked to slow down and the deadline ends before the pause"
    return dataclasses.replace(
        last,
        attempts=attempts,
        reason=last.reason if attempts else "RATE_LIMITED",
        detail=f"{last.detail}; {why}" if attempts else why,
        retry_after=pause,
    )
