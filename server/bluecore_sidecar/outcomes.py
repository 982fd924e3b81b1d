"""The outcome bus: every finished delivery, for live watchers and observers.

Publishing costs the same whatever the number of watchers: an outcome is appended once to one
shared ring, and only watchers that had caught up and want it are woken. Each watcher reads
the ring at its own pace through a cursor; one that falls more than the ring behind skips
ahead and counts what it missed. What watchers may send in total is paced
(:data:`WATCH_SENDS_PER_SECOND`, shared first come first served), because each message on a
stream costs the event loop a write whether or not the client ever reads it: 500 idle streams
must not take the loop from delivery.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Protocol

from datafly.bluecore.v1 import delivery_pb2

from .errors import Overloaded

DeliveryResult = delivery_pb2.DeliveryResult

#: Messages all watch streams together may send per second; past it they lose outcomes.
WATCH_SENDS_PER_SECOND: Final = 500.0
#: Messages the watchers may send at once after a quiet spell, above the steady rate.
WATCH_SEND_BURST: Final = 200
#: Outcomes each watcher may still send, unpaced, once the bus is closed (shutdown): a live
#: viewer sees the last outcomes, and ending all streams costs a bounded number of writes.
CLOSE_FLUSH: Final = 100


class OutcomeObserver(Protocol):
    """Told about every finished delivery (logs, metrics)."""

    def on_outcome(self, result: DeliveryResult, dedup_hit: bool) -> None:
        """Record one outcome."""

    def on_outcomes(self, outcomes: Sequence[tuple[DeliveryResult, bool]]) -> None:
        """Record the outcomes of one batch, in request order, with their dedup flags."""


class OutcomeBus:
    """One ring of the last ``buffer`` outcomes, read by at most ``max_watchers`` watchers.

    ``on_drop`` hears of every outcome a watcher lost (the number, as it is noticed).
    """

    def __init__(
        self,
        buffer: int,
        *,
        max_watchers: int = 100,
        sends_per_second: float = WATCH_SENDS_PER_SECOND,
        burst: int = WATCH_SEND_BURST,
        on_drop: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_watchers = max_watchers
        self._ring: collections.deque[DeliveryResult] = collections.deque(maxlen=buffer)
        #: Sequence number of the next outcome; the ring holds ``[_seq - len(_ring), _seq)``.
        self._seq = 0
        # Per status: outcomes published, and outcomes that have left the ring. A watcher's
        # losses are what left the ring before it read them, counted by its statuses.
        self._published: collections.Counter[int] = collections.Counter()
        self._evicted: collections.Counter[int] = collections.Counter()
        # Watchers that have caught up wait on one event per status filter, so an outcome
        # wakes only those that want it: the work of a publish grows with the number of
        # distinct filters in use (a handful), never with the number of watchers.
        self._changed: dict[frozenset[int], asyncio.Event] = {}
        self._waiting: collections.Counter[frozenset[int]] = collections.Counter()
        self._closed = False
        self._watchers: set[Watcher] = set()
        self._pace = _Pace(sends_per_second, burst, clock)
        self._on_drop = on_drop

    def subscribe(self, statuses: Iterable[int] = ()) -> Watcher:
        """Start watching from the next outcome; call :meth:`Watcher.close` when done.

        Raises :class:`~.errors.Overloaded` (``TOO_MANY_WATCHERS``) at ``max_watchers``.
        """
        if len(self._watchers) >= self.max_watchers:
            raise Overloaded(
                "TOO_MANY_WATCHERS",
                f"the sidecar serves at most {self.max_watchers} WatchDeliveries streams; "
                "close one first (SIDECAR_MAX_WATCHERS)",
                limit=str(self.max_watchers),
            )
        watcher = Watcher(self, frozenset(statuses))
        self._watchers.add(watcher)
        return watcher

    def publish(self, result: DeliveryResult) -> None:
        """Add ``result`` to the ring and wake the watchers waiting for one (never blocks)."""
        if self._closed:
            return
        if len(self._ring) == self._ring.maxlen:
            self._evicted[self._ring[0].status] += 1
        self._ring.append(result)
        self._published[result.status] += 1
        self._seq += 1
        if self._waiting:
            status = result.status
            for statuses in [f for f in self._waiting if not f or status in f]:
                self._wake(statuses)

    def close_all(self) -> None:
        """End every watch stream (shutdown) once it has sent the last outcomes it wants, at
        most :data:`CLOSE_FLUSH`; older unread ones count as dropped."""
        self._closed = True
        for statuses in list(self._changed):
            self._wake(statuses)

    @property
    def watcher_count(self) -> int:
        """Number of live watchers."""
        return len(self._watchers)

    def _wake(self, statuses: frozenset[int]) -> None:
        # One event per round of waiting: those waiting on it wake, later ones get a new one.
        event = self._changed.pop(statuses, None)
        if event is not None:
            event.set()

    async def _wait(self, statuses: frozenset[int]) -> None:
        event = self._changed.get(statuses)
        if event is None:
            event = self._changed[statuses] = asyncio.Event()
        self._waiting[statuses] += 1
        try:
            await event.wait()
        finally:
            self._waiting[statuses] -= 1
            if not self._waiting[statuses]:
                del self._waiting[statuses]

    def _count(self, tally: collections.Counter[int], statuses: frozenset[int]) -> int:
        if not statuses:
            return tally.total()
        return sum(tally[status] for status in statuses)

    def _remove(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def _dropped(self, count: int) -> None:
        if self._on_drop is not None and count:
            self._on_drop(count)


class Watcher:
    """One subscriber's cursor into the bus's ring."""

    def __init__(self, bus: OutcomeBus, statuses: frozenset[int]) -> None:
        self._bus = bus
        self._statuses = statuses
        self._cursor = bus._seq
        # Outcomes this watcher wants with a sequence number below the cursor: read, or
        # published before it subscribed, or already counted as lost.
        self._passed = bus._count(bus._published, statuses)
        self._lost = 0
        self._flushed = 0

    @property
    def dropped(self) -> int:
        """Outcomes this watcher wanted and lost because it read too slowly."""
        return self._lost + self._behind()

    async def next(self) -> DeliveryResult | None:
        """The next wanted outcome, or ``None`` once the bus is closed and this one has sent
        the last ones it may (:data:`CLOSE_FLUSH`)."""
        bus = self._bus
        while True:
            if bus._closed:
                return self._flush()
            self._skip_ahead()
            if self._find() is None:
                await bus._wait(self._statuses)
                continue
            # Its turn among all watchers first; the ring may have moved on meanwhile.
            await bus._pace.turn()
            if bus._closed:
                return self._flush()
            self._skip_ahead()
            found = self._find()
            if found is not None:
                self._cursor, result = found
                self._passed += 1
                return result

    def _flush(self) -> DeliveryResult | None:
        """After the bus closed: the next of the last outcomes it may still send, or None."""
        self._skip_ahead()
        bus = self._bus
        if self._flushed == 0:
            # Only the newest CLOSE_FLUSH wanted outcomes go out; the others are lost.
            oldest = bus._seq - len(bus._ring)
            wanted = [
                seq
                for seq in range(self._cursor, bus._seq)
                if not self._statuses or bus._ring[seq - oldest].status in self._statuses
            ]
            lost = max(0, len(wanted) - CLOSE_FLUSH)
            if lost:
                self._lost += lost
                self._passed += lost
                self._cursor = wanted[lost]
                bus._dropped(lost)
        found = self._find()
        if found is None:
            return None
        self._flushed += 1
        self._cursor, result = found
        self._passed += 1
        return result

    def close(self) -> None:
        """Stop watching; what it lost without noticing yet is counted now."""
        self._bus._dropped(self._behind())
        self._bus._remove(self)

    def _behind(self) -> int:
        """Wanted outcomes that left the ring before this watcher read them (not yet counted)."""
        bus = self._bus
        if self._cursor >= bus._seq - len(bus._ring):
            return 0
        return bus._count(bus._evicted, self._statuses) - self._passed

    def _skip_ahead(self) -> None:
        bus = self._bus
        oldest = bus._seq - len(bus._ring)
        if self._cursor < oldest:
            lost = self._behind()
            self._lost += lost
            self._passed += lost
            self._cursor = oldest
            bus._dropped(lost)

    def _find(self) -> tuple[int, DeliveryResult] | None:
        """(cursor after it, the first wanted outcome at or after the cursor), if any.

        Unwanted outcomes passed on the way move the cursor on for good.
        """
        bus = self._bus
        oldest = bus._seq - len(bus._ring)
        for seq in range(self._cursor, bus._seq):
            result = bus._ring[seq - oldest]
            if not self._statuses or result.status in self._statuses:
                return seq + 1, result
            self._cursor = seq + 1
        return None


class _Pace:
    """A token bucket shared by every watcher: ``rate`` sends a second, ``burst`` at once.

    Watchers wait their turn in one FIFO lock, so a waiting watcher costs nothing per outcome
    published and each granted send wakes exactly one watcher.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._burst = float(max(1, burst))
        self._tokens = self._burst
        self._clock = clock
        self._last = clock()
        self._lock = asyncio.Lock()

    async def turn(self) -> None:
        """Wait until one more send is allowed, and take it."""
        async with self._lock:
            while True:
                now = self._clock()
                self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
                self._last = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) / self._rate)
