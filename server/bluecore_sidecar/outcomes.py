"""The outcome bus: every finished delivery, fanned out to live watchers and observers.

Publishing never blocks delivery: each watcher has a bounded queue, and a slow one loses
outcomes (counted) rather than holding anyone up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Protocol

from datafly.bluecore.v1 import delivery_pb2

DeliveryResult = delivery_pb2.DeliveryResult


class OutcomeObserver(Protocol):
    """Told about every finished delivery (logs, metrics)."""

    def on_outcome(self, result: DeliveryResult, dedup_hit: bool) -> None:
        """Record one outcome."""

    def on_outcomes(self, outcomes: Sequence[tuple[DeliveryResult, bool]]) -> None:
        """Record the outcomes of one batch, in request order, with their dedup flags."""


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
