"""The durable queue: one SQLite file (WAL) holding queued events, dedup memory and dead letters.

One dedicated writer thread owns the only connection; asyncio callers hand it operations and
await the answers. Operations that arrive while a transaction commits are run together in the
next one (group commit), so an enqueue answers only after its COMMIT returned, yet many
concurrent calls share one commit and one fsync. The queue is behind three small protocols
(:class:`EventQueue`, :class:`DedupStore`, :class:`DeadLetterStore`) so that another backend,
such as a shared log, can take its place. The store never parses events: entries carry the
serialized ``DataflyEvent`` and the caller computes the ordering key and the Bluecore name.

Layout of one database (schema version :data:`SCHEMA_VERSION`, in ``PRAGMA user_version``)::

    entries    every queued event: pending (0), claimed by a worker (1) or dead letter (2)
    delivered  message ids delivered within the dedup window (queued ones are in entries)
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import functools
import glob
import logging
import os
import queue
import secrets
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, Protocol, TypeVar

_log = logging.getLogger("bluecore_sidecar.store")

T = TypeVar("T")

#: Marks a file as this sidecar's queue (``PRAGMA application_id``): ASCII "BCSQ".
APPLICATION_ID: Final = 0x42435351
#: The schema this code writes; older files are migrated, newer or foreign ones moved aside.
SCHEMA_VERSION: Final = 2

#: Reason codes the durable queue adds to the sidecar's table (see ``skip.py``).
QUEUE_FULL: Final = "QUEUE_FULL"
EXPIRED: Final = "EXPIRED"
AUTH: Final = "AUTH"

PENDING: Final = 0
CLAIMED: Final = 1
DEAD: Final = 2


# --------------------------------------------------------------------------------------------
# Data


@dataclasses.dataclass(frozen=True, slots=True)
class QueueLimits:
    """How much the queue holds before it answers :class:`QueueFull`.

    ``max_bytes`` counts the serialized events of pending and claimed entries; dead letters
    count towards neither limit (they are bounded by the disk, ``max_file_bytes``).
    """

    max_entries: int = 100_000
    max_bytes: int = 256 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class NewEntry:
    """An event to queue. ``ordering_key`` is the customer's ``distinct_id``.

    ``attempts``, ``next_due`` and the last answer let a caller queue an event it already
    tried (wait mode); a fresh event leaves them at their defaults and is due at once.
    """

    message_id: str
    ordering_key: str = dataclasses.field(repr=False)  # an email, most of the time
    bluecore_event: str
    payload: bytes = dataclasses.field(repr=False)  # the event, with its email
    event_time: float
    """When the event happened, seconds since the epoch: the start of its maximum age."""
    traceparent: str = ""
    """W3C ``traceparent`` of the call that queued it, for a span link from the worker."""
    attempts: int = 0
    next_due: float | None = None
    last_reason: str = ""
    last_http_status: int = 0

    def queued(self, row_id: int, ordering_key: str, now: float, due: float) -> QueuedEntry:
        """This entry as stored under ``row_id``, enqueued at ``now`` and due at ``due``."""
        return QueuedEntry(
            id=row_id,
            message_id=self.message_id,
            ordering_key=ordering_key,
            bluecore_event=self.bluecore_event,
            payload=self.payload,
            enqueued_at=now,
            event_time=self.event_time,
            attempts=self.attempts,
            next_due=due,
            last_reason=self.last_reason,
            last_http_status=self.last_http_status,
            traceparent=self.traceparent,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class QueuedEntry:
    """An entry as stored."""

    id: int
    message_id: str
    ordering_key: str = dataclasses.field(repr=False)  # an email, most of the time
    bluecore_event: str
    payload: bytes = dataclasses.field(repr=False)
    enqueued_at: float
    event_time: float
    attempts: int
    next_due: float
    last_reason: str
    last_http_status: int
    traceparent: str


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """One entry handed to one worker. ``claim_id`` tells a stale claim from a current one."""

    entry: QueuedEntry
    claim_id: int


@dataclasses.dataclass(frozen=True, slots=True)
class DedupRecord:
    """What the store remembers about a message id: enough to answer a duplicate."""

    message_id: str
    state: Literal["queued", "delivered"]
    bluecore_event: str
    attempts: int
    http_status: int
    at: float
    """When it was queued (``queued``) or delivered (``delivered``), seconds since the epoch."""


@dataclasses.dataclass(frozen=True, slots=True)
class Enqueued:
    """The entry is committed to disk.

    ``claim`` is set when the caller asked to try the entry itself (``enqueue(claim=True)``)
    and the entry was its key's only live one: it was committed already claimed by this
    process, and the caller sends it and settles the claim like a worker.
    """

    id: int
    claim: Claim | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Duplicate:
    """The message id is already queued or was delivered within the window; nothing added."""

    record: DedupRecord


@dataclasses.dataclass(frozen=True, slots=True)
class QueueFull:
    """The entry was not accepted: ``cause`` is COUNT, BYTES, DISK_FULL, READ_ONLY, BUSY or
    IO_ERROR.

    The caller answers ``FAILED_RETRYABLE`` with reason :data:`QUEUE_FULL`; ``detail`` is free
    of personal data.
    """

    cause: str
    detail: str
    reason: str = QUEUE_FULL


EnqueueOutcome = Enqueued | Duplicate | QueueFull

#: What :meth:`EventQueue.complete_soon` calls once a completion is settled: the claim, the
#: error that stopped it (None when it committed) and whether the claim was still current.
Completed = Callable[[Claim, BaseException | None, bool], None]


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Selects dead letters; every given condition must hold, an empty filter selects all.

    ``dead_before`` / ``dead_after`` are seconds since the epoch (the RPC's ``older_than`` and
    ``newer_than`` are ``now - duration``).
    """

    ids: tuple[int, ...] = ()
    reasons: tuple[str, ...] = ()
    bluecore_events: tuple[str, ...] = ()
    dead_before: float | None = None
    dead_after: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """An entry the queue gave up on. ``payload`` is set by :meth:`get_dead_letter` only."""

    id: int
    message_id: str
    bluecore_event: str
    reason: str
    detail: str
    http_status: int
    attempts: int
    event_time: float
    enqueued_at: float
    dead_at: float
    traceparent: str
    payload: bytes | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass(frozen=True, slots=True)
class ReplayResult:
    """How many dead letters went back to the queue, and how many were left as duplicates."""

    replayed: int
    skipped_duplicates: int


@dataclasses.dataclass(frozen=True, slots=True)
class QueueStats:
    """A snapshot for metrics and the CLI."""

    depth: int
    """Pending and claimed entries."""
    bytes: int
    claimed: int
    oldest_pending_age: float
    """Seconds since the oldest pending or claimed entry was queued; 0 when empty."""
    dead_letters: dict[str, int]
    """Dead letters by reason."""
    commits: int
    """Transactions committed since the queue was opened (each one fsync with FULL)."""
    operations: int = 0
    """Write operations committed since open; ``operations / commits`` is the group size."""
    synced_commits: int = 0
    """Commits made at the configured ``synchronous`` level (with FULL, one fsync each); the
    others held only operations that need no fsync (see ``SqliteQueue._begin``)."""


class StoreError(Exception):
    """The queue cannot do what was asked (never raised for a full queue: see QueueFull)."""


class StoreClosed(StoreError):
    """The queue was closed; nothing more is accepted."""


class StoreUnavailable(StoreError):
    """SQLite failed the operation (disk full, read-only, I/O error); nothing changed."""


# --------------------------------------------------------------------------------------------
# The narrow interface


class EventQueue(Protocol):
    """Queued events, in order per ordering key."""

    async def enqueue(
        self, entries: Sequence[NewEntry], *, claim: bool = False
    ) -> list[EnqueueOutcome]:
        """Commit ``entries``; one outcome each, in order. Never raises for a full disk.

        ``claim=True``: an entry whose key has nothing else live is committed claimed by the
        caller, in the same transaction (:attr:`Enqueued.claim`)."""
        ...

    def enqueue_soon(
        self,
        entries: Sequence[NewEntry],
        *,
        claim: bool = False,
        synced: bool = True,
        linger: bool = False,
    ) -> asyncio.Future[list[EnqueueOutcome]]:
        """:meth:`enqueue`, submitted before this call returns (so ahead of anything queued
        after it), answered by the returned future.

        ``synced=False``: the answer may come before the commit is safe from a power cut (it
        is safe from a crash); whoever then says ``QUEUED`` calls :meth:`sync` first.
        ``linger=True``: the commit may wait while the caller's send is out (up to a bound);
        call :meth:`hurry` before awaiting the future, or :meth:`withdraw` if it delivered."""
        ...

    def hurry(self, future: asyncio.Future[Any]) -> None:
        """``future`` (of ``enqueue_soon(linger=True)``) is awaited now: commit it soon."""
        ...

    def withdraw(self, future: asyncio.Future[Any]) -> bool:
        """Take back the lingering enqueue of ``future`` if it has not run yet (its first
        try delivered first); True when it was taken back and nothing of it is written."""
        ...

    def remember_soon(self, record: DedupRecord) -> None:
        """:meth:`DedupStore.remember` for a caller that does not wait: committed with the
        next write, or alone a moment later."""
        ...

    async def sync(self) -> None:
        """Return once every commit answered so far is on the disk."""
        ...

    async def claim_due(self, limit: int, now: float | None = None) -> list[Claim]:
        """Claim up to ``limit`` due entries, at most one per key, each its key's oldest."""
        ...

    async def complete(self, claim: Claim, *, attempts: int, http_status: int) -> bool:
        """Delivered: drop the entry, remember the id. False when the claim is stale."""
        ...

    def complete_soon(
        self, claim: Claim, *, attempts: int, http_status: int, then: Completed
    ) -> None:
        """:meth:`complete` for a caller that does not wait: once the commit is in (or the
        operation failed), ``then(claim, error, kept)`` is called on the event loop, with
        ``error`` None and ``kept`` False when the claim was stale."""
        ...

    async def reschedule(
        self, claim: Claim, *, next_due: float, reason: str, http_status: int, attempts: int
    ) -> bool:
        """Back to pending, due at ``next_due``. False when the claim is stale."""
        ...

    async def dead_letter(
        self, claim: Claim, *, reason: str, detail: str, http_status: int, attempts: int
    ) -> bool:
        """Give up on the entry. False when the claim is stale."""
        ...

    async def release_all_claims(self) -> int:
        """Make every claimed entry pending again; returns how many."""
        ...

    def stop_claiming(self) -> None:
        """From now on :meth:`claim_due` returns nothing (shutdown)."""
        ...

    async def has_pending(self, ordering_key: str) -> bool:
        """Whether the key has a pending or claimed entry, so a direct send must wait."""
        ...

    def pending_now(self, ordering_key: str) -> bool | None:
        """:meth:`has_pending` when it can be answered from memory, without a coroutine;
        None when the backend must be asked (await :meth:`has_pending` then)."""
        ...

    def may_have_due(self) -> bool:
        """False only when the queue knows it holds no pending entry (claim_due would return
        nothing before the next enqueue, reschedule, replay or release)."""
        ...

    async def stats(self, now: float | None = None) -> QueueStats:
        """Depth, bytes, age of the oldest entry, dead letters by reason."""
        ...

    async def earliest_due(self) -> float | None:
        """When the first entry :meth:`claim_due` could return falls due; None when none can."""
        ...


class DedupStore(Protocol):
    """Message ids queued or delivered within the dedup window."""

    async def lookup(self, message_id: str, now: float | None = None) -> DedupRecord | None:
        """The record of a queued id or of one delivered within the window, else None."""
        ...

    def prefetch(self, message_ids: Sequence[str], now: float | None = None) -> None:
        """Read ``message_ids`` at once, so that the :meth:`lookup` of each that follows
        answers from memory (may do nothing; the lookups are right either way)."""
        ...

    async def remember(self, record: DedupRecord) -> None:
        """Record a delivery made without the queue (a direct send)."""
        ...

    async def purge_expired(self, now: float | None = None, batch: int = 1000) -> int:
        """Delete up to ``batch`` delivered ids older than the window; returns how many."""
        ...


class DeadLetterStore(Protocol):
    """What the queue gave up on, for operators."""

    async def list_dead_letters(
        self, selection: DeadLetterFilter, *, limit: int = 100, after_id: int = 0
    ) -> list[DeadLetter]:
        """Matching dead letters with ``id > after_id``, oldest id first, without payloads."""
        ...

    async def get_dead_letter(self, dead_letter_id: int) -> DeadLetter | None:
        """One dead letter with its payload, or None."""
        ...

    async def replay_dead_letters(
        self, selection: DeadLetterFilter, now: float | None = None
    ) -> ReplayResult:
        """Back to pending, due now, attempts reset, behind what the key has queued."""
        ...

    async def purge_dead_letters(self, selection: DeadLetterFilter) -> int:
        """Delete matching dead letters for good; returns how many."""
        ...


# --------------------------------------------------------------------------------------------
# Retry schedule (pure)


@dataclasses.dataclass(frozen=True, slots=True)
class QueueRetryPolicy:
    """When the queue's workers try again. All values in seconds.

    ``cap`` is ``SIDECAR_QUEUE_RETRY_CAP`` (5 minutes by default); ``max_age`` is the event age
    after which the queue gives up (``EXPIRED``); 0 means never.
    """

    base: float = 1.0
    cap: float = 300.0
    max_age: float = 24 * 3600.0


def retry_delay(
    policy: QueueRetryPolicy, attempt: int, retry_after: float | None, rand: Callable[[], float]
) -> float:
    """Delay after failed try number ``attempt`` (1-based): capped exponential, full jitter.

    ``Retry-After`` is a floor, so Bluecore's own word is never undercut by the jitter.
    """
    exponent = min(max(attempt - 1, 0), 60)  # 2**60 s is past any cap; avoids float overflow
    delay = min(policy.cap, policy.base * float(2**exponent)) * rand()
    if retry_after is not None and retry_after > delay:
        delay = retry_after
    return delay


def next_due(
    policy: QueueRetryPolicy,
    *,
    attempt: int,
    now: float,
    event_time: float,
    retry_after: float | None,
    rand: Callable[[], float],
) -> float | None:
    """When to try again after failed try ``attempt``, or None when that is past the max age.

    None means the entry is dead-lettered ``EXPIRED``: Bluecore refuses old events, so a try
    after the event's maximum age could only fail.
    """
    due = now + retry_delay(policy, attempt, retry_after, rand)
    if policy.max_age > 0 and due > event_time + policy.max_age:
        return None
    return due


# --------------------------------------------------------------------------------------------
# SQLite


_SCHEMA_V1: Final = (
    """
    CREATE TABLE entries (
        id INTEGER PRIMARY KEY,
        seq INTEGER NOT NULL,
        state INTEGER NOT NULL,
        message_id TEXT NOT NULL,
        ordering_key TEXT NOT NULL,
        bluecore_event TEXT NOT NULL,
        payload BLOB NOT NULL,
        enqueued_at REAL NOT NULL,
        event_time REAL NOT NULL,
        attempts INTEGER NOT NULL,
        next_due REAL NOT NULL,
        claim_id INTEGER NOT NULL DEFAULT 0,
        last_reason TEXT NOT NULL,
        last_http_status INTEGER NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        dead_at REAL,
        traceparent TEXT NOT NULL
    )
    """,
    # A message id is live (pending or claimed) at most once: the dedup guarantee.
    "CREATE UNIQUE INDEX entries_live_id ON entries(message_id) WHERE state < 2",
    # The head of each key (its oldest live entry) and has_pending.
    "CREATE INDEX entries_live_key ON entries(ordering_key, seq) WHERE state < 2",
    "CREATE INDEX entries_due ON entries(next_due, seq) WHERE state = 0",
    "CREATE INDEX entries_dead ON entries(dead_at) WHERE state = 2",
    """
    CREATE TABLE delivered (
        message_id TEXT PRIMARY KEY,
        bluecore_event TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        http_status INTEGER NOT NULL,
        delivered_at REAL NOT NULL
    ) WITHOUT ROWID
    """,
    "CREATE INDEX delivered_at ON delivered(delivered_at)",
)


def _create_v1(conn: sqlite3.Connection) -> None:
    for sql in _SCHEMA_V1:
        conn.execute(sql)


#: Owner ids are drawn from [2**56, 2**62) and "no owner" is 2**62: all are 8-byte integers in
#: SQLite's record format, so a claim rewrites its row at the same size, in place, which still
#: works when the file is at its size cap (SQLITE_FULL otherwise).
_OWNER_MIN: Final = 1 << 56
NO_OWNER: Final = 1 << 62


def _add_claim_owner(conn: sqlite3.Connection) -> None:
    """v2: a claim names the process that holds it, so that several can share the file."""
    conn.execute(f"ALTER TABLE entries ADD COLUMN claim_owner INTEGER NOT NULL DEFAULT {NO_OWNER}")


#: Migration hook: ``MIGRATIONS[n]`` turns a version ``n - 1`` file into version ``n``, inside
#: the transaction that also sets ``user_version``.
MIGRATIONS: Final[dict[int, Callable[[sqlite3.Connection], None]]] = {
    1: _create_v1,
    2: _add_claim_owner,
}
#: A shared opener waits this long for another opener's start-up repairs (seconds).
_SHARED_WAIT: Final = 30.0
#: How long a write nobody waits on (a completion) may wait for company before it is sent to
#: the writer alone (seconds): it usually joins the next batch sooner.
_LAZY_FLUSH: Final = 0.002
#: How long the enqueue of a first try (``enqueue_soon(linger=True)``) may stay in the
#: writer's line while its send is out (seconds). A try that delivers within it takes the
#: enqueue back (``withdraw``): the entry is never written. One that fails asks for the
#: commit at once (``hurry``). Other commits meanwhile pass it by, unless something behind
#: it in line could depend on it. So an event is on disk at most this long after its send
#: began unless it was delivered first, and always before any answer about it. Not Final:
#: tests shorten or stretch it, and mypyc would build a Final value into the compiled code.
_ENQUEUE_LINGER = 0.5
#: With a file this process has alone, how long delivered entries' completions wait for
#: more of them (seconds) before they are committed together. Nothing waits on them: the
#: call has answered, and a customer they hold is let go at once when asked about
#: (``pending_now``); any operation other than an enqueue takes them along too.
_COMPLETION_WAIT: Final = 0.05
#: With a file this process has alone, the writer thread checkpoints the WAL after this many
#: commits (SQLite's automatic checkpoint is off there, see ``SqliteQueue._open_db``); a
#: delivered event writes a few pages, so the WAL stays within a few MB.
_CHECKPOINT_EVERY: Final = 250
#: More absent marks than this (left by calls that never looked their ids up) are dropped.
_MAX_ABSENT: Final = 10_000
#: In shared mode, how stale the depth and byte totals behind the limits may get (seconds).
_TOTALS_MAX_AGE: Final = 2.0

_ENTRY_COLUMNS: Final = (
    "id, message_id, ordering_key, bluecore_event, payload, enqueued_at, event_time, "
    "attempts, next_due, last_reason, last_http_status, traceparent"
)
_DEAD_COLUMNS: Final = (
    "id, message_id, bluecore_event, last_reason, detail, last_http_status, attempts, "
    "event_time, enqueued_at, dead_at, traceparent"
)
_DEAD_FIELDS: Final = (
    "id",
    "message_id",
    "bluecore_event",
    "reason",
    "detail",
    "http_status",
    "attempts",
    "event_time",
    "enqueued_at",
    "dead_at",
    "traceparent",
)


@functools.cache
def _lookup_sql(count: int) -> str:
    """The dedup lookup of ``count`` message ids: their live entries and recent deliveries."""
    marks = ", ".join("?" * count)
    return (
        "SELECT 0, message_id, bluecore_event, attempts, last_http_status, enqueued_at"  # noqa: S608 - ? placeholders only
        f" FROM entries WHERE message_id IN ({marks}) AND state < 2"
        " UNION ALL SELECT 1, message_id, bluecore_event, attempts, http_status, delivered_at"
        f" FROM delivered WHERE message_id IN ({marks}) AND delivered_at >= ?"
    )


def _entry(row: Sequence[Any]) -> QueuedEntry:
    return QueuedEntry(*row)


def _dead(row: Sequence[Any], payload: bytes | None = None) -> DeadLetter:
    fields = dict(zip(_DEAD_FIELDS, row, strict=True))
    return DeadLetter(**fields, payload=payload)


def _primary(exc: sqlite3.Error) -> int | None:
    """SQLite's primary result code of an error (extended codes carry it in the low byte)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def _cause(exc: sqlite3.Error) -> str:
    """COUNT/BYTES aside, why SQLite refused a write, as a QueueFull cause."""
    primary = _primary(exc)
    if primary == sqlite3.SQLITE_FULL:
        return "DISK_FULL"
    if primary == sqlite3.SQLITE_READONLY:
        return "READ_ONLY"
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return "BUSY"
    return "IO_ERROR"


def _filter_sql(selection: DeadLetterFilter) -> tuple[str, list[Any]]:
    where = ["state = 2"]
    args: list[Any] = []
    for column, values in (
        ("id", selection.ids),
        ("last_reason", selection.reasons),
        ("bluecore_event", selection.bluecore_events),
    ):
        if values:
            where.append(f"{column} IN ({','.join('?' * len(values))})")
            args.extend(values)
    if selection.dead_before is not None:
        where.append("dead_at < ?")
        args.append(selection.dead_before)
    if selection.dead_after is not None:
        where.append("dead_at >= ?")
        args.append(selection.dead_after)
    return " AND ".join(where), args


class _Tx:
    """What one write operation changes besides the rows: applied only after COMMIT."""

    __slots__ = ("depth", "effects", "nbytes")

    def __init__(self, depth: int, nbytes: int) -> None:
        self.depth = depth
        self.nbytes = nbytes
        self.effects: list[Callable[[], None]] = []


@dataclasses.dataclass(slots=True)
class _Op:
    fn: Callable[[sqlite3.Connection, _Tx], Any]
    future: asyncio.Future[Any]
    """Created on the caller's loop; only that loop sets it (see ``_post``)."""
    loop: asyncio.AbstractEventLoop
    write: bool
    on_error: Callable[[sqlite3.Error], Any] | None = None
    """Turns a SQLite error into a result (enqueue answers QueueFull); None raises."""
    answered: bool = False
    synced: bool = True
    """Whether its commit must be on the disk before it answers; False for completions and
    for ``enqueue_soon(synced=False)`` (see ``SqliteQueue._begin``)."""
    hold_until: float = 0.0
    """A lingering enqueue's: until when (loop time) it may stay in line while later
    operations commit; 0 for every other operation."""
    independent: bool = False
    """True for operations no lingering enqueue's entry can matter to (delivered ids,
    completions of entries already on disk): a lingering enqueue may stay behind them."""


_STOP: Final = object()


class _StaleCompletion(Exception):
    """Completions that hold a stale claim: their operation runs again, one by one."""


@dataclasses.dataclass(slots=True)  # not frozen: internal, and 5 setattr calls cheaper
class _Completion:
    """One delivered entry waiting for the commit that deletes it (``complete_soon``)."""

    claim: Claim
    attempts: int
    http_status: int
    at: float
    then: Completed
    """Called with the answer: a plain callback, not a future (one object and one loop
    callback fewer per delivered event)."""


@dataclasses.dataclass(slots=True)
class _Completions:
    """The completions one write operation commits."""

    items: list[_Completion]
    keys: set[str]
    """The ordering keys of the items' entries (each holds its customer until committed)."""
    one_by_one: bool = False
    """Set when a stale claim is among them: each is then deleted by a statement of its own."""
    submitted: bool = False
    """Whether its operation is in the writer's line (items may still join until it runs)."""

    def answer(self, done: asyncio.Future[list[bool]]) -> None:
        """On the loop: hand each completion its answer, or the operation's error."""
        if done.cancelled():
            error: BaseException | None = StoreClosed("the durable queue is closed")
        else:
            error = done.exception()
        kept = done.result() if error is None else [False] * len(self.items)
        for item, ok in zip(self.items, kept, strict=True):
            item.then(item.claim, error, ok)


@dataclasses.dataclass(slots=True)
class _Job:
    """Write operations already run on the event loop, for the writer thread to COMMIT, and
    the reads to run after it; the thread then gives the connection back (``release``)."""

    done: list[tuple[_Op, Any, _Tx]]
    reads: list[_Op]
    release: Callable[[], None]
    loop: asyncio.AbstractEventLoop


def _resolve(
    answers: list[tuple[_Op, BaseException | None, Any]], then: Callable[[], None] | None = None
) -> None:
    """On the callers' loop: set each future (one a caller cancelled meanwhile is left), then
    call ``then`` (the writer thread gives the connection back)."""
    for op, exc, value in answers:
        _settle(op.future, exc, value)
    if then is not None:
        then()


def _settle_completed(
    future: asyncio.Future[bool], claim: Claim, error: BaseException | None, kept: bool
) -> None:
    """A completion's answer for :meth:`SqliteQueue.complete`, which awaits it."""
    _settle(future, error, kept)


def _settle(future: asyncio.Future[Any], exc: BaseException | None, value: Any) -> None:
    """Give ``future`` its error, else its value; one already done (cancelled) is left."""
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)


class SqliteQueue:
    """The SQLite backend of :class:`EventQueue`, :class:`DedupStore` and :class:`DeadLetterStore`.

    Open it with :meth:`open` inside the event loop; :meth:`close` stops the writer thread.
    Times are seconds since the epoch (``clock``, ``time.time`` by default), as they outlive
    the process.
    """

    def __init__(
        self,
        path: Path,
        *,
        limits: QueueLimits,
        dedup_window: float,
        lru_size: int,
        max_file_bytes: int | None,
        synchronous: Literal["FULL", "NORMAL"],
        clock: Callable[[], float],
        max_group: int,
        loop: asyncio.AbstractEventLoop,
        shared: bool = False,
    ) -> None:
        self.path = path
        self._shared = shared
        # Who holds a claim: this process, while its owner lock file is locked (see
        # _take_ownership); a claim whose owner's lock can be taken is an orphan.
        self._owner = _OWNER_MIN + secrets.randbelow(NO_OWNER - _OWNER_MIN)
        self._owner_fd: int | None = None
        self._totals_at = float("-inf")
        self._limits = limits
        self._window = dedup_window
        self._lru_size = lru_size
        self._max_file_bytes = max_file_bytes
        self._synchronous = synchronous
        self._clock = clock
        self._max_group = max_group
        # Operations go to the writer thread a loop turn's worth at a time (one list per
        # turn, see _submit), and its answers come back one call_soon_threadsafe per batch.
        self._ops: queue.SimpleQueue[list[_Op] | _Job | object] = queue.SimpleQueue()
        # Not shared: the event loop runs the statements of a batch itself and hands only the
        # COMMIT (the fsync) to the thread, which owns the connection until it gives it back.
        self._thread_owns = False
        self._outbox: list[_Op] = []
        # The futures of lingering enqueues in the outbox whose callers have not asked for
        # the commit yet (see enqueue_soon and hurry).
        self._unhurried: set[asyncio.Future[Any]] = set()
        # Deliveries remember_soon() holds for its next operation (guarded by the lock).
        self._remembering: list[DedupRecord] = []
        # The loop that opened the queue, which every caller runs on. Kept, because
        # asyncio.get_running_loop() costs a getpid() system call on every call.
        self._loop = loop
        self._ops_later: list[_Job] = []
        self._flush_due = False  # a _flush is scheduled with call_soon
        self._lazy_timer: asyncio.TimerHandle | None = None
        # Not shared: when the waiting completions go to the writer (see complete_soon).
        self._completion_timer: asyncio.TimerHandle | None = None
        # Keys given a live entry by the open transaction (their counts change at COMMIT).
        self._tx_keys: set[str] = set()
        self._answers: list[tuple[_Op, BaseException | None, Any]] = []
        # The completions the next completion operation takes (guarded by the lock).
        self._completions: _Completions | None = None
        # A second connection, used on the event loop for dedup lookups: in WAL mode it reads
        # the last committed state without waiting for the writer's transaction and fsync.
        self._reader: sqlite3.Connection | None = None
        self._opened: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._writer = threading.Thread(target=self._run, name="queue-writer", daemon=True)
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._closed = False
        self._claiming = True
        # Written by the writer thread after COMMIT, read by callers: guarded by the lock.
        self._lock = threading.Lock()
        self._live: collections.Counter[str] = collections.Counter()
        self._lru: collections.OrderedDict[str, DedupRecord] = collections.OrderedDict()
        # Ids prefetch() read and did not find, until a lookup takes the mark (see prefetch).
        self._absent: set[str] = set()
        # Whether the LRU holds every id the file knows (see _load): then a miss is an answer
        # and lookups read nothing. False for a shared file, and from the first eviction on.
        self._complete = False
        self._depth = 0
        self._bytes = 0
        self._seq = 0
        self._pending = 0
        self._commits = 0
        self._operations = 0
        self._synced_commits = 0
        self._since_checkpoint = 0  # commits since the last checkpoint (not shared)
        self._tx_synced = True
        self._unsynced = False  # whether the last COMMIT skipped the fsync
        # The connection's PRAGMA synchronous now: the configured level, or NORMAL for a
        # transaction whose operations need no fsync (see _begin).
        self._sync_level: str = synchronous

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        limits: QueueLimits | None = None,
        dedup_window: float = 24 * 3600.0,
        lru_size: int = 100_000,
        max_file_bytes: int | None = None,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        clock: Callable[[], float] = time.time,
        max_group: int = 1024,
        shared: bool = False,
    ) -> SqliteQueue:
        """Open (or create) the queue at ``path``, repairing what a crash left.

        ``shared=True`` lets other processes open the same file at the same time (the workers
        of ``SIDECAR_WORKERS``, each with shared=True); SQLite's locking orders their writes,
        and each releases only its own claims and those of processes that are gone. Without
        it, the file is this process's alone and another opener gets :class:`StoreError`.

        A corrupt or foreign file is moved aside (``<name>.corrupt-<UTC>`` or
        ``<name>.foreign-<UTC>``, with its ``-wal``/``-shm``), logged at ERROR, and replaced
        by an empty queue. Entries claimed when the last process stopped become pending.
        ``max_file_bytes`` caps the database file (``PRAGMA max_page_count``); beyond it
        enqueues answer QueueFull (DISK_FULL).
        """
        store = cls(
            Path(path),
            limits=limits or QueueLimits(),
            dedup_window=dedup_window,
            lru_size=lru_size,
            max_file_bytes=max_file_bytes,
            synchronous=synchronous,
            clock=clock,
            max_group=max_group,
            loop=asyncio.get_running_loop(),
            shared=shared,
        )
        store._writer.start()
        try:
            await asyncio.wrap_future(store._opened)
        except BaseException:
            await store.close()
            raise
        store._open_reader()
        return store

    def _open_reader(self) -> None:
        try:
            # timeout=0: a reader that would have to wait hands the lookup to the writer
            # thread instead of blocking the event loop.
            reader = sqlite3.connect(
                self.path, isolation_level=None, timeout=0.0, check_same_thread=False
            )
            reader.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            _log.warning("durable queue %s: lookups go through the writer (%s)", self.path, exc)
            return
        self._reader = reader

    async def close(self) -> None:
        """Stop the writer thread after the operations already submitted; idempotent."""
        if not self._closed:
            self._submit_completions()  # the waiting ones are committed before the thread stops
            self._closed = True
            self._claiming = False
            reader, self._reader = self._reader, None
            if reader is not None:
                reader.close()  # first, so that the writer's close checkpoints the file
            self._flush()
            self._ops.put(_STOP)
        await asyncio.to_thread(self._writer.join)

    def stop_claiming(self) -> None:
        """From now on :meth:`claim_due` returns nothing: workers drain, then shutdown."""
        self._claiming = False

    @property
    def commits(self) -> int:
        """Transactions committed since open (the group-commit counter)."""
        return self._commits

    def may_have_due(self) -> bool:
        """False when this process knows no entry is pending; always True for a shared file,
        whose other processes queue and put back entries unseen."""
        return self._shared or self._pending > 0

    # -- submitting work to the writer thread ----------------------------------------------

    async def _submit(
        self,
        fn: Callable[[sqlite3.Connection, _Tx], T],
        *,
        write: bool,
        on_error: Callable[[sqlite3.Error], T] | None = None,
        lazy: bool = False,
    ) -> T:
        return await self._submit_soon(fn, write=write, on_error=on_error, lazy=lazy)

    def _submit_soon(
        self,
        fn: Callable[[sqlite3.Connection, _Tx], T],
        *,
        write: bool,
        on_error: Callable[[sqlite3.Error], T] | None = None,
        lazy: bool = False,
        synced: bool = True,
        with_completions: bool = True,
        linger: float = _LAZY_FLUSH,
        holds: bool = False,
        independent: bool = False,
    ) -> asyncio.Future[T]:
        if self._closed:
            raise StoreClosed("the durable queue is closed")
        batch = self._completions
        if with_completions and batch is not None and not batch.submitted:
            # Ahead of this operation, so that it sees them done (a read, a claim, the
            # release at shutdown). Only enqueues leave them waiting for more company.
            self._submit_completions()
        loop = self._loop
        future: asyncio.Future[T] = loop.create_future()
        op = _Op(fn, future, loop, write, on_error, synced=synced, independent=independent)
        due = loop.time() + linger if lazy or holds else 0.0
        if holds:
            op.hold_until = due
        self._outbox.append(op)
        if self._thread_owns:
            return future  # a COMMIT is in flight: the connection's release flushes this
        if lazy:
            # Nobody waits for it to answer a call: it rides along with the next batch, or
            # goes alone a moment later, instead of paying a commit cycle of its own. The
            # timer is the earliest that its operations allow.
            if not self._flush_due:
                self._flush_by(due)
        elif not self._flush_due:
            # Whatever else this loop turn submits travels with it: one hand-off per turn.
            self._flush_due = True
            loop.call_soon(self._flush)
        return future

    def _flush_by(self, due: float) -> None:
        """Make the lazy timer flush at ``due`` (loop time) at the latest."""
        timer = self._lazy_timer
        if timer is None or due < timer.when():
            if timer is not None:
                timer.cancel()
            self._lazy_timer = self._loop.call_at(due, self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        if self._lazy_timer is not None:
            self._lazy_timer.cancel()
            self._lazy_timer = None
        if not self._outbox:
            return
        if self._shared or self._closed:
            # Shared: BEGIN may wait for another process's transaction, which must not block
            # the event loop, so the thread does all. Closing: the thread takes what is left.
            ops, self._outbox = self._outbox, []
            self._unhurried.clear()
            self._ops.put(ops)
            return
        if self._thread_owns:
            return  # a COMMIT is in flight: what arrives meanwhile goes in the next one
        ops = self._take()
        if not ops:
            return  # only lingering enqueues wait: their timer (armed by _take) sends them
        live = [op for op in ops if not op.future.cancelled()]
        writes = [op for op in live if op.write]
        reads = [op for op in live if not op.write]
        if not live:
            self._flush()
            return
        conn = self._conn
        done = self._run_plainly(conn, writes) if conn is not None and writes else []
        if done and not reads and not self._tx_synced and conn is not None:
            # No fsync to wait for: the COMMIT only writes the WAL frames (to the OS's page
            # cache), microseconds like the statements before it, so the loop commits too,
            # without the two thread hand-offs. The thread is idle: it owns nothing now.
            self._commit(conn, done)
            answers, self._answers = self._answers, []
            _resolve(answers)
            if self._since_checkpoint >= _CHECKPOINT_EVERY:
                # Checkpoints copy pages and fsync: the thread runs them (see _open_db).
                self._thread_owns = True
                self._ops.put(_Job([], [], self._released, self._loop))
            elif self._outbox and not self._flush_due:
                self._flush_due = True
                self._loop.call_soon(self._flush)
            return
        self._thread_owns = True
        if done is None:
            self._ops.put(live)  # something failed: the thread's careful path isolates it
            self._ops.put(_Job([], [], self._released, live[0].loop))
        else:
            self._ops.put(_Job(done, reads, self._released, live[0].loop))

    def _take(self) -> list[_Op]:
        """Out of the writer's line, the operations of the next transaction, in order.

        That is the first ``max_group`` of them, except lingering enqueues whose sends are
        still out (not hurried, linger not over): those stay in line, and the lazy timer is
        set for the first of them to end. One may only stay if everything after it in line
        is independent of it (``_Op.independent``, or another lingering enqueue: a customer
        with a lingering entry has nothing else queued, see ``BackgroundDelivery``). If
        anything else is behind it, it goes now, so that nothing overtakes it.
        """
        outbox = self._outbox
        unhurried = self._unhurried
        limit = self._max_group
        if not unhurried or len(outbox) > limit:
            ops = outbox[:limit]
            del outbox[:limit]
            if unhurried:
                if outbox:
                    unhurried.intersection_update(op.future for op in outbox)
                else:
                    unhurried.clear()
            return ops
        # Everything up to the last operation that may depend on a lingering one goes.
        cut = len(outbox)
        while cut and (outbox[cut - 1].independent or outbox[cut - 1].hold_until):
            cut -= 1
        now = self._loop.time()
        taken = outbox[:cut]
        kept: list[_Op] = []
        soonest = 0.0
        for op in outbox[cut:]:
            if op.hold_until > now and op.future in unhurried:
                kept.append(op)
                if not soonest or op.hold_until < soonest:
                    soonest = op.hold_until
            else:
                taken.append(op)
        self._outbox = kept
        if kept:
            unhurried.intersection_update(op.future for op in kept)
            self._flush_by(soonest)
        else:
            unhurried.clear()
        return taken

    def _released(self) -> None:
        """On the loop: the thread gave the connection back; start the next batch."""
        self._thread_owns = False
        self._flush()

    # -- the writer thread -------------------------------------------------------------------

    def _answer(self, op: _Op, value: Any = None, exc: BaseException | None = None) -> None:
        """Note ``op``'s answer; callers get the answers of a batch together (``_post``)."""
        if not op.answered:
            op.answered = True
            self._answers.append((op, exc, value))

    def _post(self, then: _Job | None = None) -> None:
        """Hand the noted answers to their loops: one wake-up per loop, not one per op; a
        job's ``release`` travels with its loop's answers."""
        answers, self._answers = self._answers, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Op, BaseException | None, Any]]]
        by_loop = {}
        if then is not None:
            by_loop[then.loop] = []
        for answer in answers:
            by_loop.setdefault(answer[0].loop, []).append(answer)
        for loop, some in by_loop.items():
            release = then.release if then is not None and loop is then.loop else None
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, some, release)

    def _run(self) -> None:
        try:
            self._open_db()
        except Exception as exc:  # noqa: BLE001 - handed to open()'s caller, who re-raises it
            self._opened.set_exception(exc)
            self._shut()
            return
        self._opened.set_result(None)
        stopping = False
        while not stopping:
            first = self._ops.get()
            if first is _STOP:
                break
            if isinstance(first, _Job):
                self._finish_job(first)
                continue
            batch: list[_Op] = list(first) if isinstance(first, list) else []
            while len(batch) < self._max_group:
                try:
                    more = self._ops.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stopping = True
                    break
                if isinstance(more, _Job):
                    self._ops_later.append(more)  # after this batch, in order
                    break
                if isinstance(more, list):
                    batch.extend(more)
            # A caller cancelled before its turn: skip it, so nothing it did not see happens.
            live = [op for op in batch if not op.future.cancelled()]
            try:
                self._execute(live)
            except Exception as exc:  # noqa: BLE001 - the writer must not die with callers waiting
                _log.exception("the durable queue's writer failed a batch")
                for op in live:
                    self._answer(op, exc=StoreUnavailable(f"the writer failed: {exc}"))
            self._post()
            while self._ops_later:
                self._finish_job(self._ops_later.pop(0))
        self._shut()

    def _finish_job(self, job: _Job) -> None:
        """COMMIT what the loop ran, run the reads, answer, and give the connection back."""
        conn = self._conn
        try:
            if job.done and conn is not None:
                self._commit(conn, job.done)
            for op in job.reads:
                self._run_read(op)
            if conn is not None and self._since_checkpoint >= _CHECKPOINT_EVERY:
                self._checkpoint(conn)
        except Exception as exc:  # noqa: BLE001 - the writer must not die with callers waiting
            _log.exception("the durable queue's writer failed a batch")
            for op in [op for op, _, _ in job.done] + job.reads:
                self._answer(op, exc=StoreUnavailable(f"the writer failed: {exc}"))
        self._post(then=job)

    def _shut(self) -> None:
        pending: list[object] = [*self._ops_later]
        self._ops_later.clear()
        while True:
            try:
                pending.append(self._ops.get_nowait())
            except queue.Empty:
                break
        for item in pending:
            ops = [op for op, _, _ in item.done] + item.reads if isinstance(item, _Job) else item
            if isinstance(ops, list):
                for op in ops:
                    self._answer(op, exc=StoreClosed("the durable queue is closed"))
        self._post()
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                _log.exception("closing the durable queue failed")
            self._conn = None
        if self._owner_fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._owner_path(self._owner))
            os.close(self._owner_fd)
            self._owner_fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock
            self._lock_fd = None

    def _execute(self, batch: list[_Op]) -> None:
        writes = [op for op in batch if op.write]
        if writes:
            self._execute_writes(writes)
            self._post()  # writers need not wait for the reads behind them
        for op in batch:
            if not op.write:
                self._run_read(op)

    def _run_read(self, op: _Op) -> None:
        conn = self._conn
        if conn is None:
            self._answer(op, exc=StoreClosed("the durable queue is not open"))
            return
        try:
            self._answer(op, op.fn(conn, _Tx(self._depth, self._bytes)))
        except Exception as exc:  # noqa: BLE001 - handed to the caller's future
            self._fail(op, exc)

    def _fail(self, op: _Op, exc: Exception) -> None:
        if not isinstance(exc, sqlite3.Error):
            self._answer(op, exc=exc)
        elif op.on_error is not None:
            self._answer(op, op.on_error(exc))
        else:
            self._answer(op, exc=StoreUnavailable(f"the durable queue failed: {exc}"))

    def _execute_writes(self, writes: list[_Op]) -> None:
        """Run ``writes`` in one transaction, each inside its own savepoint; then COMMIT once.

        A statement error undoes only its operation. SQLite may instead drop the whole
        transaction (it does on SQLITE_FULL); then the failing operation fails alone, the ones
        before it run again in a new transaction that is committed at once (so none of them
        runs a third time), and the rest follow in another.
        """
        conn = self._conn
        if conn is None:
            for op in writes:
                self._answer(op, exc=StoreClosed("the durable queue is not open"))
            return
        if self._execute_plainly(conn, writes):
            return
        todo = collections.deque(writes)
        done: list[tuple[_Op, Any, _Tx]] = []
        redo = 0  # how many operations at the front of `todo` are redone, to commit first
        while todo:
            if not conn.in_transaction:
                try:
                    self._begin(conn, synced=True)
                    if self._shared:
                        self._refresh_totals(conn)
                except sqlite3.Error as exc:
                    self._rollback(conn)  # a failed recount leaves a transaction open
                    for op in todo:
                        self._fail(op, exc)
                    return
            op = todo.popleft()
            depth, nbytes = (done[-1][2].depth, done[-1][2].nbytes) if done else self._totals()
            tx = _Tx(depth, nbytes)
            try:
                conn.execute("SAVEPOINT op")
                result = op.fn(conn, tx)
                conn.execute("RELEASE op")
            except Exception as exc:  # noqa: BLE001 - handed to the caller's future
                self._fail(op, exc)
                if not self._undo_op(conn):
                    # The transaction is gone, and what it held with it: redo those.
                    redone = [earlier for earlier, _, _ in done]
                    todo.extendleft(reversed(redone))
                    redo = len(redone)
                    done.clear()
                continue
            done.append((op, result, tx))
            if redo:
                redo -= 1
                if redo == 0:
                    self._commit(conn, done)
                    done = []
        if done or conn.in_transaction:
            self._commit(conn, done)

    def _execute_plainly(self, conn: sqlite3.Connection, writes: list[_Op]) -> bool:
        """The common case: every operation succeeds, so none needs a savepoint of its own
        (two statements, and two hand-offs of the GIL, fewer per operation). On the first
        failure nothing of the batch is answered, and False sends it down the careful path,
        which isolates the failing operation."""
        done = self._run_plainly(conn, writes)
        if done is None:
            return False
        self._commit(conn, done)
        return True

    def _run_plainly(
        self, conn: sqlite3.Connection, writes: list[_Op]
    ) -> list[tuple[_Op, Any, _Tx]] | None:
        """Run ``writes`` in one open transaction, without savepoints; None (rolled back)
        when one fails."""
        try:
            self._begin(conn, synced=any(op.synced for op in writes))
            if self._shared:
                self._refresh_totals(conn)
        except sqlite3.Error:
            self._rollback(conn)
            return None
        depth, nbytes = self._totals()
        done: list[tuple[_Op, Any, _Tx]] = []
        for op in writes:
            tx = _Tx(depth, nbytes)
            try:
                result = op.fn(conn, tx)
            except Exception:  # noqa: BLE001 - the careful path runs it again and answers
                self._rollback(conn)
                return None
            depth, nbytes = tx.depth, tx.nbytes
            done.append((op, result, tx))
        return done

    def _totals(self) -> tuple[int, int]:
        return self._depth, self._bytes

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        """Copy the WAL into the database file (writer thread; not shared, see ``_open_db``).

        PASSIVE: it never waits for the reader; what a read holds back is copied next time.
        """
        self._since_checkpoint = 0
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            _log.warning("durable queue %s: a WAL checkpoint failed: %s", self.path, exc)

    def _begin(self, conn: sqlite3.Connection, *, synced: bool) -> None:
        """BEGIN a write transaction; ``synced=False``: its COMMIT need not wait for the disk.

        A transaction is unsynced only when every operation in it allows it: completions,
        and the enqueues of WAIT events whose first try runs beside the commit. Its COMMIT
        is written to the WAL without an fsync (``NORMAL``; in WAL mode that still syncs
        before a checkpoint, so the file cannot be corrupted). ``kill -9`` cannot lose it:
        the OS has the pages. A power cut can undo it, and nothing answered depends on it:
        an undone completion leaves its entry claimed, and the next start sends it once
        more, as after a crash between Bluecore's 2xx and that COMMIT; an undone enqueue was
        either answered DELIVERED (true: Bluecore has it) or not answered yet, because a
        ``QUEUED`` answer for it waits for :meth:`sync`. Any later synced COMMIT's fsync
        flushes these frames too (the WAL is one file, replayed in order, so a later commit
        never survives without the earlier ones). SQLite takes a new ``synchronous`` level
        only between transactions, so it is set here, and only when it changes.
        """
        level = self._synchronous if synced else "NORMAL"
        if level != self._sync_level:
            conn.execute(f"PRAGMA synchronous={level}")
            self._sync_level = level
        conn.execute("BEGIN IMMEDIATE")
        self._tx_keys.clear()
        self._tx_synced = synced

    def _commit(self, conn: sqlite3.Connection, done: list[tuple[_Op, Any, _Tx]]) -> None:
        """COMMIT, then apply what the operations changed in memory and answer their callers."""
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(conn)
            for op, _, _ in done:
                self._fail(op, exc)
            return
        self._commits += 1
        self._since_checkpoint += 1
        self._operations += len(done)
        if self._tx_synced:
            self._synced_commits += 1
        # Read by sync() on the loop, which only asks after this commit's answer came back.
        self._unsynced = not self._tx_synced
        with self._lock:
            if done:
                self._depth, self._bytes = done[-1][2].depth, done[-1][2].nbytes
            for _, _, tx in done:
                for effect in tx.effects:
                    effect()
        for op, result, _ in done:
            self._answer(op, result)

    @staticmethod
    def _undo_op(conn: sqlite3.Connection) -> bool:
        """Undo the current operation's savepoint; False when the transaction is gone."""
        if not conn.in_transaction:
            return False
        try:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
        except sqlite3.Error:
            SqliteQueue._rollback(conn)
            return False
        return True

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                _log.exception("rolling back a durable queue transaction failed")

    # -- opening (writer thread) -----------------------------------------------------------

    def _open_db(self) -> None:
        alone = self._take_ownership()
        # A file that other processes have open is theirs too: it is never moved aside.
        verdict = self._inspect() if alone else None
        if verdict is not None:
            kind, why = verdict
            aside = self._move_aside(kind)
            _log.error(
                "durable queue %s is %s (%s): moved it to %s and started an empty queue",
                self.path,
                "corrupt" if kind == "corrupt" else "not this sidecar's queue",
                why,
                aside.name,
            )
        # Not shared, the event loop runs statements on it too, never while this thread does.
        conn = sqlite3.connect(
            self.path, isolation_level=None, timeout=5.0, check_same_thread=False
        )
        self._conn = conn
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            _log.warning("durable queue %s runs in journal mode %s, not WAL", self.path, mode)
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        if not self._shared:
            # SQLite checkpoints inside the COMMIT that fills the WAL past 1000 pages, and the
            # event loop makes most COMMITs (the unsynced ones): the writer thread checkpoints
            # instead, every _CHECKPOINT_EVERY commits (_checkpoint).
            conn.execute("PRAGMA wal_autocheckpoint=0")
        self._migrate(conn)
        if self._max_file_bytes is not None:
            page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            pages = max(1, self._max_file_bytes // page_size)
            conn.execute(f"PRAGMA max_page_count={pages}")
        self._load(conn)
        try:
            released = self._release_orphans(conn)
        except sqlite3.Error as exc:
            _log.error("durable queue %s: could not release old claims: %s", self.path, exc)
        else:
            if released:
                _log.info("durable queue: %d claimed entries made pending again", released)
                with self._lock:
                    self._pending += released
        if self._shared and alone and self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)  # repairs done: let the others in

    def _take_ownership(self) -> bool:
        """Lock ``<name>.lock`` while open; True when no other process has the file open.

        Not shared: an exclusive lock, and a second opener gets a StoreError. Shared: an
        exclusive lock when nobody else holds it (this opener then repairs the file, and turns
        the lock into a shared one), else a shared lock next to the others'. Either way this
        process also locks ``<name>.owner-<id>.lock`` for as long as it lives; the claims it
        makes carry that id, and whoever can lock an owner's file knows it is gone.
        """
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            _log.warning(
                "durable queue %s: cannot create its lock file (%s); make sure only one process"
                " uses it",
                self.path,
                exc.strerror,
            )
            return True
        alone = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if not self._shared or not self._lock_shared(fd):
                os.close(fd)
                raise StoreError(
                    f"the durable queue {self.path} is in use by another process or sidecar"
                ) from exc
            alone = False
        self._lock_fd = fd
        owner_path = self._owner_path(self._owner)
        try:
            self._owner_fd = os.open(
                owner_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
            )
            fcntl.flock(self._owner_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if self._shared:
                # Without it, the others would take this process's claims for orphans.
                raise StoreError(
                    f"cannot create the owner lock of the durable queue {self.path}: {exc.strerror}"
                ) from exc
            _log.warning(
                "durable queue %s: cannot create its owner lock (%s)", self.path, exc.strerror
            )
        return alone

    @staticmethod
    def _lock_shared(fd: int) -> bool:
        """Take a shared lock, waiting out another opener's repairs; False if it never ends."""
        deadline = time.monotonic() + _SHARED_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False  # an exclusive (not shared) opener holds it
                time.sleep(0.05)
            else:
                return True

    def _owner_path(self, owner: int) -> Path:
        return self.path.with_name(f"{self.path.name}.owner-{owner:x}.lock")

    def _owner_alive(self, owner: int) -> bool:
        """Whether ``owner`` still runs: its lock file exists and is locked. A gone owner's
        file is removed on the way."""
        if owner == self._owner:
            return True
        if not _OWNER_MIN <= owner < NO_OWNER:
            return False  # NO_OWNER: a claim made before owners existed (schema v1)
        path = self._owner_path(owner)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        except OSError:
            return True  # cannot tell: leave its claims alone
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            with contextlib.suppress(OSError):
                os.unlink(path)
            return False
        finally:
            os.close(fd)

    def _release_orphans(self, conn: sqlite3.Connection) -> int:
        """Make pending again every claim whose owner is gone; tidy gone owners' lock files."""
        owners = [
            row[0]
            for row in conn.execute("SELECT DISTINCT claim_owner FROM entries WHERE state = 1")
        ]
        released = 0
        for owner in owners:
            if not self._owner_alive(owner):
                released += conn.execute(
                    "UPDATE entries SET state = 0 WHERE state = 1 AND claim_owner = ?", (owner,)
                ).rowcount
        prefix = f"{self.path.name}.owner-"
        for leftover in self.path.parent.glob(f"{glob.escape(prefix)}*.lock"):
            with contextlib.suppress(ValueError):  # not a name this code makes: left alone
                self._owner_alive(int(leftover.name.removeprefix(prefix).removesuffix(".lock"), 16))
        return released

    def _inspect(self) -> tuple[str, str] | None:
        """None when the file is ours (or absent/empty), else ("corrupt"|"foreign", why)."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return None
        # Read-only, so that SQLite neither checkpoints nor deletes a -wal it cannot make sense
        # of: a file that is moved aside is moved aside whole.
        uri = f"file:{urllib.parse.quote(str(self.path))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=5.0)
        try:
            check = [row[0] for row in conn.execute("PRAGMA quick_check")]
            if check != ["ok"]:
                return "corrupt", f"quick_check: {'; '.join(map(str, check[:3]))}"
            app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            tables = {
                row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        except sqlite3.Error as exc:
            if _primary(exc) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
                return "corrupt", str(exc)
            # Not the file's fault (permissions, a locked or vanished file): nothing is moved.
            raise StoreError(f"cannot open the durable queue {self.path}: {exc}") from exc
        finally:
            conn.close()
        if app_id == 0 and version == 0 and not tables:
            return None  # an empty SQLite file: ours to fill
        if app_id != APPLICATION_ID:
            return "foreign", f"application_id {app_id:#x}, tables {sorted(tables)[:5]}"
        if not 1 <= version <= SCHEMA_VERSION:
            return "foreign", f"schema version {version}, this sidecar knows 1 to {SCHEMA_VERSION}"
        if version == SCHEMA_VERSION and not {"entries", "delivered"} <= tables:
            return "corrupt", f"tables missing: {sorted({'entries', 'delivered'} - tables)}"
        return None

    def _move_aside(self, kind: str) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.{kind}-{stamp}")
        n = 1
        while aside.exists():
            aside = self.path.with_name(f"{self.path.name}.{kind}-{stamp}-{n}")
            n += 1
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                os.replace(side, aside.with_name(aside.name + suffix))
        os.replace(self.path, aside)
        return aside

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Again under the write lock: another process sharing the file may have migrated.
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version == SCHEMA_VERSION:
                conn.execute("COMMIT")
                return
            for target in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[target](conn)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            SqliteQueue._rollback(conn)
            raise

    def _load(self, conn: sqlite3.Connection) -> None:
        depth, nbytes = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(length(payload)), 0) FROM entries WHERE state < 2"
        ).fetchone()
        live: collections.Counter[str] = collections.Counter()
        for key, count in conn.execute(
            "SELECT ordering_key, COUNT(*) FROM entries WHERE state < 2 GROUP BY ordering_key"
        ):
            live[key] = count
        (seq,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM entries").fetchone()
        (pending,) = conn.execute("SELECT COUNT(*) FROM entries WHERE state = 0").fetchone()
        records = self._known_ids(conn)
        with self._lock:
            self._depth, self._bytes, self._live, self._seq = depth, nbytes, live, seq
            self._pending = pending
            if records is not None:
                self._cache_all(records)
                self._complete = True

    def _known_ids(self, conn: sqlite3.Connection) -> list[DedupRecord] | None:
        """Every id a lookup could find in the file, oldest first, when they fit the LRU;
        None when they do not, or when the file is shared (other processes add ids unseen).

        With all of them in memory, and every write caching what it adds (their effects),
        a lookup that misses the LRU is answered without reading: the id is not in the file.
        The first eviction ends that (``_cache``).
        """
        if self._shared:
            return None
        cutoff = self._clock() - self._window
        (live,) = conn.execute("SELECT COUNT(*) FROM entries WHERE state < 2").fetchone()
        (recent,) = conn.execute(
            "SELECT COUNT(*) FROM delivered WHERE delivered_at >= ?", (cutoff,)
        ).fetchone()
        if live + recent > self._lru_size:
            return None
        rows = conn.execute(
            "SELECT 1, message_id, bluecore_event, attempts, http_status, delivered_at"
            " FROM delivered WHERE delivered_at >= ?"
            " UNION ALL SELECT 0, message_id, bluecore_event, attempts, last_http_status,"
            " enqueued_at FROM entries WHERE state < 2",
            (cutoff,),
        ).fetchall()
        # A live entry's record wins over a delivery of the same id (as in _lookup_all):
        # queued rows come last, so theirs is the one cached.
        return [
            DedupRecord(message_id, "delivered" if kind else "queued", event, attempts, status, at)
            for kind, message_id, event, attempts, status, at in sorted(
                rows, key=lambda row: (-row[0], row[5])
            )
        ]

    def _release(self, conn: sqlite3.Connection, tx: _Tx) -> int:
        released = conn.execute(
            "UPDATE entries SET state = 0 WHERE state = 1 AND claim_owner = ?", (self._owner,)
        ).rowcount
        tx.effects.append(functools.partial(self._note_pending, released))
        return released

    # -- EventQueue --------------------------------------------------------------------------

    async def enqueue(
        self, entries: Sequence[NewEntry], *, claim: bool = False
    ) -> list[EnqueueOutcome]:
        """Commit ``entries`` in one group commit; one outcome each, in order.

        An entry whose message id is queued, or was delivered within the window, is a
        :class:`Duplicate`; one past the count or byte limit, or refused by SQLite (disk full,
        read-only, I/O error) is :class:`QueueFull`. Only :class:`Enqueued` is on disk.

        With ``claim=True`` (a caller about to try the event itself), an entry that is the
        only live one of its key is written already claimed by this process, so it needs no
        second transaction to be claimed; its :attr:`Enqueued.claim` is set. An entry behind
        others of its key is written pending, as without ``claim``, and waits its turn.
        """
        return await self.enqueue_soon(entries, claim=claim)

    def enqueue_soon(
        self,
        entries: Sequence[NewEntry],
        *,
        claim: bool = False,
        synced: bool = True,
        linger: bool = False,
    ) -> asyncio.Future[list[EnqueueOutcome]]:
        """:meth:`enqueue`, in the writer's line before this returns; await the future.

        ``synced=False`` (a WAIT event whose first try is under way): its commit may skip the
        fsync, like a completion's (see ``_begin``), since a delivered try's answer does not
        depend on it; any ``QUEUED`` answer for it must come after :meth:`sync`.

        ``linger=True`` (also a first try's): the enqueue stays in the writer's line for up
        to :data:`_ENQUEUE_LINGER` while the try's send is out, unless :meth:`hurry` sends
        it earlier or :meth:`withdraw` takes it back. Commits of delivered ids and
        completions may go meanwhile; anything else submitted after it commits after it, or
        in the same transaction behind it.
        """
        batch = tuple(entries)
        if not batch:
            done: asyncio.Future[list[EnqueueOutcome]] = self._loop.create_future()
            done.set_result([])
            return done
        now = self._clock()
        # Whether claiming runs is asked now, not at the commit: an entry that lingers past
        # stop_claiming() is still its first try's to settle, and the release at shutdown,
        # submitted after it, puts it back if the try is cut.
        claim = claim and self._claiming

        def run(conn: sqlite3.Connection, tx: _Tx) -> list[EnqueueOutcome]:
            return [self._enqueue_one(conn, tx, entry, now, claim) for entry in batch]

        def refused(exc: sqlite3.Error) -> list[EnqueueOutcome]:
            cause = _cause(exc)
            _log.error("durable queue refused %d entries: %s (%s)", len(batch), cause, exc)
            return [QueueFull(cause, f"the queue's database refused the write ({cause})")] * len(
                batch
            )

        if linger:
            future = self._submit_soon(
                run,
                write=True,
                on_error=refused,
                synced=synced,
                with_completions=False,
                lazy=True,
                linger=_ENQUEUE_LINGER,
                holds=True,
            )
            if not future.done():
                self._unhurried.add(future)
            return future
        return self._submit_soon(
            run, write=True, on_error=refused, synced=synced, with_completions=False
        )

    def withdraw(self, future: asyncio.Future[Any]) -> bool:
        """Take the lingering enqueue of ``future`` out of the writer's line, if it is still
        there (not run, not handed to the thread): its first try delivered before the commit
        went, so there is nothing to queue. The future is cancelled; True when taken back."""
        if future.done():
            return False
        for index, op in enumerate(self._outbox):
            if op.future is future:
                del self._outbox[index]
                self._unhurried.discard(future)
                future.cancel()
                return True
        return False

    def remember_soon(self, record: DedupRecord) -> None:
        """Record a delivery whose entry was never written (see :meth:`withdraw`), without
        waiting: the records of a loop's worth of calls go as one operation, which rides
        with the next write or goes alone after :data:`_COMPLETION_WAIT`.

        A crash before that commit forgets the ids (a resend would deliver them again),
        as one before a completion's commit sends its entry again: at least once."""
        if record.state != "delivered":
            raise ValueError("remember_soon() records deliveries")
        if self._closed:
            raise StoreClosed("the durable queue is closed")
        with self._lock:
            waiting = self._remembering
            waiting.append(record)
        if len(waiting) > 1:
            return  # the operation already in line takes it along

        def run(conn: sqlite3.Connection, tx: _Tx) -> None:
            with self._lock:
                records, self._remembering = self._remembering, []
            conn.executemany(
                "INSERT OR REPLACE INTO delivered VALUES (?, ?, ?, ?, ?)",
                [
                    (r.message_id, r.bluecore_event, r.attempts, r.http_status, r.at)
                    for r in records
                ],
            )
            tx.effects.append(functools.partial(self._cache_all, records))

        def failed(exc: sqlite3.Error) -> None:
            # Delivered all the same; only a resend after a restart could slip through.
            _log.warning(
                "durable queue: delivered ids not recorded (%s)", _cause(exc), exc_info=False
            )

        self._submit_soon(
            run,
            write=True,
            on_error=failed,
            lazy=True,
            synced=False,
            with_completions=False,
            linger=_COMPLETION_WAIT,
            independent=True,
        )

    def hurry(self, future: asyncio.Future[Any]) -> None:
        """``future``'s caller waits for its commit (see :meth:`enqueue_soon`): commit it now,
        on the loop, with whatever else is in line but the lingering enqueues whose sends
        are still out (they stay, see ``_take``).

        Nothing to do when a flush is already due this turn, or the writer thread holds
        the connection (its release flushes what waits)."""
        self._unhurried.discard(future)
        if future.done():
            return
        if self._outbox and not self._flush_due and not self._thread_owns:
            self._flush()

    async def sync(self) -> None:
        """Return once every commit answered so far is on the disk.

        At once when the last commit was synced (it flushed the WAL, and every frame before
        it). Otherwise a synced transaction is committed; it rewrites ``user_version`` with
        its own value, because a COMMIT that writes nothing skips the fsync.
        """
        if not self._unsynced:
            return

        def run(conn: sqlite3.Connection, tx: _Tx) -> None:
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

        await self._submit(run, write=True)

    def _enqueue_one(
        self, conn: sqlite3.Connection, tx: _Tx, entry: NewEntry, now: float, claim: bool
    ) -> EnqueueOutcome:
        size = len(entry.payload)
        if tx.depth + 1 > self._limits.max_entries or tx.nbytes + size > self._limits.max_bytes:
            # A duplicate says so even in a full queue.
            known = self._lookup_db(conn, entry.message_id, now)
            if known is not None:
                return Duplicate(known)
            if tx.depth + 1 > self._limits.max_entries:
                limit = self._limits.max_entries
                return QueueFull("COUNT", f"the queue holds its limit of {limit}")
            return QueueFull("BYTES", f"the queue holds its limit of {self._limits.max_bytes} B")
        # Only grows: a rolled-back number is skipped, never reused out of order.
        self._seq = self._next_seq(conn, entry.ordering_key)
        due = now if entry.next_due is None else entry.next_due
        # Claimed at once only as the key's head (nothing else live, in this transaction's
        # view, which includes other processes' commits), and only if claiming ran when the
        # entry was submitted (see enqueue_soon).
        claimed = claim and due <= now and self._alone(conn, entry.ordering_key)
        # The duplicate check is part of the insert: a live entry of the id is refused by
        # its unique index (OR IGNORE), a delivered one by the NOT EXISTS. One statement.
        inserted = conn.execute(
            "INSERT OR IGNORE INTO entries (seq, state, message_id, ordering_key, bluecore_event,"
            " payload, enqueued_at, event_time, attempts, next_due, last_reason,"
            " last_http_status, traceparent, claim_id, claim_owner)"
            " SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
            " WHERE NOT EXISTS"
            " (SELECT 1 FROM delivered WHERE message_id = ? AND delivered_at >= ?)",
            (
                self._seq,
                CLAIMED if claimed else PENDING,
                entry.message_id,
                entry.ordering_key,
                entry.bluecore_event,
                entry.payload,
                now,
                entry.event_time,
                entry.attempts,
                due,
                entry.last_reason,
                entry.last_http_status,
                entry.traceparent,
                1 if claimed else 0,
                self._owner if claimed else NO_OWNER,
                entry.message_id,
                now - self._window,
            ),
        )
        if inserted.rowcount != 1:
            known = self._lookup_db(conn, entry.message_id, now)
            if known is None:  # not a duplicate: no other constraint can ignore a row
                raise sqlite3.IntegrityError("the entry was not inserted")
            return Duplicate(known)
        row_id = inserted.lastrowid
        assert row_id is not None
        self._tx_keys.add(entry.ordering_key)
        tx.depth += 1
        tx.nbytes += size
        record = DedupRecord(
            entry.message_id, "queued", entry.bluecore_event, entry.attempts, 0, now
        )
        key = entry.ordering_key
        tx.effects.append(functools.partial(self._entered, key, record))
        if not claimed:
            tx.effects.append(self._note_pending)
            return Enqueued(row_id)
        stored = entry.queued(row_id, key, now, due)
        return Enqueued(row_id, Claim(stored, claim_id=1))

    def _entered(self, key: str, record: DedupRecord) -> None:
        """After COMMIT: count a committed entry of ``key`` and remember its id (one effect
        per entry, not two)."""
        self._note_live(key, +1)
        self._cache(record)

    def _alone(self, conn: sqlite3.Connection, key: str) -> bool:
        """Whether ``key`` has no live entry, as this transaction sees it.

        A file this process has alone is answered from memory: the live counts as of the
        last COMMIT, plus the keys this transaction has added since its BEGIN.
        """
        if not self._shared:
            with self._lock:
                return key not in self._live and key not in self._tx_keys
        rows = conn.execute(
            "SELECT 1 FROM entries WHERE ordering_key = ? AND state < 2 LIMIT 1", (key,)
        ).fetchall()
        return not rows

    def _next_seq(self, conn: sqlite3.Connection, key: str) -> int:
        """The next sequence number for ``key``: above this process's last one and, when the
        file is shared, above every live entry of the key (others number theirs too)."""
        seq = self._seq + 1
        if self._shared:
            (top,) = conn.execute(
                "SELECT MAX(seq) FROM entries WHERE ordering_key = ? AND state < 2", (key,)
            ).fetchone()
            if top is not None:
                seq = max(seq, int(top) + 1)
        return seq

    def _refresh_totals(self, conn: sqlite3.Connection, *, force: bool = False) -> None:
        """Shared file: recount depth and bytes, which other processes change unseen.

        Called inside a transaction at most every :data:`_TOTALS_MAX_AGE` seconds (it scans
        the live entries), so the limits may let through what others queued since.
        """
        now = time.monotonic()
        if not force and now - self._totals_at < _TOTALS_MAX_AGE:
            return
        depth, nbytes = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(length(payload)), 0) FROM entries WHERE state < 2"
        ).fetchone()
        with self._lock:
            self._depth, self._bytes = int(depth), int(nbytes)
        self._totals_at = now

    async def claim_due(self, limit: int, now: float | None = None) -> list[Claim]:
        """Claim up to ``limit`` due entries: only the oldest live entry of each key, and only
        when it is pending (so never a key with an entry already claimed)."""
        if not self._claiming or limit <= 0:
            return []
        at = self._clock() if now is None else now

        def run(conn: sqlite3.Connection, tx: _Tx) -> list[Claim]:
            if not self._claiming:
                return []
            rows = conn.execute(
                f"SELECT {_ENTRY_COLUMNS}, claim_id FROM entries AS e"  # noqa: S608 - constants and ? placeholders only
                " WHERE e.state = 0 AND e.next_due <= ?"
                " AND e.seq = (SELECT MIN(h.seq) FROM entries AS h"
                "              WHERE h.ordering_key = e.ordering_key AND h.state < 2)"
                " ORDER BY e.next_due, e.seq LIMIT ?",
                (at, limit),
            ).fetchall()
            claims = []
            for row in rows:
                claim_id = int(row[-1]) + 1
                conn.execute(
                    "UPDATE entries SET state = 1, claim_id = ?, claim_owner = ? WHERE id = ?",
                    (claim_id, self._owner, row[0]),
                )
                claims.append(Claim(_entry(row[:-1]), claim_id))
            if claims:
                tx.effects.append(functools.partial(self._note_pending, -len(claims)))
            return claims

        return await self._submit(run, write=True)

    async def complete(self, claim: Claim, *, attempts: int, http_status: int) -> bool:
        """Delivered: delete the entry and remember its message id for the dedup window."""
        future: asyncio.Future[bool] = self._loop.create_future()
        self.complete_soon(
            claim,
            attempts=attempts,
            http_status=http_status,
            then=functools.partial(_settle_completed, future),
        )
        self._submit_completions(lazy=True)  # a caller waits: no _COMPLETION_WAIT for it
        return await future

    def complete_soon(
        self, claim: Claim, *, attempts: int, http_status: int, then: Completed
    ) -> None:
        """:meth:`complete` for a caller that does not wait: ``then(claim, error, kept)`` is
        called on the loop once it committed (``kept`` False: the claim was stale) or failed.

        Nobody's answer waits on a completion, so completions wait for company: those that
        arrive before the next commit are one write operation, two statements for them all.
        """
        if self._closed:
            raise StoreClosed("the durable queue is closed")
        item = _Completion(claim, attempts, http_status, self._clock(), then)
        key = claim.entry.ordering_key
        with self._lock:  # a shared file's operations run on the writer thread
            batch = self._completions
            if batch is not None:
                batch.items.append(item)
                batch.keys.add(key)
                return
            self._completions = _Completions([item], {key})
        if self._shared:
            # Other processes read the file to see whether the customer is free: the
            # completion rides with the next operation, or goes alone a moment later.
            self._submit_completions(lazy=True)
        else:
            # Enqueues pass them by: up to _COMPLETION_WAIT's worth commit as one operation.
            self._completion_timer = self._loop.call_later(
                _COMPLETION_WAIT, self._submit_completions
            )

    def _submit_completions(self, *, lazy: bool = False) -> None:
        """Put the waiting completions in the writer's line, as one operation."""
        timer, self._completion_timer = self._completion_timer, None
        if timer is not None:
            timer.cancel()
        batch = self._completions
        if batch is None or batch.submitted:
            return
        batch.submitted = True
        done = self._submit_soon(
            functools.partial(self._complete_all, batch),
            write=True,
            lazy=lazy,
            synced=False,
            independent=True,
        )
        done.add_done_callback(batch.answer)

    def _complete_all(self, batch: _Completions, conn: sqlite3.Connection, tx: _Tx) -> list[bool]:
        with self._lock:
            if self._completions is batch:
                self._completions = None  # those that come from now on go in the next one
        items = batch.items
        delete = "DELETE FROM entries WHERE id = ? AND state = 1 AND claim_id = ?"
        if batch.one_by_one:
            kept = [
                conn.execute(delete, (item.claim.entry.id, item.claim.claim_id)).rowcount == 1
                for item in items
            ]
        else:
            gone = conn.executemany(
                delete, [(item.claim.entry.id, item.claim.claim_id) for item in items]
            ).rowcount
            if gone != len(items):
                # A stale claim among them (released at shutdown), and the count does not say
                # which: the operation is undone and runs again, one statement each.
                batch.one_by_one = True
                raise _StaleCompletion
            kept = [True] * len(items)
        records = []
        for item, ok in zip(items, kept, strict=True):
            if ok:
                entry = item.claim.entry
                records.append(
                    DedupRecord(
                        entry.message_id,
                        "delivered",
                        entry.bluecore_event,
                        entry.attempts + item.attempts,
                        item.http_status,
                        item.at,
                    )
                )
                self._leave(tx, entry)
        conn.executemany(
            "INSERT OR REPLACE INTO delivered VALUES (?, ?, ?, ?, ?)",
            [(r.message_id, r.bluecore_event, r.attempts, r.http_status, r.at) for r in records],
        )
        tx.effects.append(functools.partial(self._cache_all, records))
        return kept

    async def reschedule(
        self, claim: Claim, *, next_due: float, reason: str, http_status: int, attempts: int
    ) -> bool:
        """Back to pending, due at ``next_due``; its key stays blocked behind it meanwhile."""
        entry = claim.entry

        def run(conn: sqlite3.Connection, tx: _Tx) -> bool:
            changed = conn.execute(
                "UPDATE entries SET state = 0, next_due = ?, last_reason = ?,"
                " last_http_status = ?, attempts = attempts + ?"
                " WHERE id = ? AND state = 1 AND claim_id = ?",
                (next_due, reason, http_status, attempts, entry.id, claim.claim_id),
            ).rowcount
            if changed != 1:
                return False
            record = DedupRecord(
                entry.message_id,
                "queued",
                entry.bluecore_event,
                entry.attempts + attempts,
                http_status,
                entry.enqueued_at,
            )
            tx.effects.append(lambda: self._cache(record))
            tx.effects.append(self._note_pending)
            return True

        return await self._submit(run, write=True)

    async def dead_letter(
        self, claim: Claim, *, reason: str, detail: str, http_status: int, attempts: int
    ) -> bool:
        """Give up on the entry: it becomes a dead letter and unblocks its key.

        ``detail`` is shown to operators as it is: it must not hold the token or an email.

        Its message id is forgotten by dedup (only deliveries are remembered), so the caller
        may send it again; a replay later skips it if that delivery happened.
        """
        now = self._clock()
        entry = claim.entry

        def run(conn: sqlite3.Connection, tx: _Tx) -> bool:
            changed = conn.execute(
                "UPDATE entries SET state = 2, dead_at = ?, last_reason = ?, detail = ?,"
                " last_http_status = ?, attempts = attempts + ?"
                " WHERE id = ? AND state = 1 AND claim_id = ?",
                (now, reason, detail, http_status, attempts, entry.id, claim.claim_id),
            ).rowcount
            if changed != 1:
                return False
            self._leave(tx, entry)
            message_id = entry.message_id
            tx.effects.append(lambda: self._uncache(message_id))
            return True

        return await self._submit(run, write=True)

    def _leave(self, tx: _Tx, entry: QueuedEntry) -> None:
        """Account for a live entry leaving the queue (delivered or dead)."""
        tx.depth -= 1
        tx.nbytes -= len(entry.payload)
        key = entry.ordering_key
        tx.effects.append(lambda: self._note_live(key, -1))

    async def release_all_claims(self) -> int:
        """Make this process's claimed entries pending again (shutdown).

        At every open, the claims of processes that are gone are released too."""
        return await self._submit(self._release, write=True)

    def pending_now(self, ordering_key: str) -> bool | None:
        """Whether ``ordering_key`` has a pending or claimed entry, from memory; None for a
        shared file, whose other processes queue and deliver entries of the key unseen."""
        if self._shared:
            return None
        with self._lock:
            if ordering_key not in self._live:
                return False
        batch = self._completions
        if batch is None or ordering_key not in batch.keys:
            return True
        # The key's live entry may be one that was delivered and waits for its completion's
        # commit: commit now (on the loop, unless the writer thread holds the connection).
        self._submit_completions()
        self._flush()
        with self._lock:
            return ordering_key in self._live

    async def has_pending(self, ordering_key: str) -> bool:
        """Whether ``ordering_key`` has a pending or claimed entry (memory only, no I/O).

        A shared file is read instead: other processes queue and deliver entries of the same
        key, which this process's count never sees.
        """
        known = self.pending_now(ordering_key)
        if known is not None:
            return known

        def run(conn: sqlite3.Connection, tx: _Tx | None = None) -> bool:
            rows = conn.execute(
                "SELECT 1 FROM entries WHERE ordering_key = ? AND state < 2 LIMIT 1",
                (ordering_key,),
            ).fetchall()
            return bool(rows)

        reader = self._reader
        if reader is not None:
            with contextlib.suppress(sqlite3.Error):  # busy: the writer thread answers
                return run(reader)
        return await self._submit(run, write=False)

    async def stats(self, now: float | None = None) -> QueueStats:
        """Depth, bytes, claimed, oldest entry's age and dead letters by reason."""
        at = self._clock() if now is None else now

        def run(conn: sqlite3.Connection, tx: _Tx) -> QueueStats:
            if self._shared:
                self._refresh_totals(conn, force=True)
                tx = _Tx(*self._totals())
            claimed, oldest = conn.execute(
                "SELECT COUNT(*) FILTER (WHERE state = 1), MIN(enqueued_at)"
                " FROM entries WHERE state < 2"
            ).fetchone()
            dead = dict(
                conn.execute(
                    "SELECT last_reason, COUNT(*) FROM entries WHERE state = 2"
                    " GROUP BY last_reason ORDER BY last_reason"
                ).fetchall()
            )
            return QueueStats(
                depth=tx.depth,
                bytes=tx.nbytes,
                claimed=claimed,
                oldest_pending_age=0.0 if oldest is None else max(0.0, at - oldest),
                dead_letters=dead,
                commits=self._commits,
                operations=self._operations,
                synced_commits=self._synced_commits,
            )

        return await self._submit(run, write=False)

    async def earliest_due(self) -> float | None:
        """The earliest ``next_due`` among claimable entries (pending heads of their key).

        Entries waiting behind a claimed or pending head are left out: they cannot be claimed
        before their head leaves, so a worker sleeping until then would wake for nothing.
        """

        def run(conn: sqlite3.Connection, tx: _Tx) -> float | None:
            (due,) = conn.execute(
                "SELECT MIN(e.next_due) FROM entries AS e WHERE e.state = 0"
                " AND e.seq = (SELECT MIN(h.seq) FROM entries AS h"
                "              WHERE h.ordering_key = e.ordering_key AND h.state < 2)"
            ).fetchone()
            return None if due is None else float(due)

        return await self._submit(run, write=False)

    # -- DedupStore ----------------------------------------------------------------------------

    async def lookup(self, message_id: str, now: float | None = None) -> DedupRecord | None:
        """The record of a queued id, or of one delivered within the window; else None.

        Hits are answered from memory (an LRU of recent records); misses read the database,
        through the reader connection on the caller's thread when it can (a point read of
        committed state, no hand-off to the writer and no wait for its commit), else on the
        writer thread.
        """
        at = self._clock() if now is None else now
        with self._lock:
            cached = self._lru.get(message_id)
            if cached is not None:
                self._lru.move_to_end(message_id)
            elif message_id in self._absent:
                self._absent.discard(message_id)
                return None  # read a moment ago by prefetch, and not added since
        # Shared: another process may have delivered or given up on a queued id meanwhile.
        stale = self._shared and cached is not None and cached.state == "queued"
        if cached is not None and self._fresh(cached, at) and not stale:
            return cached
        if self._complete:
            return None  # memory holds every id of the file (see _known_ids)
        reader = self._reader
        if reader is not None:
            try:
                found = self._lookup_db(reader, message_id, at)
            except sqlite3.Error:
                pass  # busy or failing: the writer thread answers (and waits, if it must)
            else:
                if found is not None:
                    with self._lock:
                        self._cache(found)
                return found

        def run(conn: sqlite3.Connection, tx: _Tx) -> DedupRecord | None:
            record = self._lookup_db(conn, message_id, at)
            if record is not None:
                with self._lock:
                    self._cache(record)
            return record

        return await self._submit(run, write=False)

    def prefetch(self, message_ids: Sequence[str], now: float | None = None) -> None:
        """Read ``message_ids`` in one statement on the reader connection (a batch's ids), so
        that the :meth:`lookup` of each that follows answers from memory.

        A found id is cached as a lookup would cache it; one not found is marked absent, and
        its next lookup takes the mark and answers None. That is right because whatever adds
        an id to the file afterwards (an enqueue, a completion, a remember) puts its record in
        the cache at COMMIT, and lookup reads the cache before the marks (an id that leaves
        the cache loses its mark too). A shared file, which other processes change unseen,
        gets no marks; a failed read leaves the lookups to read for themselves.
        """
        reader = self._reader
        if self._shared or self._complete or reader is None or len(message_ids) < 2:
            return
        at = self._clock() if now is None else now
        with self._lock:
            misses = [m for m in dict.fromkeys(message_ids) if m not in self._lru]
        if not misses:
            return
        try:
            found = self._lookup_all(reader, misses, at)
        except sqlite3.Error:
            return
        with self._lock:
            if len(self._absent) > _MAX_ABSENT:
                self._absent.clear()  # marks nobody took (their calls left): read again
            for message_id in misses:
                record = found.get(message_id)
                if record is None:
                    self._absent.add(message_id)
                else:
                    self._cache(record)

    def _fresh(self, record: DedupRecord, now: float) -> bool:
        return record.state == "queued" or record.at >= now - self._window

    def _lookup_db(
        self, conn: sqlite3.Connection, message_id: str, now: float
    ) -> DedupRecord | None:
        return self._lookup_all(conn, (message_id,), now).get(message_id)

    def _lookup_all(
        self, conn: sqlite3.Connection, message_ids: Sequence[str], now: float
    ) -> dict[str, DedupRecord]:
        """The records of those of ``message_ids`` that are queued or delivered in the window."""
        # One statement (each one is a hand-off of the GIL).
        # fetchall: the statement runs to its end, so no read transaction stays open.
        rows = conn.execute(
            _lookup_sql(len(message_ids)), (*message_ids, *message_ids, now - self._window)
        ).fetchall()
        found: dict[str, DedupRecord] = {}
        for kind, message_id, bluecore_event, attempts, http_status, at in sorted(rows):
            if message_id not in found:  # a queued row (kind 0) comes first
                state: Literal["queued", "delivered"] = "delivered" if kind else "queued"
                found[message_id] = DedupRecord(
                    message_id, state, bluecore_event, attempts, http_status, at
                )
        return found

    async def remember(self, record: DedupRecord) -> None:
        """Record a delivery made without the queue, so a restart still knows the id."""
        if record.state != "delivered":
            raise ValueError("remember() records deliveries; queued ids come from enqueue()")

        def run(conn: sqlite3.Connection, tx: _Tx) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO delivered VALUES (?, ?, ?, ?, ?)",
                (
                    record.message_id,
                    record.bluecore_event,
                    record.attempts,
                    record.http_status,
                    record.at,
                ),
            )
            tx.effects.append(lambda: self._cache(record))

        await self._submit(run, write=True)

    async def purge_expired(self, now: float | None = None, batch: int = 1000) -> int:
        """Delete up to ``batch`` delivered ids older than the window, oldest first.

        Small batches keep each transaction short; call it again while it returns ``batch``.
        """
        cutoff = (self._clock() if now is None else now) - self._window

        def run(conn: sqlite3.Connection, tx: _Tx) -> int:
            return conn.execute(
                "DELETE FROM delivered WHERE message_id IN (SELECT message_id FROM delivered"
                " WHERE delivered_at < ? ORDER BY delivered_at LIMIT ?)",
                (cutoff, batch),
            ).rowcount

        purged = await self._submit(run, write=True)
        with self._lock:
            stale = [k for k, r in self._lru.items() if r.state == "delivered" and r.at < cutoff]
            for key in stale:
                del self._lru[key]
        return purged

    # -- DeadLetterStore ---------------------------------------------------------------------

    async def list_dead_letters(
        self, selection: DeadLetterFilter, *, limit: int = 100, after_id: int = 0
    ) -> list[DeadLetter]:
        """Matching dead letters with ``id > after_id``, by id, without their payloads."""
        where, args = _filter_sql(selection)

        def run(conn: sqlite3.Connection, tx: _Tx) -> list[DeadLetter]:
            # `where` holds constant SQL and ? placeholders only (see _filter_sql).
            sql = (
                f"SELECT {_DEAD_COLUMNS} FROM entries WHERE {where} AND id > ? ORDER BY id LIMIT ?"  # noqa: S608
            )
            rows = conn.execute(sql, (*args, after_id, limit))
            return [_dead(row) for row in rows]

        return await self._submit(run, write=False)

    async def get_dead_letter(self, dead_letter_id: int) -> DeadLetter | None:
        """One dead letter with its payload (the serialized event), or None."""

        def run(conn: sqlite3.Connection, tx: _Tx) -> DeadLetter | None:
            row = conn.execute(
                f"SELECT {_DEAD_COLUMNS}, payload FROM entries WHERE id = ? AND state = 2",  # noqa: S608
                (dead_letter_id,),
            ).fetchone()
            return None if row is None else _dead(row[:-1], payload=row[-1])

        return await self._submit(run, write=False)

    async def replay_dead_letters(
        self, selection: DeadLetterFilter, now: float | None = None
    ) -> ReplayResult:
        """Put matching dead letters back: pending, due now, attempts reset, last in line.

        Each goes behind whatever its key has queued (a fresh sequence number), and a dead
        letter whose message id was delivered or queued again meanwhile stays where it is.
        Replay ignores the count and byte limits: the rows are on disk already.
        """
        at = self._clock() if now is None else now
        where, args = _filter_sql(selection)

        def run(conn: sqlite3.Connection, tx: _Tx) -> ReplayResult:
            rows = conn.execute(
                f"SELECT id, message_id, ordering_key, bluecore_event, length(payload),"  # noqa: S608 - constants and ? placeholders only
                f" enqueued_at FROM entries WHERE {where} ORDER BY id",
                args,
            ).fetchall()
            replayed = skipped = 0
            for row_id, message_id, key, bluecore_event, size, enqueued_at in rows:
                if self._lookup_db(conn, message_id, at) is not None:
                    skipped += 1
                    continue
                self._seq = self._next_seq(conn, key)
                conn.execute(
                    "UPDATE entries SET state = 0, seq = ?, attempts = 0, next_due = ?,"
                    " dead_at = NULL, last_reason = '', detail = '', last_http_status = 0"
                    " WHERE id = ?",
                    (self._seq, at, row_id),
                )
                replayed += 1
                self._tx_keys.add(key)
                tx.depth += 1
                tx.nbytes += size
                record = DedupRecord(message_id, "queued", bluecore_event, 0, 0, enqueued_at)
                tx.effects.append(functools.partial(self._note_live, key, +1))
                tx.effects.append(functools.partial(self._cache, record))
                tx.effects.append(self._note_pending)
            return ReplayResult(replayed, skipped)

        return await self._submit(run, write=True)

    async def purge_dead_letters(self, selection: DeadLetterFilter) -> int:
        """Delete matching dead letters for good; returns how many."""
        where, args = _filter_sql(selection)

        def run(conn: sqlite3.Connection, tx: _Tx) -> int:
            sql = f"DELETE FROM entries WHERE {where}"  # noqa: S608 - see _filter_sql
            return conn.execute(sql, args).rowcount

        return await self._submit(run, write=True)

    # -- in-memory fronts (called with the lock held) -----------------------------------------

    def _note_pending(self, delta: int = 1) -> None:
        self._pending += delta

    def _note_live(self, key: str, delta: int) -> None:
        count = self._live.get(key, 0) + delta
        if count > 0:
            self._live[key] = count
        else:
            self._live.pop(key, None)

    def _cache_all(self, records: list[DedupRecord]) -> None:
        for record in records:
            self._cache(record)

    def _cache(self, record: DedupRecord) -> None:
        self._lru[record.message_id] = record
        self._lru.move_to_end(record.message_id)
        while len(self._lru) > self._lru_size:
            evicted, _ = self._lru.popitem(last=False)
            self._absent.discard(evicted)  # its record may be younger than its mark
            self._complete = False  # the file knows an id that memory has let go

    def _uncache(self, message_id: str) -> None:
        self._lru.pop(message_id, None)
