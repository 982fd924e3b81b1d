"""The dedup table: which message ids were delivered, or are being delivered, right now.

The pipeline asks :meth:`DedupTable.claim` before sending. The answer is one of three:
:class:`Claimed` (this caller sends, then calls :meth:`~DedupTable.finish` or, when it is
cancelled, :meth:`~DedupTable.abandon`), :class:`Existing` (a compact :class:`Record` of the
earlier delivery) or :class:`InFlight` (another caller is sending; :meth:`InFlight.wait` for
its outcome). Futures and their shielding stay inside this module, so a durable backend can
implement the same API.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeAlias

from datafly.bluecore.v1 import delivery_pb2

Status = delivery_pb2.DeliveryStatus
DeliveryResult = delivery_pb2.DeliveryResult


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """What is kept of one delivered message id: enough to answer a duplicate."""

    datafly_event: str
    bluecore_event: str
    http_status: int
    attempts: int
    trace_id: str = ""

    @classmethod
    def of(cls, result: DeliveryResult) -> Record:
        """The record of a delivered ``result``."""
        return cls(
            datafly_event=result.datafly_event,
            bluecore_event=result.bluecore_event,
            http_status=result.http_status,
            attempts=result.attempts,
            trace_id=result.trace_id,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Claimed:
    """This caller owns the delivery of ``message_id`` until it finishes or abandons it."""

    message_id: str
    _entry: _Entry = dataclasses.field(repr=False, compare=False)


@dataclasses.dataclass(frozen=True, slots=True)
class Existing:
    """``message_id`` was delivered within the window."""

    record: Record


class InFlight:
    """Another caller is delivering the same message id now."""

    def __init__(self, done: asyncio.Future[DeliveryResult | None]) -> None:
        self._done = done

    async def wait(self, timeout: float) -> DeliveryResult | None:
        """The first caller's result; ``None`` if it gave up (claim again).

        Raises ``TimeoutError`` after ``timeout`` seconds. Cancelling the waiter never
        cancels the delivery it waits for.
        """
        return await asyncio.wait_for(asyncio.shield(self._done), max(timeout, 0.0))


Claim: TypeAlias = Claimed | Existing | InFlight


@dataclasses.dataclass(slots=True)
class _Entry:
    expires: float
    record: Record | None = None
    done: asyncio.Future[DeliveryResult | None] | None = None


class DedupTable:
    """Message ids delivered (or in flight) within the window, bounded by ``max_entries``.

    Only ``DELIVERED`` outcomes are remembered: a caller that got ``FAILED_RETRYABLE`` must be
    able to send the same message again. Entries expire after the window; past the size bound
    the oldest go first (in-flight ones only when the table is twice over).
    """

    def __init__(
        self, window: timedelta, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._window = window.total_seconds()
        self._max = max_entries
        self._clock = clock
        self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()

    def peek(self, message_id: str) -> Record | InFlight | None:
        """What :meth:`claim` would find, without claiming (for Preview)."""
        entry = self._live(message_id)
        if entry is None:
            return None
        if entry.done is not None:
            return InFlight(entry.done)
        return entry.record

    def claim(self, message_id: str) -> Claim:
        """Claim ``message_id`` for delivery, or say who already has it."""
        entry = self._live(message_id)
        if entry is not None:
            if entry.done is not None:
                return InFlight(entry.done)
            assert entry.record is not None
            return Existing(entry.record)
        fresh = _Entry(
            expires=self._clock() + self._window,
            done=asyncio.get_running_loop().create_future(),
        )
        self._entries[message_id] = fresh
        self._entries.move_to_end(message_id)
        self._trim()
        return Claimed(message_id, fresh)

    def finish(self, claim: Claimed, result: DeliveryResult) -> None:
        """Record the claimed delivery's ``result`` and hand it to those waiting."""
        entry = claim._entry
        self._wake(entry, result)
        if result.status == Status.DELIVERY_STATUS_DELIVERED:
            entry.record = Record.of(result)
            entry.expires = self._clock() + self._window
        else:
            self._forget(claim)

    def abandon(self, claim: Claimed) -> None:
        """Give the claim up without a result (cancelled): waiters are told to claim again."""
        self._wake(claim._entry, None)
        self._forget(claim)

    def __len__(self) -> int:
        return len(self._entries)

    def _live(self, message_id: str) -> _Entry | None:
        entry = self._entries.get(message_id)
        if entry is None:
            return None
        if entry.done is None and entry.expires <= self._clock():
            del self._entries[message_id]
            return None
        return entry

    def _wake(self, entry: _Entry, result: DeliveryResult | None) -> None:
        if entry.done is not None and not entry.done.done():
            entry.done.set_result(result)
        entry.done = None

    def _forget(self, claim: Claimed) -> None:
        if self._entries.get(claim.message_id) is claim._entry:
            del self._entries[claim.message_id]

    def _trim(self) -> None:
        now = self._clock()
        while len(self._entries) > self._max:
            key, oldest = next(iter(self._entries.items()))
            if (
                oldest.done is not None
                and oldest.expires > now
                and len(self._entries) <= 2 * self._max
            ):
                # In-flight entries are kept unless the table is badly overfull.
                self._entries.move_to_end(key)
                break
            del self._entries[key]
