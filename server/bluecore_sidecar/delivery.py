"""The delivery pipeline: message id -> dedup claim -> decide (map and gate) -> send -> result.

With a durable queue (:mod:`.background`) the step after the decision is routing: ``DIRECT``
sends as without a queue (after the customer's queued events have left); ``ENQUEUE`` commits
the event and answers ``QUEUED``; ``WAIT`` commits it, makes (or, with a shared file, waits
for) its first try within the deadline and answers that try's outcome, else ``QUEUED``.

:class:`Deliverer` turns one ``DataflyEvent`` into one ``DeliveryResult`` and never raises for
an event. The pieces it drives live in their own modules: the pure decision
(:mod:`.decision`), the dedup table (:mod:`.dedup`), the upstream client (:mod:`.upstream`)
and the outcome bus (:mod:`.outcomes`), which hears of every finished delivery.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from datafly.bluecore.v1 import delivery_pb2
from google.protobuf import duration_pb2
from opentelemetry import context as otel_context
from opentelemetry import trace

from . import results
from . import skip as sk
from .background import BackgroundDelivery, traceparent_of
from .decision import (
    DEFAULT_MAX_EVENT_BYTES,
    MAX_MESSAGE_ID_LENGTH,
    Earlier,
    Send,
    Skip,
    check_message_id,
    decide,
    duplicate_skip,
    preview,
)
from .dedup import Claimed, DedupTable, DurableDedup, Existing, InFlight, Queued, Record
from .gates import GatePolicy
from .mapping import MappingRules
from .outcomes import OutcomeBus, OutcomeObserver
from .redaction import Redactor
from .results import new_result
from .retry import Verdict, deadline_margin
from .store import Duplicate, Enqueued, EnqueueOutcome, NewEntry, QueueFull
from .upstream import UpstreamClient, worst

# OutcomeBus and DedupTable are re-exported for code written before the split (service.py
# imports OutcomeBus from here); new code imports them from their own modules.
__all__ = ["DELIVERY_SPAN", "DedupTable", "Deliverer", "OutcomeBus", "preview_result"]

Status = delivery_pb2.DeliveryStatus
DeliveryResult = delivery_pb2.DeliveryResult
Mode = delivery_pb2.DeliveryMode

_log = logging.getLogger("bluecore_sidecar")


def preview_result(
    event: delivery_pb2.DataflyEvent,
    rules: MappingRules,
    gates: GatePolicy,
    *,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    earlier: Earlier | None = None,
    now: datetime | None = None,
) -> tuple[DeliveryResult, list[str]]:
    """:func:`.decision.preview` as a ``DeliveryResult`` (latency 0) and the redacted bodies."""
    answer = preview(
        event, rules, gates, now or datetime.now(UTC), max_event_bytes, earlier=earlier
    )
    decision = answer.decision
    if isinstance(decision, Skip):
        result = _result(
            event,
            decision.status,
            datafly_event=decision.datafly_event,
            bluecore_event=decision.bluecore_event,
            reason=decision.reason,
            detail=decision.detail,
        )
        if decision.status == Status.DELIVERY_STATUS_SKIPPED_DUPLICATE and earlier is not None:
            result.http_status = earlier.http_status
            result.attempts = earlier.attempts
        return result, []
    result = _result(
        event,
        Status.DELIVERY_STATUS_DELIVERED,
        datafly_event=decision.datafly_event,
        bluecore_event=decision.bluecore_event,
        detail="would be sent",
    )
    return result, list(answer.bodies)


class Deliverer:
    """Turns one ``DataflyEvent`` into one ``DeliveryResult``."""

    def __init__(
        self,
        *,
        rules: MappingRules,
        gates: GatePolicy,
        client: UpstreamClient | None,
        dedup: DedupTable | DurableDedup,
        bus: OutcomeBus,
        background: BackgroundDelivery | None = None,
        default_mode: int = Mode.DELIVERY_MODE_WAIT,
        observer: OutcomeObserver | None = None,
        tracer: trace.Tracer | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.monotonic,
        redactor: Redactor | None = None,
    ) -> None:
        self._rules = rules
        self._redactor = redactor or Redactor()
        self._gates = gates
        self._client = client
        self._dedup = dedup
        self._bus = bus
        self._background = background
        self._default_mode = default_mode or Mode.DELIVERY_MODE_WAIT
        self._observer = observer
        self._tracer = tracer or trace.NoOpTracer()
        self._tracing = not isinstance(self._tracer, trace.NoOpTracer)
        self._max_event_bytes = max_event_bytes
        self._now = now
        self._clock = clock
        #: Deliveries started and not finished (the in-flight gauge).
        self.in_flight = 0

    async def preview(self, event: delivery_pb2.DataflyEvent) -> tuple[DeliveryResult, list[str]]:
        """What :meth:`deliver` would answer for ``event`` now, and the redacted bodies.

        With a durable queue the store is asked too, so an id waiting in the queue answers
        QUEUED (ALREADY_QUEUED), as a resend through ``Deliver`` would; nothing is sent.
        """
        earlier: Earlier | None = None
        if check_message_id(event) is None:
            dedup = self._dedup
            seen = (
                await dedup.known(event.message_id)
                if isinstance(dedup, DurableDedup)
                else dedup.peek(event.message_id)
            )
            if isinstance(seen, Queued):
                return self._already_queued(event, seen.record, self._clock(), ""), []
            if isinstance(seen, Record):
                earlier = _earlier(seen)
            elif isinstance(seen, InFlight):
                earlier = Earlier(True)
        return preview_result(
            event,
            self._rules,
            self._gates,
            max_event_bytes=self._max_event_bytes,
            earlier=earlier,
            now=self._now(),
        )

    async def deliver(
        self,
        event: delivery_pb2.DataflyEvent,
        deadline: float,
        mode: int = Mode.DELIVERY_MODE_UNSPECIFIED,
    ) -> DeliveryResult:
        """Deliver ``event``, answering before ``deadline`` (on this deliverer's clock).

        ``mode`` (a ``DeliveryMode``; unspecified: the configured default) matters only with
        a durable queue; without one every event is delivered directly.
        """
        parent = trace.get_current_span().get_span_context()
        result, dedup_hit = await self._deliver_published(event, deadline, mode, parent)
        if self._observer is not None:
            self._observer.on_outcome(result, dedup_hit)
        return result

    async def deliver_batch(
        self,
        events: Sequence[delivery_pb2.DataflyEvent],
        deadline: float,
        mode: int = Mode.DELIVERY_MODE_UNSPECIFIED,
    ) -> list[DeliveryResult]:
        """Deliver ``events`` concurrently (as :meth:`deliver`); the results keep their order.

        Each outcome reaches the watchers as it happens; the observer (log lines, metrics)
        hears of the whole batch at once, so its per-record costs are paid once per batch.
        If the call is cancelled, the outcomes that were already reached are still observed.
        """
        if isinstance(self._dedup, DurableDedup):
            self._dedup.prefetch([event.message_id for event in events])  # one read, not one each
        # Every event's task starts in this context: the caller's span is the same for all.
        parent = trace.get_current_span().get_span_context()
        # The loop is looked up once: ensure_future finds it anew for every event.
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(self._deliver_published(event, deadline, mode, parent))
            for event in events
        ]
        try:
            outcomes = await asyncio.gather(*tasks)
        except BaseException:
            if self._observer is not None:
                finished = [
                    t.result()
                    for t in tasks
                    if t.done() and not t.cancelled() and not t.exception()
                ]
                if finished:
                    self._observer.on_outcomes(finished)
            raise
        if self._observer is not None:
            self._observer.on_outcomes(outcomes)
        return [result for result, _ in outcomes]

    async def _deliver_published(
        self,
        event: delivery_pb2.DataflyEvent,
        deadline: float,
        mode: int,
        parent: trace.SpanContext,
    ) -> tuple[DeliveryResult, bool]:
        started = self._clock()
        mode = mode or self._default_mode
        # The answer is due a little before the caller's deadline: building it, the span and
        # the gRPC reply take time too, more of it on a busy machine and for long calls.
        respond_by = deadline - deadline_margin(deadline - started)
        self.in_flight += 1
        try:
            if self._tracing and (not parent.is_valid or parent.trace_flags.sampled):
                result, dedup_hit = await self._deliver_traced(event, respond_by, started, mode)
            else:
                # Tracing is off, or the call is not sampled: every sampler we support decides
                # a child as it decided its parent, so a span here would never be recorded and
                # none is made. The trace id is the call's (or the caller's), if any.
                trace_id = format(parent.trace_id, "032x") if parent.is_valid else ""
                result, dedup_hit = await self._deliver(event, respond_by, started, trace_id, mode)
        finally:
            self.in_flight -= 1
        self._bus.publish(result)
        return result, dedup_hit

    async def _deliver_traced(
        self, event: delivery_pb2.DataflyEvent, respond_by: float, started: float, mode: int
    ) -> tuple[DeliveryResult, bool]:
        # One INTERNAL span per event: the decision and its outcome, as attributes a person
        # filters on in Jaeger; the HTTP tries are its CLIENT children, backoff waits its
        # events. Free-form values are scrubbed of email-shaped text.
        # Started and made current by hand: start_as_current_span's generator and use_span
        # cost more than the span itself. The outcome attributes are set at the end, at once.
        span = self._tracer.start_span(DELIVERY_SPAN)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            ctx = span.get_span_context()
            trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else ""
            result, dedup_hit = await self._deliver(event, respond_by, started, trace_id, mode)
            if span.is_recording():
                span.set_attributes(_span_attributes(result, dedup_hit, self._redactor))
                if result.status in _FAILED:
                    span.set_status(trace.StatusCode.ERROR, result.reason)
        finally:
            otel_context.detach(token)
            span.end()
        return result, dedup_hit

    async def _deliver(
        self,
        event: delivery_pb2.DataflyEvent,
        respond_by: float,
        started: float,
        trace_id: str,
        mode: int,
    ) -> tuple[DeliveryResult, bool]:
        invalid = check_message_id(event)
        if invalid is not None:
            return self._skip_result(event, invalid, started, trace_id), False
        dedup = self._dedup
        while True:
            try:
                # The in-memory table answers at once: no coroutine for it.
                claim = (
                    await dedup.claim(event.message_id)
                    if isinstance(dedup, DurableDedup)
                    else dedup.claim(event.message_id)
                )
            except Exception as exc:  # noqa: BLE001 - the durable store failed a lookup
                return self._internal_error(event, exc, started, trace_id), False
            if isinstance(claim, Claimed):
                break
            if isinstance(claim, Existing):
                return self._duplicate(event, claim.record, started, trace_id), True
            if isinstance(claim, Queued):
                return self._already_queued(event, claim.record, started, trace_id), True
            try:
                first = await claim.wait(respond_by - self._clock())
            except TimeoutError:
                return self._stamp(
                    _result(
                        event,
                        Status.DELIVERY_STATUS_FAILED_RETRYABLE,
                        reason="DUPLICATE_IN_FLIGHT",
                        detail="the same message_id is still being delivered and the deadline "
                        "ran out",
                    ),
                    started,
                    trace_id,
                ), True
            if first is None:
                continue  # the first caller gave up; try to claim the delivery ourselves
            if first.status == Status.DELIVERY_STATUS_DELIVERED:
                return self._duplicate(event, Record.of(first), started, trace_id), True
            # The first try did not land: its outcome is this caller's outcome too.
            shared = DeliveryResult()
            shared.CopyFrom(first)
            return self._stamp(shared, started, trace_id or first.trace_id), True
        stored = False
        try:
            result, stored = await self._decide_and_send(event, respond_by, started, trace_id, mode)
        except Exception as exc:  # noqa: BLE001 - one broken event must never fail a call or batch
            result = self._internal_error(event, exc, started, trace_id)
        except BaseException:
            # Cancelled (the caller left, or shutdown): no result to record. Waiters are told
            # the claim is free again, and one of them takes the delivery over.
            self._dedup.abandon(claim)
            raise
        if isinstance(self._dedup, DurableDedup):
            await self._dedup.finish(claim, result, stored=stored)
        else:
            self._dedup.finish(claim, result)
        return result, False

    def _internal_error(
        self, event: delivery_pb2.DataflyEvent, exc: Exception, started: float, trace_id: str
    ) -> DeliveryResult:
        # Only the type is logged: an exception's text may quote event data.
        _log.error("unexpected error", extra={"fields": {"error_type": type(exc).__name__}})
        return self._stamp(
            _result(
                event,
                Status.DELIVERY_STATUS_FAILED_RETRYABLE,
                reason="INTERNAL_ERROR",
                detail=f"the sidecar hit an unexpected {type(exc).__name__}; see its log",
            ),
            started,
            trace_id,
        )

    def _already_queued(
        self, event: delivery_pb2.DataflyEvent, record: Record, started: float, trace_id: str
    ) -> DeliveryResult:
        """The same answer as the first call got: QUEUED; nothing is queued twice."""
        result = _result(
            event,
            Status.DELIVERY_STATUS_QUEUED,
            bluecore_event=record.bluecore_event,
            reason=sk.ALREADY_QUEUED,
            detail=f"already in the durable queue (attempts so far {record.attempts}); "
            "not queued twice",
            http_status=record.http_status,
            attempts=record.attempts,
        )
        return self._stamp(result, started, trace_id)

    def _duplicate(
        self, event: delivery_pb2.DataflyEvent, record: Record, started: float, trace_id: str
    ) -> DeliveryResult:
        # The trace of the delivery that did send is the one worth following.
        skip = duplicate_skip(_earlier(record))
        result = self._skip_result(event, skip, started, record.trace_id or trace_id)
        result.http_status = record.http_status
        result.attempts = record.attempts
        return result

    async def _decide_and_send(
        self,
        event: delivery_pb2.DataflyEvent,
        respond_by: float,
        started: float,
        trace_id: str,
        mode: int,
    ) -> tuple[DeliveryResult, bool]:
        """The result, and whether the durable store already knows its message id."""
        decision = decide(event, self._rules, self._gates, self._now(), self._max_event_bytes)
        if isinstance(decision, Skip):
            return self._skip_result(event, decision, started, trace_id), False
        background = self._background
        if background is None:
            return await self._send(event, decision, respond_by, started, trace_id), False
        key = _ordering_key(decision)
        # The module's constant, not the enum wrapper's (its __getattr__ is Python code).
        if mode == delivery_pb2.DELIVERY_MODE_DIRECT:
            # Never queued, yet never ahead of what this customer has queued.
            if not await background.wait_for_key(key, respond_by):
                return self._stamp(
                    _result(
                        event,
                        Status.DELIVERY_STATUS_FAILED_RETRYABLE,
                        datafly_event=decision.datafly_event,
                        bluecore_event=decision.bluecore_event,
                        reason=sk.CUSTOMER_BUSY,
                        detail="earlier events of this customer are still in the durable queue; "
                        "a DIRECT delivery waits for them and the deadline came first",
                    ),
                    started,
                    trace_id,
                ), False
            return await self._send(event, decision, respond_by, started, trace_id), False
        result = await self._enqueue(
            event, decision, key, background, respond_by, started, trace_id, mode
        )
        return result, True

    async def _enqueue(  # noqa: PLR0917 - one event's state, passed down the pipeline
        self,
        event: delivery_pb2.DataflyEvent,
        decision: Send,
        key: str,
        background: BackgroundDelivery,
        respond_by: float,
        started: float,
        trace_id: str,
        mode: int,
    ) -> DeliveryResult:
        """Commit the event to the queue; in WAIT mode, answer with its first try's outcome."""
        # Memory answers for a file this process has alone: no coroutine for it.
        behind = background.pending_now(key)
        if behind is None:
            behind = await background.has_pending(key)
        now = self._now()
        entry = NewEntry(
            message_id=event.message_id,
            ordering_key=key,
            bluecore_event=decision.bluecore_event,
            payload=event.SerializeToString(),
            event_time=event.timestamp.seconds + event.timestamp.nanos / 1e9
            if event.HasField("timestamp")
            else now.timestamp(),
            # Tracing off: no span is current, and the traceparent would be empty anyway.
            traceparent=traceparent_of(trace.get_current_span()) if self._tracing else "",
        )
        first: DeliveryResult | None = None
        # The module's constants, not the enum wrapper's: its __getattr__ is Python code.
        wait = mode == delivery_pb2.DELIVERY_MODE_WAIT and not behind
        # Behind earlier events the first try may be minutes away: answer QUEUED at once.
        if wait and background.tries_first:
            # This task makes the first try itself, beside the (unsynced) commit.
            outcome, first = await background.try_first(entry, decision, respond_by)
            settled_here = isinstance(outcome, Enqueued) and outcome.claim is not None
            delivered = first is not None and first.status == delivery_pb2.DELIVERY_STATUS_DELIVERED
            if first is not None and (
                settled_here or (delivered and not isinstance(outcome, Duplicate))
            ):
                # The try's own outcome: delivered (even if a full queue refused the entry:
                # Bluecore has it), kept in the queue for later, or a dead letter. The result
                # is this call's alone: no copy.
                first.datafly_event = decision.datafly_event
                return self._stamp(first, started, trace_id)
            if isinstance(outcome, Enqueued):
                # QUEUED promises the disk, and the commit skipped the fsync.
                await background.sync()
                if outcome.claim is None:
                    # An entry of the customer came first: this one waits its turn, and the
                    # try's outcome (not a delivery) is not the event's.
                    behind, first = True, None
            detail = _SHUTTING_DOWN if background.stopping else "; its first try is settled later"
        elif wait:
            outcome, first, detail = await self._enqueue_and_wait(entry, background, respond_by)
        else:
            [outcome] = await background.enqueue([entry])
            detail = ""
        if isinstance(outcome, QueueFull):
            result = _result(
                event,
                Status.DELIVERY_STATUS_FAILED_RETRYABLE,
                reason=sk.QUEUE_FULL,
                detail=f"{outcome.detail} ({outcome.cause}); nothing was accepted",
                datafly_event=decision.datafly_event,
                bluecore_event=decision.bluecore_event,
            )
            return self._stamp(result, started, trace_id)
        if isinstance(outcome, Duplicate):
            record = Record(
                datafly_event=decision.datafly_event,
                bluecore_event=outcome.record.bluecore_event,
                http_status=outcome.record.http_status,
                attempts=outcome.record.attempts,
            )
            if outcome.record.state == "queued":
                return self._already_queued(event, record, started, trace_id)
            return self._duplicate(event, record, started, trace_id)
        if first is not None:
            return self._stamp(_copy(first, decision.datafly_event), started, trace_id)
        if behind:
            detail = ", after the earlier queued events of this customer"
        return self._stamp(
            _result(
                event,
                Status.DELIVERY_STATUS_QUEUED,
                detail="committed to the durable queue; delivered in the background" + detail,
                datafly_event=decision.datafly_event,
                bluecore_event=decision.bluecore_event,
            ),
            started,
            trace_id,
        )

    async def _enqueue_and_wait(
        self, entry: NewEntry, background: BackgroundDelivery, respond_by: float
    ) -> tuple[EnqueueOutcome, DeliveryResult | None, str]:
        """WAIT on a shared file: commit the entry (claimed when it is the customer's only
        one), then wait for its first try from the workers within the deadline. Returns the
        outcome, the try's result if it came, and what to add to a QUEUED answer's detail."""
        waiter = background.register(entry.message_id, respond_by)
        try:
            [outcome] = await background.enqueue([entry], try_now=True)
            if not isinstance(outcome, Enqueued):
                return outcome, None, ""
            try:
                first = await waiter.wait(respond_by - self._clock())
            except TimeoutError:
                return outcome, None, "; the first try did not finish before the deadline"
            if first is None:
                return outcome, None, _SHUTTING_DOWN
            return outcome, first, ""
        finally:
            background.unregister(entry.message_id, waiter)

    async def _send(
        self,
        event: delivery_pb2.DataflyEvent,
        decision: Send,
        respond_by: float,
        started: float,
        trace_id: str,
    ) -> DeliveryResult:
        if self._client is None:
            raise RuntimeError("this Deliverer was built for previews only")
        client = self._client
        requests = decision.requests
        if len(requests) == 1:
            # The common case needs no task of its own.
            [request] = requests
            outcomes = [await client.send(request.body, respond_by, encoded=request.encoded)]
        else:
            outcomes = await asyncio.gather(
                *(
                    client.send(request.body, respond_by, encoded=request.encoded)
                    for request in requests
                )
            )
        outcome = worst(outcomes)
        status = _STATUS_OF_VERDICT[outcome.verdict]
        detail = outcome.detail
        if len(outcomes) > 1:
            delivered = sum(o.verdict is Verdict.DELIVERED for o in outcomes)
            detail = f"{delivered} of {len(outcomes)} requests accepted; {detail}"
        result = _result(
            event,
            status,
            datafly_event=decision.datafly_event,
            bluecore_event=decision.bluecore_event,
            reason=outcome.reason,
            detail=detail,
            http_status=outcome.http_status,
            attempts=sum(o.attempts for o in outcomes),
        )
        if outcome.retry_after is not None:
            _set_duration(result.retry_after, outcome.retry_after)
        return self._stamp(result, started, trace_id)

    def _skip_result(
        self, event: delivery_pb2.DataflyEvent, skip: Skip, started: float, trace_id: str
    ) -> DeliveryResult:
        result = _result(
            event,
            skip.status,
            datafly_event=skip.datafly_event,
            bluecore_event=skip.bluecore_event,
            reason=skip.reason,
            detail=skip.detail,
        )
        return self._stamp(result, started, trace_id)

    def _stamp(self, result: DeliveryResult, started: float, trace_id: str) -> DeliveryResult:
        """Set the latency (now) and the trace id on ``result``."""
        _set_duration(result.latency, self._clock() - started)
        result.trace_id = trace_id
        return result


def _copy(result: DeliveryResult, datafly_event: str) -> DeliveryResult:
    """A background try's result as this call's answer (the try's object stays its own)."""
    answer = DeliveryResult()
    answer.CopyFrom(result)
    answer.datafly_event = datafly_event
    return answer


def _ordering_key(decision: Send) -> str:
    """The customer an event belongs to: its Bluecore ``distinct_id``."""
    properties = decision.requests[0].body.get("properties")
    return str(properties.get("distinct_id", "")) if isinstance(properties, dict) else ""


def _earlier(record: Record) -> Earlier:
    return Earlier(
        in_flight=False,
        attempts=record.attempts,
        http_status=record.http_status,
        datafly_event=record.datafly_event,
        bluecore_event=record.bluecore_event,
    )


def _result(
    event: delivery_pb2.DataflyEvent,
    status: int,
    *,
    datafly_event: str = "",
    bluecore_event: str = "",
    reason: str = "",
    detail: str = "",
    http_status: int = 0,
    attempts: int = 0,
) -> DeliveryResult:
    # Every text field is bounded here, once: a 60 kB event name must not make a result, a
    # dedup record or a batch reply 60 kB bigger.
    return new_result(
        message_id=event.message_id[:MAX_MESSAGE_ID_LENGTH],
        status=status,
        datafly_event=datafly_event,
        bluecore_event=bluecore_event,
        reason=reason,
        detail=detail,
        http_status=http_status,
        attempts=attempts,
    )


_SHUTTING_DOWN = "; the sidecar is shutting down, so it is sent after the restart"

#: Name of the span that covers one event's delivery.
DELIVERY_SPAN = "bluecore.deliver"


def _span_attributes(
    result: DeliveryResult, dedup_hit: bool, redactor: Redactor
) -> dict[str, str | int | bool]:
    return {
        **results.span_attributes(result, redactor.scrub),
        "datafly.event": redactor.scrub(result.datafly_event),
        "delivery.duplicate": dedup_hit,
    }


_STATUS_OF_VERDICT = {
    Verdict.DELIVERED: Status.DELIVERY_STATUS_DELIVERED,
    Verdict.PERMANENT: Status.DELIVERY_STATUS_FAILED_PERMANENT,
    Verdict.RETRY: Status.DELIVERY_STATUS_FAILED_RETRYABLE,
}

_FAILED = frozenset(
    {
        Status.DELIVERY_STATUS_FAILED_PERMANENT,
        Status.DELIVERY_STATUS_FAILED_RETRYABLE,
        Status.DELIVERY_STATUS_REJECTED_INVALID,
    }
)


def _set_duration(target: duration_pb2.Duration, seconds: float) -> None:
    """Set ``target`` to ``seconds`` (negative: 0), to the microsecond as before.

    Setting the two fields directly: ``Duration.FromTimedelta`` builds a timedelta and goes
    through integer nanoseconds, several microseconds per result.
    """
    micros = round(max(seconds, 0.0) * 1_000_000)
    target.seconds, rest = divmod(micros, 1_000_000)
    target.nanos = rest * 1000
