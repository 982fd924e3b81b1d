"""Background delivery from the durable queue: the workers and the calls waiting on them.

:class:`BackgroundDelivery` claims due entries (``claim_due``), maps each one again with the
current rules, sends it with the sidecar's one :class:`~.upstream.UpstreamClient` (its shared
pause included) and settles it in the store: delivered, rescheduled with capped backoff, or a
dead letter (``EXPIRED``, ``AUTH``, the permanent answer's reason, or the skip the mapping now
gives). It sleeps until the earliest due time or a wake-up (an enqueue, a replay, a finished
try), never polls in a tight loop, and runs at most ``workers`` tries at once.

A ``Deliver`` call in ``WAIT`` mode makes its event's first try itself, beside the enqueue's
commit (:meth:`BackgroundDelivery.try_first`), on a file this process has alone. With a shared
file it registers as the waiter of its message id before it enqueues: the worker hands it the
outcome of the first try instead of publishing it, and the call answers with it (or
``QUEUED`` when its deadline comes first).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple, Protocol

from datafly.bluecore.v1 import delivery_pb2
from google.protobuf import duration_pb2
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from . import results
from . import skip as sk
from .decision import Send, Skip, decide
from .dedup import remember_delivered
from .gates import GatePolicy
from .mapping import MappingRules
from .outcomes import OutcomeBus, OutcomeObserver
from .redaction import Redactor
from .retry import RetryPolicy, Verdict, backoff_delay, deadline_margin
from .store import (
    Claim,
    DedupRecord,
    DedupStore,
    Duplicate,
    Enqueued,
    EnqueueOutcome,
    EventQueue,
    NewEntry,
    QueuedEntry,
    StoreClosed,
    StoreError,
)
from .telemetry import Metrics
from .tracing import NO_SPAN
from .upstream import SendOutcome, UpstreamClient, worst

if TYPE_CHECKING:
    from prometheus_client import Counter

DeliveryResult = delivery_pb2.DeliveryResult

#: Name of the span of one background try; it links to the trace of the call that queued it.
BACKGROUND_SPAN = "bluecore.deliver.background"
#: How often delivered ids older than the dedup window are purged from the file (seconds).
HOUSEKEEPING_INTERVAL = 60.0
#: Longest sleep of an idle worker loop, as a safety net (seconds); wake-ups come sooner.
MAX_IDLE_SLEEP = 30.0
#: With a shared file (SIDECAR_WORKERS > 1) other processes change it without waking this
#: one: how often a DIRECT call re-reads a customer's queue, and the longest idle sleep (s).
SHARED_POLL = 0.2
SHARED_MAX_IDLE = 1.0
#: At shutdown, how long a WAIT call's first try under way may go on before it is cut short
#: and the call answers QUEUED (seconds; see ``BackgroundDelivery.stop_claiming``).
FIRST_TRY_GRACE = 0.75
#: Bluecore refuses events older than this (seconds), whatever the staleness gate says.
BLUECORE_MAX_AGE = 24 * 3600.0

_AUTH_STATUSES = frozenset({401, 403})
#: Outcomes of a try that are not errors on its span.
_ANSWERED_WELL = frozenset(
    {delivery_pb2.DELIVERY_STATUS_DELIVERED, delivery_pb2.DELIVERY_STATUS_QUEUED}
)
_W3C = TraceContextTextMapPropagator()
_log = logging.getLogger("bluecore_sidecar")


class WorkQueue(EventQueue, DedupStore, Protocol):
    """What the workers use of the durable queue: its events, and purging old delivered ids.

    :class:`~.store.SqliteQueue` is one; a shared log could be another.
    """


@dataclasses.dataclass(slots=True)
class Waiter:
    """A ``Deliver`` call in WAIT mode waiting for the first background try of its event."""

    respond_by: float
    """Monotonic time the call must answer by; the try's own deadline."""
    context: otel_context.Context
    """The call's trace context: its try is a child span there."""
    future: asyncio.Future[DeliveryResult | None]
    answered_early: bool = False
    """Set once a try handed it its outcome (for a delivery, possibly before the completion
    committed); the try then publishes nothing of its own."""

    async def wait(self, timeout: float) -> DeliveryResult | None:
        """The first try's outcome, or None when shutdown began first (answer QUEUED now);
        ``TimeoutError`` after ``timeout`` seconds.

        One timer on the future itself rather than ``wait_for``: no task per call. A caller
        that is cancelled cancels the future, and the try then publishes its outcome.
        """
        if not self.future.done():
            loop = self.future.get_loop()  # not get_running_loop(): a getpid() call each time
            timer = loop.call_later(max(timeout, 0.0), _time_out, self.future)
            try:
                return await self.future
            finally:
                timer.cancel()
        return self.future.result()


def _time_out(future: asyncio.Future[DeliveryResult | None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class FirstTry(NamedTuple):
    """What :meth:`BackgroundDelivery.try_first` did: the enqueue's outcome (None when the
    try delivered before the entry was written, which then never was), and the first try's
    result (None when shutdown cut the try short: the entry waits in the queue)."""

    enqueued: EnqueueOutcome | None
    result: DeliveryResult | None


class BackgroundDelivery:
    """Workers over the durable queue, plus the registry of calls waiting on them."""

    def __init__(
        self,
        *,
        queue: WorkQueue,
        client: UpstreamClient,
        rules: MappingRules,
        gates: GatePolicy,
        max_event_bytes: int,
        policy: RetryPolicy,
        workers: int,
        try_budget: float,
        bus: OutcomeBus,
        observer: OutcomeObserver | None = None,
        metrics: Metrics | None = None,
        tracer: trace.Tracer | None = None,
        redactor: Redactor | None = None,
        shared: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.queue = queue
        self._client = client
        self._rules = rules
        self._gates = gates
        self._max_event_bytes = max_event_bytes
        self._policy = policy
        self._workers = workers
        self._try_budget = try_budget
        self._bus = bus
        self._observer = observer
        self._metrics = metrics
        self._tries_by_outcome: dict[str, Counter] = {}
        self._tracer = tracer or trace.NoOpTracer()
        self._tracing = not isinstance(self._tracer, trace.NoOpTracer)
        self._redactor = redactor or Redactor()
        self._shared = shared
        self._clock = clock
        self._wall_clock = wall_clock
        self._rand = rand
        gate_age = gates.max_event_age.total_seconds()
        self._max_age = min(gate_age, BLUECORE_MAX_AGE) if gate_age > 0 else BLUECORE_MAX_AGE
        self._waiters: dict[str, Waiter] = {}
        # Customers with a first try under way whose entry may not be committed yet.
        self._early_keys: set[str] = set()
        # The calls' tasks making a first try themselves (try_first), while they send:
        # shutdown cuts those sends short; _cut holds the ones it cancelled.
        self._first_tries: set[asyncio.Task[object]] = set()
        self._cut: set[asyncio.Task[object]] = set()
        self._cut_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._looped = 0  # tries the claim loop started that are still running
        self._wake = asyncio.Event()
        # Kept: asyncio.get_running_loop() (and so asyncio.create_task) costs a getpid() call.
        self._loop = asyncio.get_running_loop()
        # Made when a DIRECT call waits for a customer's queue, resolved at the next change.
        self._change: asyncio.Future[None] | None = None
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the claim loop and the housekeeping loop."""
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="queue-claim-loop"),
            asyncio.create_task(self._housekeeping(), name="queue-housekeeping"),
        ]

    def stop_claiming(self) -> None:
        """Shutdown begins: claim nothing more, and let waiting calls answer ``QUEUED`` now
        (their events are on disk) instead of holding the drain up to their deadline."""
        self._stopping = True
        self.queue.stop_claiming()
        self._wake.set()
        for waiter in self._waiters.values():
            if not waiter.future.done():
                waiter.future.set_result(None)
        # A first try under way gets a moment to finish (Bluecore usually answers in
        # milliseconds); one still sending then (a slow Bluecore, retries in an outage) is cut
        # short, and its call answers QUEUED; stop() puts its entry back. Only the first
        # call of stop_claiming() sets that moment (stop() calls it again).
        if self._cut_timer is None:
            self._cut_timer = self._loop.call_later(FIRST_TRY_GRACE, self._cut_first_tries)
        self._changed()  # DIRECT calls waiting for a customer's queue give up now too

    def _cut_first_tries(self) -> None:
        """The grace is over: cancel the sends of the first tries still under way (each
        call's ``_send_first`` takes the cancellation back and returns None)."""
        for task in self._first_tries:
            self._cut.add(task)
            task.cancel()

    async def stop(self, timeout: float) -> None:
        """Stop claiming; let tries in flight finish within ``timeout``, then cancel them and
        put every claimed entry back to pending. Nothing on disk is lost either way."""
        self.stop_claiming()
        for task in self._loops:
            if task.get_name() == "queue-housekeeping":
                task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=max(timeout, 0.0))
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
                _log.warning(
                    "grace period over with background tries in flight; they go back to the queue",
                    extra={"fields": {"cancelled": len(pending)}},
                )
        try:
            released = await self.queue.release_all_claims()
        except StoreError as exc:
            _log.error(
                "could not release claimed queue entries; the next start does it",
                extra={"fields": {"error_type": type(exc).__name__}},
            )
        else:
            if released:
                _log.info("queue entries put back", extra={"fields": {"released": released}})

    # -- what the pipeline uses -------------------------------------------------------------

    async def enqueue(
        self,
        entries: Sequence[NewEntry],
        *,
        try_now: bool = False,
    ) -> list[EnqueueOutcome]:
        """Commit ``entries``; wake the claim loop for those left pending. Returns once the
        commit did: only then may a caller say ``QUEUED``.

        ``try_now`` (WAIT mode): an entry that is its customer's only one is committed already
        claimed, and its first try starts here at once, without a trip through the claim
        loop and a second commit. Its waiter (registered before) gets the outcome as usual.
        (On a file this process has alone, :meth:`try_first` does better.)
        """
        outcomes = await self.queue.enqueue(entries, claim=try_now and not self._stopping)
        pending = False
        for outcome in outcomes:
            if isinstance(outcome, Enqueued):
                if outcome.claim is None:
                    pending = True
                elif not self._stopping:
                    self._start(outcome.claim)
                # else: shutdown began while it committed; stop() releases the claim, or the
                # next start does, as for any claim of a stopped process.
        if pending:
            self.wake()
        return outcomes

    @property
    def stopping(self) -> bool:
        """Whether shutdown has begun (claiming stopped)."""
        return self._stopping

    @property
    def tries_first(self) -> bool:
        """Whether a WAIT call may use :meth:`try_first` now: the file is this process's
        alone (with a shared file, another process may hold the customer unseen) and
        shutdown has not begun."""
        return not self._shared and not self._stopping

    async def try_first(self, entry: NewEntry, decision: Send, respond_by: float) -> FirstTry:
        """A WAIT call's event: commit it and make its first try, in the calling task.

        Only when :attr:`tries_first` holds and the customer has nothing pending. The enqueue
        is submitted first and the send starts at once, so Bluecore and the commit are waited
        for at the same time; the customer is held in memory (``has_pending``) until the
        commit has counted the entry, so nothing of theirs overtakes it. The commit skips the
        fsync (``synced=False``): a delivery's answer needs none, and a caller that answers
        ``QUEUED`` instead calls :meth:`sync` first. It also lingers (``linger=True``): it
        waits in the writer's line while the send is out, is taken back if the send
        delivers, and is committed when the send ends otherwise (``hurry``), or once the
        linger is over (:data:`~.store._ENQUEUE_LINGER`), whichever is first.

        A delivered try's completion commits later, with others (the answer need not wait).
        Any other outcome is settled (rescheduled or a dead letter) before this returns.
        Shutdown cuts a send short that has not ended within :data:`FIRST_TRY_GRACE`: the
        result is then None, and the entry, still claimed, is put back by ``stop()`` (or by
        the next start). A caller that leaves mid-way hands the entry to a background try
        once its commit is in (the event may then be sent twice: at least once).
        """
        key = entry.ordering_key
        # Submitted before anything else of this loop turn: its sequence number is below that
        # of any later event of the customer.
        committed = self.queue.enqueue_soon([entry], claim=True, synced=False, linger=True)
        self._early_keys.add(key)
        sent: SendOutcome | None = None
        settling = False
        try:
            with self._first_span(entry) as span:
                sent = await self._send_first(decision, respond_by)
                enqueued: EnqueueOutcome | None = None
                if committed.done():
                    [enqueued] = committed.result()
                elif (
                    sent is not None
                    and sent.verdict is Verdict.DELIVERED
                    and self.queue.withdraw(committed)
                ):
                    # Delivered before its enqueue left the line: nothing to queue, and the
                    # store learns the id as of a direct delivery (soon, not awaited).
                    settling = True
                    result: DeliveryResult | None = self._delivered_first(entry, sent)
                else:
                    self.queue.hurry(committed)  # it may linger for company: the answer waits
                    # Shielded: a caller that leaves must not cancel the commit's answer.
                    [enqueued] = await asyncio.shield(committed)
                if enqueued is not None:
                    settling = True  # from here on the entry is settled whatever the caller does
                    result = await self._first_outcome(entry, enqueued, decision, sent)
                if result is not None and span.is_recording():
                    span.set_attributes(_span_attributes(result, 0, self._redactor))
                    if result.status not in _ANSWERED_WELL:
                        span.set_status(trace.StatusCode.ERROR, result.reason)
                return FirstTry(enqueued, result)
        except BaseException:
            if not settling:
                # The call left (cancelled) or failed before its entry was settled: the entry
                # is committed now, and then a background try takes it over.
                self.queue.hurry(committed)
                committed.add_done_callback(functools.partial(self._take_over, key, sent))
            raise
        finally:
            if settling:
                self._early_keys.discard(key)  # the store's live count holds the key now
                self._changed()

    async def _send_first(self, decision: Send, respond_by: float) -> SendOutcome | None:
        """The first try's send; None when shutdown cut it short."""
        # The calling task is noted while it sends: FIRST_TRY_GRACE after stop_claiming(),
        # _cut_first_tries cancels it, and the cancellation is taken back here (as an
        # asyncio.timeout scope would, without building one per event). A cancellation of
        # the caller's own (it left) still ends the call.
        task = asyncio.current_task(self._loop)  # given the loop: no getpid() call
        if task is None:
            return await self._send(decision, respond_by)
        cancelling = task.cancelling()
        self._first_tries.add(task)
        try:
            return await self._send(decision, respond_by)
        except asyncio.CancelledError:
            if task in self._cut and task.uncancel() <= cancelling:
                return None
            raise
        finally:
            self._first_tries.discard(task)
            self._cut.discard(task)  # also when the cut's cancellation never reached the send

    def _first_span(self, entry: NewEntry) -> contextlib.AbstractContextManager[trace.Span]:
        if not self._tracing:
            return NO_SPAN
        # A child of the call's span (the current one), linked to the call like any try.
        return self._tracer.start_as_current_span(
            BACKGROUND_SPAN, links=_links(entry.traceparent), record_exception=False
        )

    def _delivered_first(self, entry: NewEntry, sent: SendOutcome) -> DeliveryResult:
        """The result of a first try that delivered before its entry was written."""
        result = self._result(
            entry,
            status=delivery_pb2.DELIVERY_STATUS_DELIVERED,
            outcome=sent,
            label="",  # the call sets its own
            reason="",
            detail=sent.detail,
        )
        with contextlib.suppress(StoreClosed):  # closed under it: only dedup after a restart
            self.queue.remember_soon(
                DedupRecord(
                    entry.message_id,
                    "delivered",
                    entry.bluecore_event,
                    result.attempts,
                    result.http_status,
                    self._wall_clock(),
                )
            )
        self._count("delivered")
        return result

    async def _first_outcome(
        self, entry: NewEntry, enqueued: EnqueueOutcome, decision: Send, sent: SendOutcome | None
    ) -> DeliveryResult | None:
        """Settle a first try's entry by what its send did; the result for the call, or None
        when there is none (shutdown; the store failed to record it): the entry waits."""
        if sent is None:
            return None  # cut short by shutdown: the entry stays claimed until stop()
        claim = enqueued.claim if isinstance(enqueued, Enqueued) else None
        if claim is None:
            # Not this try's entry to settle: refused (full, duplicate), or committed behind
            # an entry of the customer that appeared meanwhile. The send happened anyway.
            result = self._sent_result(entry, decision, sent)
            if sent.verdict is Verdict.DELIVERED and not isinstance(enqueued, Duplicate):
                await self._remember(result)
            return result
        if sent.verdict is Verdict.DELIVERED:
            # Bluecore has it: the call answers now; the completion commits with the others
            # of its turn, and its callback counts it (a crash in between sends it again).
            self._complete_later(claim, sent)
            return self._result(
                claim.entry,
                status=delivery_pb2.DELIVERY_STATUS_DELIVERED,
                outcome=sent,
                label="",  # the call sets its own, the decision's (nothing to scrub here)
                reason="",
                detail=sent.detail,
            )
        # Shielded: the entry is settled even if the caller leaves meanwhile.
        return await asyncio.shield(self._settle_first(claim, decision, sent))

    async def _settle_first(
        self, claim: Claim, decision: Send, sent: SendOutcome
    ) -> DeliveryResult | None:
        """Reschedule or dead-letter a first try that did not deliver (as ``_settled``)."""
        try:
            result, kept = await self._settle(claim, None, decision, sent)
        except StoreError as exc:
            await self._store_failed(claim, exc)
            return None
        self._count(_try_outcome(result) if kept else "stale")
        return result

    def _complete_later(self, claim: Claim, sent: SendOutcome) -> None:
        self.queue.complete_soon(
            claim, attempts=sent.attempts, http_status=sent.http_status, then=self._completed
        )

    def _take_over(
        self, key: str, sent: SendOutcome | None, committed: asyncio.Future[list[EnqueueOutcome]]
    ) -> None:
        """The call of a first try left before settling its entry: settle it here."""
        self._early_keys.discard(key)
        self._changed()
        if committed.cancelled() or committed.exception() is not None:
            return  # nothing was committed
        [enqueued] = committed.result()
        claim = enqueued.claim if isinstance(enqueued, Enqueued) else None
        if claim is None:
            return  # not this try's entry: a worker sends it, or it was refused
        if sent is not None and sent.verdict is Verdict.DELIVERED:
            self._complete_later(claim, sent)
        elif not self._stopping:
            self._start(claim)  # tried again from the start; stop() releases it otherwise

    async def sync(self) -> None:
        """Return once every commit so far is on the disk: a WAIT call whose enqueue was
        committed unsynced (its first try started before the commit) calls this before it
        answers ``QUEUED``."""
        await self.queue.sync()

    def pending_now(self, ordering_key: str) -> bool | None:
        """:meth:`has_pending` without a coroutine, when memory can answer (a file this
        process has alone); None when the queue must be asked (await :meth:`has_pending`)."""
        if ordering_key in self._early_keys:
            return True
        return self.queue.pending_now(ordering_key)

    async def has_pending(self, ordering_key: str) -> bool:
        """Whether the customer has events waiting (or being sent) in the queue."""
        known = self.pending_now(ordering_key)
        if known is not None:
            return known
        return await self.queue.has_pending(ordering_key)

    async def wait_for_key(self, ordering_key: str, respond_by: float) -> bool:
        """Wait until the customer has nothing queued; False if ``respond_by`` comes first."""
        while True:
            # Taken before looking, so that a change while a shared file is read still counts.
            if self._change is None:
                self._change = self._loop.create_future()
            change = self._change
            if not await self.has_pending(ordering_key):
                return True
            remaining = respond_by - self._clock()
            if remaining <= 0 or self._stopping:
                return False  # out of time, or nothing more leaves the queue before a restart
            # Another process's worker may let the customer's events out unseen: look again.
            wait = min(remaining, SHARED_POLL) if self._shared else remaining
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(change), wait)

    def register(self, message_id: str, respond_by: float) -> Waiter:
        """Wait for the first background try of ``message_id`` (call before enqueueing)."""
        waiter = Waiter(
            respond_by,
            otel_context.get_current(),
            self._loop.create_future(),
        )
        if self._stopping:
            waiter.future.set_result(None)  # nothing will be claimed any more
        else:
            self._waiters[message_id] = waiter
        return waiter

    def unregister(self, message_id: str, waiter: Waiter) -> None:
        """Stop waiting; later outcomes of the id are published as background outcomes."""
        if self._waiters.get(message_id) is waiter:
            del self._waiters[message_id]

    def wake(self) -> None:
        """Something may have become due: let the claim loop look."""
        self._wake.set()

    async def refresh_metrics(self) -> None:
        """Copy the queue's ``stats()`` into the gauges (called at scrape time)."""
        if self._metrics is None:
            return
        try:
            stats = await self.queue.stats()
        except StoreError:
            return  # the queue is closing; the gauges keep their last values
        self._metrics.set_queue_stats(stats)

    # -- the loops ---------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping:
            # Cleared first: a wake-up from here on ends the sleep below at once.
            self._wake.clear()
            # The pool bounds this loop's tries; the first tries of WAIT calls are bounded by
            # the calls themselves and do not take its slots.
            free = self._workers - self._looped
            pause = self._client.throttle.wait_time()
            if free <= 0 or pause > 0:
                # A full pool waits for a finished try (it wakes us); a shared pause after a
                # 429 holds background tries back like everyone else's.
                await self._sleep(pause if pause > 0 else MAX_IDLE_SLEEP)
                continue
            if not self.queue.may_have_due():
                # Nothing pending (the tries of WAIT calls start without this loop): sleep
                # until something is queued, put back or replayed, instead of asking the
                # file after every finished try.
                await self._sleep(MAX_IDLE_SLEEP)
                continue
            try:
                claims = await self.queue.claim_due(free, self._wall_clock())
            except StoreError as exc:
                _log.error(
                    "the durable queue failed a claim; trying again shortly",
                    extra={"fields": {"error_type": type(exc).__name__}},
                )
                await self._sleep(1.0)
                continue
            for claim in claims:
                self._start(claim, looped=True)
            if claims:
                continue
            await self._sleep(await self._idle_time())

    def _start(self, claim: Claim, *, looped: bool = False) -> None:
        task = self._loop.create_task(self._run_try(claim), name="queue-try")
        self._tasks.add(task)
        if looped:
            self._looped += 1
            task.add_done_callback(self._loop_try_done)
        task.add_done_callback(self._done)

    def _loop_try_done(self, task: asyncio.Task[None]) -> None:
        self._looped -= 1
        self._wake.set()  # a slot of the pool is free

    async def _idle_time(self) -> float:
        try:
            due = await self.queue.earliest_due()
        except StoreError:
            return 1.0
        longest = SHARED_MAX_IDLE if self._shared else MAX_IDLE_SLEEP
        if due is None:
            return longest
        return min(longest, max(0.0, due - self._wall_clock()))

    async def _sleep(self, seconds: float) -> None:
        if self._stopping or seconds <= 0 or self._wake.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._changed()

    def _changed(self) -> None:
        """An entry left, or was put back: wake the claim loop and those waiting on a key."""
        if self.queue.may_have_due():
            self._wake.set()  # else nothing could be claimed: an enqueue wakes it
        change, self._change = self._change, None
        if change is not None and not change.done():
            change.set_result(None)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            try:
                # Small batches keep each transaction short; a full one means more to purge.
                for _ in range(1000):
                    if await self.queue.purge_expired(batch=1000) < 1000:
                        break
            except StoreError as exc:
                _log.warning(
                    "purging old delivered ids failed",
                    extra={"fields": {"error_type": type(exc).__name__}},
                )

    # -- one try ---------------------------------------------------------------------------

    async def _run_try(self, claim: Claim) -> None:
        entry = claim.entry
        waiter = self._waiters.get(entry.message_id)
        started = self._clock()
        span_scope: contextlib.AbstractContextManager[trace.Span]
        if self._tracing:
            parent = waiter.context if waiter is not None else otel_context.Context()
            span_scope = self._tracer.start_as_current_span(
                BACKGROUND_SPAN,
                context=parent,
                links=_links(entry.traceparent),
                record_exception=False,
            )
        else:
            # Tracing off: no span at all, as for the call itself (no context switching).
            span_scope = NO_SPAN
        with span_scope as span:
            settled = await self._settled(claim, waiter)
            if settled is None:
                return
            result, kept = settled
            if waiter is None or not waiter.answered_early:
                self._stamp(result, started)
            if span.is_recording():
                span.set_attributes(_span_attributes(result, entry.attempts, self._redactor))
                if result.status not in (
                    delivery_pb2.DELIVERY_STATUS_DELIVERED,
                    delivery_pb2.DELIVERY_STATUS_QUEUED,
                ):
                    span.set_status(trace.StatusCode.ERROR, result.reason)
        if kept is None:
            return  # the completion's callback counts it (_completed)
        if not kept:
            # The claim went stale (released at shutdown): the entry will be sent again, and
            # this try's outcome is not the event's (a delivery answered early was made,
            # and is made once more: at least once).
            self._count("stale")
            return
        self._count(_try_outcome(result))
        if waiter is not None and waiter.answered_early:
            return
        if waiter is not None:
            self._hand(waiter, claim, result)
            if waiter.answered_early:
                return
        # Nobody waits (any more): the outcome is a background one.
        self._bus.publish(result)
        if self._observer is not None:
            self._observer.on_outcome(result, False)

    def _completed(self, claim: Claim, failure: BaseException | None, kept: bool) -> None:
        """A delivery's completion committed (or failed): count it, and let its customer go."""
        if isinstance(failure, StoreError):
            task = self._loop.create_task(self._store_failed(claim, failure), name="queue-retry")
            self._tasks.add(task)
            task.add_done_callback(self._done)
            return
        if failure is not None:
            raise failure  # a bug: the loop's exception handler logs it
        self._count("delivered" if kept else "stale")
        self._changed()

    def _stamp(self, result: DeliveryResult, started: float) -> None:
        """The try's trace id (its span is the current one) and its latency until now."""
        if self._tracing:
            ctx = trace.get_current_span().get_span_context()
            result.trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else ""
        result.latency.CopyFrom(_duration(self._clock() - started))

    async def _settled(
        self, claim: Claim, waiter: Waiter | None
    ) -> tuple[DeliveryResult, bool | None] | None:
        """Try the entry and record the outcome; None when the store could not record it.

        The outcome's second item says whether the claim was still current; None when that
        is known later (a delivery handed to its call: see ``_completed``).

        A store that fails (disk full or read-only, I/O errors) leaves the entry claimed; it
        is asked once more, a second later, to put it back as due, and otherwise the entry
        waits, safe on disk, for the release at the next start. The worker never dies of it.
        """
        try:
            return await self._try(claim, waiter)
        except StoreError as exc:
            failure: Exception = exc
        except Exception as exc:  # noqa: BLE001 - a bad entry must not stop the worker
            _log.error(
                "unexpected error in a background try",
                extra={"fields": {"error_type": type(exc).__name__}},
            )
            outcome = SendOutcome(Verdict.RETRY, 0, 0, "INTERNAL_ERROR", type(exc).__name__)
            try:
                return await self._settle_retry(claim, outcome, "")
            except StoreError as again:
                failure = again
        await self._store_failed(claim, failure)
        return None

    async def _store_failed(self, claim: Claim, failure: Exception) -> None:
        """The store could not record a try of ``claim``: put it back as due a second later."""
        _log.error(
            "the durable queue could not record a background try; it is tried again later",
            extra={"fields": {"error_type": type(failure).__name__}},
        )
        await asyncio.sleep(1.0)
        try:
            await self.queue.reschedule(
                claim, next_due=self._wall_clock(), reason="STORE_ERROR", http_status=0, attempts=0
            )
        except StoreError:
            _log.error("the entry stays claimed until the next start releases it")
        self._changed()
        self._count("store_error")

    async def _try(self, claim: Claim, waiter: Waiter | None) -> tuple[DeliveryResult, bool | None]:
        entry = claim.entry
        now = self._wall_clock()
        event = delivery_pb2.DataflyEvent.FromString(entry.payload)
        if now > entry.event_time + self._max_age:
            return await self._dead(claim, sk.EXPIRED, _expired_detail(self._max_age), event=event)
        # The current rules and settings decide again: what changed since it was queued
        # (and, for a replay, what was fixed) applies.
        decision = decide(
            event, self._rules, self._gates, datetime.fromtimestamp(now, UTC), self._max_event_bytes
        )
        if isinstance(decision, Skip):
            reason = sk.EXPIRED if decision.reason == sk.STALE_EVENT else decision.reason
            detail = _expired_detail(self._max_age) if reason == sk.EXPIRED else decision.detail
            return await self._dead(claim, reason, detail, event=event, skip=decision)
        outcome = await self._send(decision, waiter.respond_by if waiter is not None else None)
        return await self._settle(claim, waiter, decision, outcome)

    async def _send(self, decision: Send, respond_by: float | None) -> SendOutcome:
        """Send the decision's requests, within the try budget and a waiting call's time."""
        now_mono = self._clock()
        deadline = now_mono + self._try_budget
        if respond_by is not None:
            # The outcome must still be committed and handed over before the call answers.
            left = respond_by - now_mono
            deadline = min(deadline, respond_by - deadline_margin(left))
        # The mapper's encoding of each body goes along: it is not encoded a second time.
        if len(decision.requests) == 1:
            [request] = decision.requests
            return await self._client.send(request.body, deadline, encoded=request.encoded)
        outcomes = await asyncio.gather(
            *(
                self._client.send(request.body, deadline, encoded=request.encoded)
                for request in decision.requests
            )
        )
        outcome = worst(list(outcomes))
        accepted = sum(o.verdict is Verdict.DELIVERED for o in outcomes)
        return dataclasses.replace(
            outcome,
            attempts=sum(o.attempts for o in outcomes),
            detail=f"{accepted} of {len(outcomes)} requests accepted; {outcome.detail}",
        )

    def _sent_result(self, entry: NewEntry, decision: Send, outcome: SendOutcome) -> DeliveryResult:
        """The outcome of a send whose entry is not this try's to settle."""
        status = {
            Verdict.DELIVERED: delivery_pb2.DELIVERY_STATUS_DELIVERED,
            Verdict.PERMANENT: delivery_pb2.DELIVERY_STATUS_FAILED_PERMANENT,
            Verdict.RETRY: delivery_pb2.DELIVERY_STATUS_FAILED_RETRYABLE,
        }[outcome.verdict]
        return self._result(
            entry,
            status=status,
            outcome=outcome,
            label=decision.datafly_event,
            reason=outcome.reason,
            detail=outcome.detail,
        )

    def _hand(self, waiter: Waiter | None, claim: Claim, result: DeliveryResult) -> None:
        """Give a waiting call ``result`` now; the try publishes nothing of its own then. A
        call that left (unregistered) gets nothing: the try publishes its outcome instead."""
        message_id = claim.entry.message_id
        if (
            waiter is not None
            and not waiter.future.done()
            and self._waiters.get(message_id) is waiter
        ):
            waiter.answered_early = True
            self.unregister(message_id, waiter)
            waiter.future.set_result(result)

    async def _remember(self, result: DeliveryResult) -> None:
        """A delivery without an entry to complete: the store still learns its id."""
        await remember_delivered(self.queue, result, self._wall_clock())

    async def _settle(
        self,
        claim: Claim,
        waiter: Waiter | None,
        decision: Send,
        outcome: SendOutcome,
    ) -> tuple[DeliveryResult, bool | None]:
        label = decision.datafly_event
        if outcome.verdict is Verdict.DELIVERED:
            result = self._result(
                claim.entry,
                status=delivery_pb2.DELIVERY_STATUS_DELIVERED,
                outcome=outcome,
                label=label,
                reason="",
                detail=outcome.detail,
            )
            if waiter is not None and not waiter.future.done():
                # Bluecore has it: the call may say DELIVERED before the completion commits.
                # A crash in between leaves the entry claimed, and it is sent again after the
                # restart (at least once); nothing said QUEUED or DELIVERED untruly. The
                # call stamps its own latency and trace id on its copy.
                self._hand(waiter, claim, result)
            if waiter is not None and waiter.answered_early:
                # The call has its answer and nothing else waits for this try: the
                # completion commits with the others of its turn, and its callback counts it.
                self._complete_later(claim, outcome)
                return result, None
            kept = await self.queue.complete(
                claim, attempts=outcome.attempts, http_status=outcome.http_status
            )
            self._changed()
            return result, kept
        if outcome.verdict is Verdict.PERMANENT:
            reason = sk.AUTH if outcome.http_status in _AUTH_STATUSES else outcome.reason
            return await self._dead(claim, reason, outcome.detail, outcome=outcome, label=label)
        return await self._settle_retry(claim, outcome, label)

    async def _settle_retry(
        self, claim: Claim, outcome: SendOutcome, label: str
    ) -> tuple[DeliveryResult, bool]:
        entry = claim.entry
        now = self._wall_clock()
        total = entry.attempts + outcome.attempts
        # Tries, not HTTP attempts, drive the backoff: each try may hold several attempts.
        tries = max(1, -(-total // self._policy.max_attempts))
        delay = backoff_delay(self._policy, tries, outcome.retry_after, self._rand)
        due = now + delay
        if due > entry.event_time + self._max_age:
            detail = f"{outcome.detail}; the next try would pass the maximum age"
            return await self._dead(claim, sk.EXPIRED, detail, outcome=outcome, label=label)
        kept = await self.queue.reschedule(
            claim,
            next_due=due,
            reason=outcome.reason,
            http_status=outcome.http_status,
            attempts=outcome.attempts,
        )
        self._changed()
        detail = f"{outcome.detail}; kept in the queue, next try in {delay:.1f}s"
        return self._result(
            claim.entry,
            status=delivery_pb2.DELIVERY_STATUS_QUEUED,
            outcome=outcome,
            label=label,
            reason=outcome.reason,
            detail=detail,
        ), kept

    async def _dead(
        self,
        claim: Claim,
        reason: str,
        detail: str,
        *,
        outcome: SendOutcome | None = None,
        label: str = "",
        event: delivery_pb2.DataflyEvent | None = None,
        skip: Skip | None = None,
    ) -> tuple[DeliveryResult, bool]:
        used = outcome or SendOutcome(Verdict.PERMANENT, 0, 0, reason, detail)
        detail = self._redactor.scrub(detail)
        kept = await self.queue.dead_letter(
            claim,
            reason=reason,
            detail=detail,
            http_status=used.http_status,
            attempts=used.attempts,
        )
        self._changed()
        if skip is not None and reason != sk.EXPIRED:
            status = skip.status
            label = skip.datafly_event
        elif reason == sk.EXPIRED:
            status = delivery_pb2.DELIVERY_STATUS_FAILED_RETRYABLE
        else:
            status = delivery_pb2.DELIVERY_STATUS_FAILED_PERMANENT
        if not label and event is not None:
            label = event.event or event.type
        return self._result(
            claim.entry,
            status=status,
            outcome=used,
            label=label,
            reason=reason,
            detail=f"dead letter: {detail}",
        ), kept

    def _result(
        self,
        entry: QueuedEntry | NewEntry,
        *,
        status: int,
        outcome: SendOutcome,
        label: str,
        reason: str,
        detail: str,
    ) -> DeliveryResult:
        result = results.new_result(
            message_id=entry.message_id,
            status=status,
            datafly_event=self._redactor.scrub(label) if label else "",
            bluecore_event=entry.bluecore_event,
            reason=reason,
            detail=detail,
            http_status=outcome.http_status,
            attempts=entry.attempts + outcome.attempts,
        )
        if outcome.retry_after is not None:
            result.retry_after.CopyFrom(_duration(outcome.retry_after))
        return result

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            counter = self._tries_by_outcome.get(outcome)
            if counter is None:
                # labels() parses its arguments and takes a lock: once per outcome is enough.
                counter = self._metrics.queue_tries.labels(outcome=outcome)
                self._tries_by_outcome[outcome] = counter
            counter.inc()


def traceparent_of(span: trace.Span) -> str:
    """The W3C ``traceparent`` of ``span``, or "" when it is not a real (sampled) span."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return ""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def _links(traceparent: str) -> list[trace.Link]:
    if not traceparent:
        return []
    ctx = trace.get_current_span(_W3C.extract({"traceparent": traceparent})).get_span_context()
    return [trace.Link(ctx)] if ctx.is_valid else []


def _expired_detail(max_age: float) -> str:
    return f"the event is older than the maximum age ({max_age / 3600:g} h) before it was delivered"


def _try_outcome(result: DeliveryResult) -> str:
    if result.status == delivery_pb2.DELIVERY_STATUS_DELIVERED:
        return "delivered"
    if result.status == delivery_pb2.DELIVERY_STATUS_QUEUED:
        return "retry"
    return "dead_letter"


def _span_attributes(
    result: DeliveryResult, earlier_attempts: int, redactor: Redactor
) -> dict[str, str | int | bool]:
    return {
        **results.span_attributes(result, redactor.scrub),
        "queue.earlier_attempts": earlier_attempts,
    }


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(max(seconds, 0.0) * 1e9))
    return value
