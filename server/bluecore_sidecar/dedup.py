"""The dedup table: which message ids were delivered, or are being delivered, right now.

The pipeline asks :meth:`DedupTable.claim` before sending. The answer is one of three:
:class:`Claimed` (this caller sends, then calls :meth:`~DedupTable.finish` or, when it is
cancelled, :meth:`~DedupTable.abandon`), :class:`Existing` (a compact :class:`Record` of the
earlier delivery) or :class:`InFlight` (another caller is sending; :meth:`InFlight.wait` for
its outcome). Futures and their shielding stay inside this module.

:class:`DurableDedup` is the durable backend: the same table as its in-memory front, and
behind it the queue's :class:`~bluecore_sidecar.store.DedupStore`, which knows the ids that
are queued or were delivered (also before a restart). Its :meth:`~DurableDedup.claim` can
also answer :class:`Queued`.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import NamedTuple, TypeAlias

from datafly.bluecore.v1 import delivery_pb2

from .results import MAX_TEXT_CHARS, clip
from .store import DedupRecord, DedupStore, StoreError

_log = logging.getLogger("bluecore_sidecar")

#: The module's constant: ``DeliveryStatus.DELIVERY_STATUS_DELIVERED`` goes through the enum
#: wrapper's ``__getattr__``, Python code that costs about a microsecond per read.
_DELIVERED = delivery_pb2.DELIVERY_STATUS_DELIVERED
DeliveryResult = delivery_pb2.DeliveryResult


class Record(NamedTuple):
    """What is kept of one delivered message id: enough to answer a duplicate.

    A named tuple, like the other values made once per event (``decision.Send``,
    ``mapping.BluecoreRequest``, ``wire.Encoded``): as immutable as a frozen dataclass, and
    made in a quarter of the time (a frozen dataclass sets each field through
    ``object.__setattr__``).
    """

    datafly_event: str
    bluecore_event: str
    http_status: int
    attempts: int
    trace_id: str = ""

    @classmethod
    def of(cls, result: DeliveryResult) -> Record:
        """The record of a delivered ``result``."""
        return cls(*_delivered_texts(result))

    def size(self) -> int:
        """Bytes this record holds: the object and its strings (ints this small are shared)."""
        return _texts_size(self.datafly_event, self.bluecore_event, self.trace_id)


#: Bytes of a record's own tuple: the same for every record (five slots).
_RECORD_TUPLE_BYTES = sys.getsizeof(Record("", "", 0, 0))

#: Bytes one entry costs besides its key and record's strings: its slot and link in the
#: ordered dict, the tuple it is kept as and its expiry time. Measured with tracemalloc on
#: CPython 3.11 (tests/test_dedup.py checks the accounting against it).
ENTRY_OVERHEAD = 140

#: A delivered id's entry, once nobody waits on it: (expires, size, datafly_event,
#: bluecore_event, http_status, attempts, trace_id). A plain tuple of strings and numbers,
#: which the garbage collector stops tracking the first time it sees it: the table holds up
#: to SIDECAR_DEDUP_MAX_ENTRIES of them, and as objects (an entry and a Record each) they
#: were the bulk of what every older-generation collection walked, pausing the loop for
#: 15-40 ms at 100,000 ids (docs/decisions.md, "GC pauses and the dedup table").
_Kept: TypeAlias = tuple[float, int, str, str, int, int, str]


def _delivered_texts(result: DeliveryResult) -> tuple[str, str, int, int, str]:
    """What a record keeps of a delivered ``result``, in the order of :class:`Record`."""
    # Results are bounded where they are built; cutting again keeps any caller honest.
    datafly_event, bluecore_event, trace_id = (
        result.datafly_event,
        result.bluecore_event,
        result.trace_id,
    )
    limit = MAX_TEXT_CHARS  # `clip` only for what could be too long
    return (
        datafly_event if len(datafly_event) <= limit else clip(datafly_event),
        bluecore_event if len(bluecore_event) <= limit else clip(bluecore_event),
        result.http_status,
        result.attempts,
        trace_id if len(trace_id) <= limit else clip(trace_id),
    )


def _texts_size(datafly_event: str, bluecore_event: str, trace_id: str) -> int:
    """Bytes of a record with these texts: its tuple and the strings."""
    return (
        _RECORD_TUPLE_BYTES
        + _str_bytes(datafly_event)
        + _str_bytes(bluecore_event)
        + _str_bytes(trace_id)
    )


#: Bytes of an empty ``str``; an ASCII one holds one more per character.
_EMPTY_STR_BYTES = sys.getsizeof("")


def _str_bytes(text: str) -> int:
    """``sys.getsizeof(text)``; for ASCII text (ids, event names) without the call."""
    return _EMPTY_STR_BYTES + len(text) if text.isascii() else sys.getsizeof(text)


def _record_of(kept: _Kept) -> Record:
    return Record(*kept[2:])


#: Default bound of the table in bytes (``SIDECAR_DEDUP_MAX_BYTES``).
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class Claimed:
    """This caller owns the delivery of ``message_id`` until it finishes or abandons it.

    A plain class, not a frozen dataclass: one is made per event, and a frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__`` (see :class:`Record`).
    """

    __slots__ = ("_entry", "message_id")

    def __init__(self, message_id: str, entry: _Entry) -> None:
        self.message_id = message_id
        self._entry = entry

    def __repr__(self) -> str:
        return f"Claimed(message_id={self.message_id!r})"


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


@dataclasses.dataclass(frozen=True, slots=True)
class Queued:
    """``message_id`` is waiting in the durable queue; it is not queued (or sent) twice."""

    record: Record


Claim: TypeAlias = Claimed | Existing | InFlight


@dataclasses.dataclass(slots=True)
class _Entry:
    """An id being delivered now (claimed, not finished): a table entry only while in flight."""

    expires: float
    size: int
    # Made only when a second caller waits: most deliveries have no duplicate in flight.
    done: asyncio.Future[DeliveryResult | None] | None = None

    def waiter(self) -> InFlight:
        """What a second caller waits on while this entry is in flight."""
        if self.done is None:
            self.done = asyncio.get_running_loop().create_future()
        return InFlight(self.done)


class DedupTable:
    """Message ids delivered (or in flight) within the window, bounded by ``max_entries`` and
    by ``max_bytes``.

    Only ``DELIVERED`` outcomes are remembered: a caller that got ``FAILED_RETRYABLE`` must be
    able to send the same message again. Entries expire after the window; past either bound
    the oldest go first (in-flight ones only when the table is twice over). The bytes counted
    are the keys, the records and :data:`ENTRY_OVERHEAD` per entry.
    """

    def __init__(
        self,
        window: timedelta,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._window = window.total_seconds()
        self._max = max_entries
        self._max_bytes = max_bytes
        self._clock = clock
        # In-flight ids as _Entry objects (a few at a time), delivered ones as _Kept tuples.
        self._entries: collections.OrderedDict[str, _Entry | _Kept] = collections.OrderedDict()
        self._bytes = 0

    @property
    def bytes(self) -> int:
        """Bytes the table holds by its own accounting (keys, records, per-entry overhead)."""
        return self._bytes

    def peek(self, message_id: str) -> Record | InFlight | None:
        """What :meth:`claim` would find, without claiming (for Preview)."""
        entry = self._live(message_id)
        if entry is None:
            return None
        if isinstance(entry, tuple):
            return _record_of(entry)
        return entry.waiter()

    def claim(self, message_id: str) -> Claim:
        """Claim ``message_id`` for delivery, or say who already has it."""
        # A new id (the usual case) costs one lookup here; a known one goes through _live.
        entry = self._live(message_id) if message_id in self._entries else None
        if entry is not None:
            if isinstance(entry, tuple):
                return Existing(_record_of(entry))
            return entry.waiter()
        fresh = _Entry(self._clock() + self._window, ENTRY_OVERHEAD + _str_bytes(message_id))
        # New, so it goes last: an expired entry of the same id was dropped by _live.
        self._entries[message_id] = fresh
        self._bytes += fresh.size
        if len(self._entries) > self._max or self._bytes > self._max_bytes:
            self._trim()  # past a bound: checked here, since the usual case needs no call
        return Claimed(message_id, fresh)

    def finish(self, claim: Claimed, result: DeliveryResult) -> None:
        """Record the claimed delivery's ``result`` and hand it to those waiting."""
        entry = claim._entry
        if entry.done is not None:
            self._wake(entry, result)
        if result.status == _DELIVERED:
            self._keep(claim, *_delivered_texts(result))
        else:
            self._forget(claim)

    def settle(self, claim: Claimed, record: Record) -> None:
        """End the claim with a delivery known from elsewhere (the durable store)."""
        self._wake(claim._entry, None)  # waiters claim again and find the record
        self._keep(claim, *record)

    def abandon(self, claim: Claimed) -> None:
        """Give the claim up without a result (cancelled): waiters are told to claim again."""
        self._wake(claim._entry, None)
        self._forget(claim)

    def __len__(self) -> int:
        return len(self._entries)

    def _keep(  # noqa: PLR0917 - a record's fields, without making the record
        self,
        claim: Claimed,
        datafly_event: str,
        bluecore_event: str,
        http_status: int,
        attempts: int,
        trace_id: str,
    ) -> None:
        """The claimed id is delivered: keep its record for the window, as a tuple."""
        entry = claim._entry
        if self._entries.get(claim.message_id) is not entry:
            return  # trimmed while in flight: nothing to keep it in
        grown = _texts_size(datafly_event, bluecore_event, trace_id)
        self._entries[claim.message_id] = (
            self._clock() + self._window,
            entry.size + grown,
            datafly_event,
            bluecore_event,
            http_status,
            attempts,
            trace_id,
        )
        self._bytes += grown
        if len(self._entries) > self._max or self._bytes > self._max_bytes:
            self._trim()

    def _live(self, message_id: str) -> _Entry | _Kept | None:
        entry = self._entries.get(message_id)
        if entry is None:
            return None
        if isinstance(entry, tuple) and entry[0] <= self._clock():
            self._drop(message_id)
            return None
        return entry

    def _wake(self, entry: _Entry, result: DeliveryResult | None) -> None:
        if entry.done is not None and not entry.done.done():
            entry.done.set_result(result)
        entry.done = None

    def _forget(self, claim: Claimed) -> None:
        if self._entries.get(claim.message_id) is claim._entry:
            self._drop(claim.message_id)

    def _drop(self, message_id: str) -> None:
        entry = self._entries.pop(message_id)
        self._bytes -= entry[1] if isinstance(entry, tuple) else entry.size

    def _trim(self) -> None:
        if len(self._entries) <= self._max and self._bytes <= self._max_bytes:
            return  # within both bounds: the usual case, without reading the clock
        now = self._clock()
        while len(self._entries) > self._max or self._bytes > self._max_bytes:
            key, oldest = next(iter(self._entries.items()))
            if (
                not isinstance(oldest, tuple)
                and oldest.expires > now
                and len(self._entries) <= 2 * self._max
                and self._bytes <= 2 * self._max_bytes
            ):
                # In-flight entries are kept unless the table is badly overfull.
                self._entries.move_to_end(key)
                break
            self._drop(key)


class DurableDedup:
    """The dedup table in front of the durable queue's memory of message ids.

    A claim first asks the in-memory table (calls in flight, recent deliveries); an id it
    does not know is looked up in the store, which remembers queued ids and delivered ones
    for the window across restarts. Deliveries made without the queue are written to the
    store by :meth:`finish`; the queue's workers record their own.
    """

    def __init__(
        self, table: DedupTable, store: DedupStore, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self._table = table
        self._store = store
        self._wall_clock = wall_clock

    def peek(self, message_id: str) -> Record | InFlight | None:
        """What the in-memory front knows."""
        return self._table.peek(message_id)

    async def known(self, message_id: str) -> Record | InFlight | Queued | None:
        """What :meth:`claim` would find, without claiming (for Preview): the in-memory front,
        then the store, which also knows queued ids and, after a restart, delivered ones.

        A store that cannot be read leaves the answer to the front (Preview then says what
        it can; the lookup failure is logged by type only)."""
        seen = self._table.peek(message_id)
        if seen is not None:
            return seen
        try:
            stored = await self._store.lookup(message_id)
        except StoreError as exc:
            _log.warning(
                "could not read the durable queue for a preview",
                extra={"fields": {"error_type": type(exc).__name__}},
            )
            return None
        if stored is None:
            return None
        record = _stored(stored)
        return record if stored.state == "delivered" else Queued(record)

    def prefetch(self, message_ids: Sequence[str]) -> None:
        """Let the store read a batch's ids at once, before they are claimed one by one."""
        self._store.prefetch(message_ids)

    async def claim(self, message_id: str) -> Claim | Queued:
        """Claim ``message_id``, or say who has it: in flight, delivered or queued."""
        claim = self._table.claim(message_id)
        if not isinstance(claim, Claimed):
            return claim
        try:
            stored = await self._store.lookup(message_id)
        except BaseException:
            self._table.abandon(claim)
            raise
        if stored is None:
            return claim
        record = _stored(stored)
        if stored.state == "delivered":
            self._table.settle(claim, record)
            return Existing(record)
        # Queued: the queue's own state answers, and it changes when a worker delivers it.
        self._table.abandon(claim)
        return Queued(record)

    async def finish(self, claim: Claimed, result: DeliveryResult, *, stored: bool) -> None:
        """Record ``result``; a delivery the store does not know yet (``stored=False``) is
        written to it before the caller is answered, so a restart still knows the id."""
        self._table.finish(claim, result)
        if stored or result.status != _DELIVERED:
            return
        await remember_delivered(self._store, result, self._wall_clock())

    def abandon(self, claim: Claimed) -> None:
        """Give the claim up without a result (cancelled)."""
        self._table.abandon(claim)


def _stored(stored: DedupRecord) -> Record:
    """The in-memory form of what the store remembers of a message id."""
    return Record(
        datafly_event="",
        bluecore_event=stored.bluecore_event,
        http_status=stored.http_status,
        attempts=stored.attempts,
    )


async def remember_delivered(store: DedupStore, result: DeliveryResult, now: float) -> None:
    """Write a delivered ``result``'s id to ``store`` (wall-clock ``now``), for dedup across
    restarts. A store error is logged by type only: the event was delivered, and only a
    duplicate after a restart could slip through."""
    record = DedupRecord(
        result.message_id,
        "delivered",
        result.bluecore_event,
        result.attempts,
        result.http_status,
        now,
    )
    try:
        await store.remember(record)
    except StoreError as exc:
        _log.warning(
            "could not record a delivered message id in the durable queue",
            extra={"fields": {"error_type": type(exc).__name__}},
        )
