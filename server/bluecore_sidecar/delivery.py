"""The delivery pipeline: dedup -> decide (map and gate) -> send -> DeliveryResult.

:class:`Deliverer` owns the in-memory dedup table and publishes every outcome to the
:class:`OutcomeBus` (the live view) and to the observer (logs and metrics). It never raises for
an event: whatever happens to one event becomes its ``DeliveryResult``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from datafly.bluecore.v1 import delivery_pb2
from google.protobuf import duration_pb2
from opentelemetry import trace

from .decision import Send, Skip, decide
from .gates import GatePolicy
from .mapping import MappingRules
from .redaction import Redactor
from .upstream import DEADLINE_MARGIN, SendOutcome, UpstreamClient, Verdict

Status = delivery_pb2.DeliveryStatus
DeliveryResult = delivery_pb2.DeliveryResult

MAX_MESSAGE_ID_LENGTH = 256

_log = logging.getLogger("bluecore_sidecar")


class OutcomeObserver(Protocol):
    """Told about every finished delivery (logs, metrics)."""

    def on_outcome(self, result: DeliveryResult, dedup_hit: bool) -> None:
        """Record one outcome."""


class OutcomeBus:
    """Fans outcomes out to live watchers without ever blocking delivery.

    Each watcher has a bounded queue; when it is full the newest outcome is dropped for that
    watcher and counted, so a stalled watcher costs memory bounded by its buffer and nothing
    else.
    """

    def __init__(self, buffer: int) -> None:
        self._buffer = buffer
        self._watchers: set[Watcher] = set()

    def subscribe(self, statuses: Iterable[int] = ()) -> Watcher:
        """Start watching; call :meth:`Watcher.close` when done."""
        watcher = Watcher(self, frozenset(statuses), self._buffer)
        self._watchers.add(watcher)
        return watcher

    def publish(self, result: DeliveryResult) -> None:
        """Offer ``result`` to every watcher whose filter accepts it."""
        for watcher in self._watchers:
            watcher.offer(result)

    def close_all(self) -> None:
        """End every watch stream (shutdown)."""
        for watcher in list(self._watchers):
            watcher.end()

    def _remove(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    @property
    def watcher_count(self) -> int:
        """Number of live watchers."""
        return len(self._watchers)


class Watcher:
    """One subscriber's bounded queue of outcomes (``None`` marks the end)."""

    def __init__(self, bus: OutcomeBus, statuses: frozenset[int], buffer: int) -> None:
        self._bus = bus
        self._statuses = statuses
        self._queue: asyncio.Queue[DeliveryResult | None] = asyncio.Queue(buffer)
        self.dropped = 0

    def offer(self, result: DeliveryResult) -> None:
        """Queue ``result`` if wanted and there is room; count it as dropped otherwise."""
        if self._statuses and result.status not in self._statuses:
            return
        try:
            self._queue.put_nowait(result)
        except asyncio.QueueFull:
            self.dropped += 1

    def end(self) -> None:
        """Make :meth:`next` return ``None`` once the queued outcomes are read."""
        # Room is made for the end marker so a full queue cannot keep a stream open.
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(None)

    async def next(self) -> DeliveryResult | None:
        """The next outcome, or ``None`` when the stream has ended."""
        return await self._queue.get()

    def close(self) -> None:
        """Stop watching."""
        self._bus._remove(self)


@dataclasses.dataclass(slots=True)
class _Entry:
    expires: float
    result: DeliveryResult | None = None
    waiters: asyncio.Future[DeliveryResult] | None = None


class DedupTable:
    """Message ids delivered (or in flight) within the window, bounded in size.

    Only ``DELIVERED`` outcomes are remembered: a caller that got ``FAILED_RETRYABLE`` must be
    able to send the same message again. Entries expire after the window; past the size bound
    the oldest go first.
    """

    def __init__(
        self, window: timedelta, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._window = window.total_seconds()
        self._max = max_entries
        self._clock = clock
        self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()

    def lookup(self, message_id: str) -> _Entry | None:
        """The live entry for ``message_id``, if any."""
        entry = self._entries.get(message_id)
        if entry is None:
            return None
        if entry.waiters is None and entry.expires <= self._clock():
            del self._entries[message_id]
            return None
        return entry

    def begin(self, message_id: str) -> _Entry:
        """Mark ``message_id`` as in flight."""
        loop = asyncio.get_running_loop()
        entry = _Entry(expires=self._clock() + self._window, waiters=loop.create_future())
        self._entries[message_id] = entry
        self._entries.move_to_end(message_id)
        self._trim()
        return entry

    def finish(self, message_id: str, entry: _Entry, result: DeliveryResult) -> None:
        """Record the outcome of an in-flight message and wake those waiting on it."""
        if entry.waiters is not None and not entry.waiters.done():
            entry.waiters.set_result(result)
        entry.waiters = None
        if result.status == Status.DELIVERY_STATUS_DELIVERED:
            entry.result = result
            entry.expires = self._clock() + self._window
        elif self._entries.get(message_id) is entry:
            del self._entries[message_id]

    def _trim(self) -> None:
        now = self._clock()
        while len(self._entries) > self._max:
            key, oldest = next(iter(self._entries.items()))
            if (
                oldest.waiters is not None
                and oldest.expires > now
                and len(self._entries) <= 2 * self._max
            ):
                # In-flight entries are kept unless the table is badly overfull.
                self._entries.move_to_end(key)
                break
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


class Deliverer:
    """Turns one ``DataflyEvent`` into one ``DeliveryResult``."""

    def __init__(
        self,
        *,
        rules: MappingRules,
        gates: GatePolicy,
        client: UpstreamClient | None,
        dedup: DedupTable,
        bus: OutcomeBus,
        observer: OutcomeObserver | None = None,
        tracer: trace.Tracer | None = None,
        max_event_bytes: int = 65536,
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
        self._observer = observer
        self._tracer = tracer or trace.NoOpTracer()
        self._max_event_bytes = max_event_bytes
        self._now = now
        self._clock = clock
        #: Deliveries started and not finished (the in-flight gauge).
        self.in_flight = 0

    def preview(self, event: delivery_pb2.DataflyEvent) -> tuple[DeliveryResult, list[str]]:
        """The decision for ``event`` and the redacted JSON bodies that would be sent."""
        started = self._clock()
        decision = decide(event, self._rules, self._gates, self._now(), self._max_event_bytes)
        if isinstance(decision, Skip):
            return self._skip_result(event, decision, started), []
        result = self._result(
            event,
            Status.DELIVERY_STATUS_DELIVERED,
            started,
            datafly_event=decision.datafly_event,
            bluecore_event=decision.bluecore_event,
            detail="would be sent",
        )
        return result, [request.redacted_json() for request in decision.requests]

    async def deliver(self, event: delivery_pb2.DataflyEvent, deadline: float) -> DeliveryResult:
        """Deliver ``event``, finishing before ``deadline`` (``time.monotonic`` clock)."""
        started = self._clock()
        self.in_flight += 1
        try:
            # One INTERNAL span per event: the decision and its outcome, as attributes a person
            # filters on in Jaeger; the HTTP tries are its CLIENT children, backoff waits its
            # events. Free-form values are scrubbed of email-shaped text.
            with self._tracer.start_as_current_span(DELIVERY_SPAN) as span:
                result, dedup_hit = await self._deliver(event, deadline, started)
                ctx = span.get_span_context()
                if ctx.is_valid and not result.trace_id:
                    result.trace_id = format(ctx.trace_id, "032x")
                if span.is_recording():
                    span.set_attributes(_span_attributes(result, dedup_hit, self._redactor))
                    if result.status in _FAILED:
                        span.set_status(trace.StatusCode.ERROR, result.reason)
        finally:
            self.in_flight -= 1
        self._bus.publish(result)
        if self._observer is not None:
            self._observer.on_outcome(result, dedup_hit)
        return result

    async def _deliver(
        self, event: delivery_pb2.DataflyEvent, deadline: float, started: float
    ) -> tuple[DeliveryResult, bool]:
        message_id = event.message_id
        if not message_id.strip() or len(message_id) > MAX_MESSAGE_ID_LENGTH:
            skip = Skip(
                status=Status.DELIVERY_STATUS_REJECTED_INVALID,
                reason="MISSING_MESSAGE_ID" if not message_id.strip() else "MESSAGE_ID_TOO_LONG",
                detail="message_id is required: it is the idempotency key"
                if not message_id.strip()
                else f"message_id is longer than {MAX_MESSAGE_ID_LENGTH} characters",
            )
            return self._skip_result(event, skip, started), False
        existing = self._dedup.lookup(message_id)
        if existing is not None:
            return await self._duplicate(event, existing, deadline, started), True
        entry = self._dedup.begin(message_id)
        result = DeliveryResult(message_id=message_id)
        try:
            result = await self._decide_and_send(event, deadline, started)
        except Exception as exc:  # noqa: BLE001 - one broken event must never fail a call or batch
            # Only the type is logged: an exception's text may quote event data.
            _log.error("unexpected error", extra={"fields": {"error_type": type(exc).__name__}})
            result = self._result(
                event,
                Status.DELIVERY_STATUS_FAILED_RETRYABLE,
                started,
                reason="INTERNAL_ERROR",
                detail=f"the sidecar hit an unexpected {type(exc).__name__}; see its log",
            )
        finally:
            # Runs on cancellation too, so waiters are never left hanging.
            if not result.status:
                result = self._result(
                    event,
                    Status.DELIVERY_STATUS_FAILED_RETRYABLE,
                    started,
                    reason="CANCELLED",
                    detail="the delivery was cancelled before it finished",
                )
            self._dedup.finish(message_id, entry, result)
        return result, False

    async def _duplicate(
        self, event: delivery_pb2.DataflyEvent, entry: _Entry, deadline: float, started: float
    ) -> DeliveryResult:
        first = entry.result
        if first is None and entry.waiters is not None:
            # Keep the same margin as upstream sends, so the answer beats the caller's deadline.
            remaining = deadline - DEADLINE_MARGIN - self._clock()
            try:
                first = await asyncio.wait_for(asyncio.shield(entry.waiters), max(remaining, 0))
            except TimeoutError:
                return self._result(
                    event,
                    Status.DELIVERY_STATUS_FAILED_RETRYABLE,
                    started,
                    reason="DUPLICATE_IN_FLIGHT",
                    detail="the same message_id is still being delivered and the deadline ran out",
                )
            if first.status != Status.DELIVERY_STATUS_DELIVERED:
                # The first try did not land: its outcome is this caller's outcome too.
                shared = DeliveryResult()
                shared.CopyFrom(first)
                shared.latency.CopyFrom(_duration(self._clock() - started))
                return shared
        assert first is not None
        result = DeliveryResult()
        result.CopyFrom(first)
        result.status = Status.DELIVERY_STATUS_SKIPPED_DUPLICATE
        result.reason = "DUPLICATE_MESSAGE_ID"
        result.detail = (
            f"already delivered (attempts {first.attempts}, HTTP {first.http_status}); "
            "nothing was sent again"
        )
        result.latency.CopyFrom(_duration(self._clock() - started))
        return result

    async def _decide_and_send(
        self, event: delivery_pb2.DataflyEvent, deadline: float, started: float
    ) -> DeliveryResult:
        decision = decide(event, self._rules, self._gates, self._now(), self._max_event_bytes)
        if isinstance(decision, Skip):
            return self._skip_result(event, decision, started)
        return await self._send(event, decision, deadline, started)

    async def _send(
        self, event: delivery_pb2.DataflyEvent, decision: Send, deadline: float, started: float
    ) -> DeliveryResult:
        if self._client is None:
            raise RuntimeError("this Deliverer was built for previews only")
        client = self._client
        if len(decision.requests) == 1:
            # The common case needs no task of its own.
            outcomes = [await client.send(decision.requests[0].to_json_bytes(), deadline)]
        else:
            outcomes = await asyncio.gather(
                *(client.send(request.to_json_bytes(), deadline) for request in decision.requests)
            )
        outcome = _combine(outcomes)
        status = {
            Verdict.DELIVERED: Status.DELIVERY_STATUS_DELIVERED,
            Verdict.PERMANENT: Status.DELIVERY_STATUS_FAILED_PERMANENT,
            Verdict.RETRY: Status.DELIVERY_STATUS_FAILED_RETRYABLE,
        }[outcome.verdict]
        detail = outcome.detail
        if len(outcomes) > 1:
            delivered = sum(o.verdict is Verdict.DELIVERED for o in outcomes)
            detail = f"{delivered} of {len(outcomes)} requests accepted; {detail}"
        result = self._result(
            event,
            status,
            started,
            datafly_event=decision.datafly_event,
            bluecore_event=decision.bluecore_event,
            reason=outcome.reason,
            detail=detail,
            http_status=outcome.http_status,
            attempts=sum(o.attempts for o in outcomes),
        )
        if outcome.retry_after is not None:
            result.retry_after.CopyFrom(_duration(outcome.retry_after))
        return result

    def _skip_result(
        self, event: delivery_pb2.DataflyEvent, skip: Skip, started: float
    ) -> DeliveryResult:
        return self._result(
            event,
            skip.status,
            started,
            datafly_event=skip.datafly_event,
            bluecore_event=skip.bluecore_event,
            reason=skip.reason,
            detail=skip.detail,
        )

    def _result(
        self,
        event: delivery_pb2.DataflyEvent,
        status: int,
        started: float,
        *,
        datafly_event: str = "",
        bluecore_event: str = "",
        reason: str = "",
        detail: str = "",
        http_status: int = 0,
        attempts: int = 0,
    ) -> DeliveryResult:
        result = DeliveryResult(
            message_id=event.message_id[:MAX_MESSAGE_ID_LENGTH],
            status=status,  # type: ignore[arg-type]
            datafly_event=datafly_event,
            bluecore_event=bluecore_event,
            reason=reason,
            detail=detail,
            http_status=http_status,
            attempts=attempts,
        )
        result.latency.CopyFrom(_duration(self._clock() - started))
        return result


#: Name of the span that covers one event's delivery.
DELIVERY_SPAN = "bluecore.deliver"


def _span_attributes(
    result: DeliveryResult, dedup_hit: bool, redactor: Redactor
) -> dict[str, str | int | bool]:
    attributes: dict[str, str | int | bool] = {
        "datafly.message_id": redactor.scrub(result.message_id),
        "datafly.event": redactor.scrub(result.datafly_event),
        "bluecore.event": result.bluecore_event,
        "delivery.status": Status.Name(result.status).removeprefix("DELIVERY_STATUS_"),
        "delivery.attempts": result.attempts,
        "delivery.duplicate": dedup_hit,
    }
    if result.reason:
        attributes["delivery.reason"] = result.reason
    if result.http_status:
        attributes["http.response.status_code"] = result.http_status
    return attributes


_FAILED = frozenset(
    {
        Status.DELIVERY_STATUS_FAILED_PERMANENT,
        Status.DELIVERY_STATUS_FAILED_RETRYABLE,
        Status.DELIVERY_STATUS_REJECTED_INVALID,
    }
)


def _combine(outcomes: list[SendOutcome]) -> SendOutcome:
    """One event's verdict from its requests: permanent beats retryable beats delivered."""
    for verdict in (Verdict.PERMANENT, Verdict.RETRY):
        for outcome in outcomes:
            if outcome.verdict is verdict:
                return outcome
    return outcomes[-1]


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromTimedelta(timedelta(seconds=max(seconds, 0.0)))
    return value
