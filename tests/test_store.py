"""The durable queue on real SQLite files: group commit, order per customer, restarts, limits,
full and read-only disks, corrupt and foreign files, dedup expiry, dead letters and a SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from bluecore_sidecar import store
from bluecore_sidecar.store import (
    DeadLetterFilter,
    Duplicate,
    Enqueued,
    NewEntry,
    QueueFull,
    QueueLimits,
    QueueRetryPolicy,
    SqliteQueue,
)

JANE = "jane@example.com"
JOHN = "john@example.com"
T0 = 1_800_000_000.0


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def entry(message_id: str, key: str = JANE, event: str = "optin", size: int = 16) -> NewEntry:
    return NewEntry(
        message_id=message_id,
        ordering_key=key,
        bluecore_event=event,
        payload=message_id.encode().ljust(size, b"."),
        event_time=T0,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


@pytest.fixture
async def queue(db: Path, clock: Clock) -> AsyncIterator[SqliteQueue]:
    q = await SqliteQueue.open(db, clock=clock)
    yield q
    await q.close()


@pytest.fixture
def store_logs() -> Iterator[list[logging.LogRecord]]:
    """Records of the store's logger (the sidecar logger may not propagate to the root)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("bluecore_sidecar.store")
    handler = Keep(logging.DEBUG)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


async def enqueue_one(q: SqliteQueue, new: NewEntry) -> store.EnqueueOutcome:
    (outcome,) = await q.enqueue([new])
    return outcome


# --- group commit -------------------------------------------------------------------------


async def test_concurrent_enqueues_share_commits(queue):
    """200 concurrent callers are all committed, in far fewer than 200 transactions."""
    before = queue.commits
    outcomes = await asyncio.gather(
        *(queue.enqueue([entry(f"m{i}", key=f"k{i}")]) for i in range(200))
    )
    commits = queue.commits - before
    assert all(isinstance(o, Enqueued) for (o,) in outcomes)
    assert 1 <= commits <= 50, commits
    assert (await queue.stats()).depth == 200


async def test_enqueue_returns_after_commit(queue, db):
    """What enqueue acknowledged is visible to another connection at once (it is committed)."""
    await queue.enqueue([entry("m1"), entry("m2", key=JOHN)])
    with contextlib.closing(sqlite3.connect(db)) as other, other:
        ids = {row[0] for row in other.execute("SELECT message_id FROM entries")}
    assert ids == {"m1", "m2"}


# --- order per customer -------------------------------------------------------------------


async def test_unsubscribe_never_overtakes_a_failed_optin(queue, clock):
    """The optin is retried first; the later unsubscribe is claimable only once it is done."""
    await queue.enqueue([entry("optin"), entry("view", key=JOHN, event="viewed_product")])
    await queue.enqueue([entry("unsub", event="unsubscribe")])

    first = await queue.claim_due(10)
    assert sorted(c.entry.message_id for c in first) == ["optin", "view"]
    assert await queue.claim_due(10) == []  # Jane's key has a claim: nothing else of hers

    optin = next(c for c in first if c.entry.message_id == "optin")
    assert await queue.reschedule(
        optin, next_due=clock.now + 30, reason="HTTP_503", http_status=503, attempts=1
    )
    # The optin waits for its retry; the unsubscribe behind it is due but must wait too.
    assert await queue.claim_due(10) == []
    assert await queue.has_pending(JANE)

    clock.now += 31
    (again,) = await queue.claim_due(10)
    assert again.entry.message_id == "optin"
    assert again.entry.attempts == 1
    assert again.entry.last_reason == "HTTP_503"
    assert await queue.complete(again, attempts=1, http_status=202)

    (unsub,) = await queue.claim_due(10)
    assert unsub.entry.message_id == "unsub"


async def test_dead_letter_unblocks_the_customer(queue):
    """Once the optin is a dead letter, the unsubscribe behind it goes."""
    await queue.enqueue([entry("optin"), entry("unsub", event="unsubscribe")])
    (optin,) = await queue.claim_due(10)
    assert await queue.dead_letter(
        optin, reason="HTTP_400", detail="Bluecore answered 400", http_status=400, attempts=1
    )
    (unsub,) = await queue.claim_due(10)
    assert unsub.entry.message_id == "unsub"


async def test_claim_due_respects_limit_and_due_time(queue, clock):
    """Entries due later are not claimed; the limit caps one call; the earliest due go first."""
    later = dataclasses.replace(entry("later", key="k0"), next_due=clock.now + 60)
    await queue.enqueue([later] + [entry(f"m{i}", key=f"k{i + 1}") for i in range(3)])
    claims = await queue.claim_due(2)
    assert [c.entry.message_id for c in claims] == ["m0", "m1"]
    claims = await queue.claim_due(10)
    assert [c.entry.message_id for c in claims] == ["m2"]
    clock.now += 60
    assert [c.entry.message_id for c in await queue.claim_due(10)] == ["later"]


async def test_has_pending_follows_the_queue(queue):
    """has_pending is true from enqueue until delivery, per key."""
    assert not await queue.has_pending(JANE)
    await queue.enqueue([entry("m1")])
    assert await queue.has_pending(JANE)
    assert not await queue.has_pending(JOHN)
    (claim,) = await queue.claim_due(1)
    assert await queue.has_pending(JANE)  # claimed still counts: a direct send must wait
    await queue.complete(claim, attempts=1, http_status=202)
    assert not await queue.has_pending(JANE)


async def test_stop_claiming_hands_out_nothing(queue):
    await queue.enqueue([entry("m1")])
    queue.stop_claiming()
    assert await queue.claim_due(10) == []


# --- dedup ----------------------------------------------------------------------------------


async def test_duplicate_of_a_queued_id_is_not_queued_twice(queue):
    """Same id in one call, in concurrent calls and later: one entry, the others Duplicate."""
    results = await asyncio.gather(
        queue.enqueue([entry("m1"), entry("m1")]), queue.enqueue([entry("m1")])
    )
    outcomes = [o for batch in results for o in batch]
    assert sum(isinstance(o, Enqueued) for o in outcomes) == 1
    dups = [o for o in outcomes if isinstance(o, Duplicate)]
    assert len(dups) == 2
    assert all(d.record.state == "queued" and d.record.bluecore_event == "optin" for d in dups)
    assert (await queue.stats()).depth == 1


async def test_delivered_id_is_a_duplicate_until_the_window_ends(db, clock):
    q = await SqliteQueue.open(db, clock=clock, dedup_window=3600)
    try:
        await q.enqueue([entry("m1")])
        (claim,) = await q.claim_due(1)
        await q.complete(claim, attempts=2, http_status=202)
        record = await q.lookup("m1")
        assert record is not None
        assert (record.state, record.attempts, record.http_status) == ("delivered", 2, 202)
        (dup,) = await q.enqueue([entry("m1")])
        assert isinstance(dup, Duplicate)

        clock.now += 3601
        assert await q.lookup("m1") is None  # past the window, even before any purge
        assert await q.purge_expired(batch=10) == 1
        assert await q.purge_expired(batch=10) == 0
        (again,) = await q.enqueue([entry("m1")])
        assert isinstance(again, Enqueued)
    finally:
        await q.close()


async def test_purge_expired_works_in_batches(db, clock):
    q = await SqliteQueue.open(db, clock=clock, dedup_window=10)
    try:
        for i in range(5):
            await q.remember(store.DedupRecord(f"d{i}", "delivered", "purchase", 1, 202, clock.now))
        clock.now += 11
        assert [await q.purge_expired(batch=2) for _ in range(4)] == [2, 2, 1, 0]
    finally:
        await q.close()


async def test_remember_rejects_queued_records(queue):
    with pytest.raises(ValueError, match="deliveries"):
        await queue.remember(store.DedupRecord("m1", "queued", "optin", 0, 0, T0))


async def test_lookups_fall_back_to_the_database_past_the_memory_front(db, clock):
    """With room for 2 records in memory, all 5 ids are still known (the database answers)."""
    q = await SqliteQueue.open(db, clock=clock, lru_size=2)
    try:
        await q.enqueue([entry(f"m{i}", key=f"k{i}") for i in range(5)])
        records = [await q.lookup(f"m{i}") for i in range(5)]
        assert [r.state if r else None for r in records] == ["queued"] * 5
        assert await q.lookup("never-seen") is None
    finally:
        await q.close()


async def test_memory_that_knows_every_id_answers_misses_without_reading(db, clock):
    """A file whose ids all fit the memory front is loaded at open; from then on a lookup of
    an unknown id reads nothing, and the known ones (queued, delivered) answer as before."""
    q = await SqliteQueue.open(db, clock=clock)
    await q.enqueue([entry("queued"), entry("done", key=JOHN)])
    (claim,) = [c for c in await q.claim_due(10) if c.entry.message_id == "done"]
    assert await q.complete(claim, attempts=1, http_status=202)
    await q.remember(store.DedupRecord("direct", "delivered", "search", 1, 202, clock.now - 5))
    await q.close()

    q = await SqliteQueue.open(db, clock=clock)
    try:
        statements: list[str] = []
        assert q._reader is not None
        q._reader.set_trace_callback(statements.append)
        found = {m: await q.lookup(m) for m in ("queued", "done", "direct", "never-seen")}
        assert {m: r.state if r else None for m, r in found.items()} == {
            "queued": "queued",
            "done": "delivered",
            "direct": "delivered",
            "never-seen": None,
        }
        assert found["direct"] is not None
        assert found["direct"].bluecore_event == "search"
        q.prefetch(["never-seen", "other"])
        assert statements == []  # neither the lookups nor the prefetch read the file
        # A delivery older than the window is forgotten, in memory as in the file.
        clock.now += 24 * 3600.0 + 1
        assert await q.lookup("direct") is None
    finally:
        await q.close()


async def test_memory_that_lets_an_id_go_reads_the_file_again(db, clock):
    """Past the memory front's size (at open, or by an eviction later), misses read the
    file, and no id the file knows is taken for new."""
    q = await SqliteQueue.open(db, clock=clock, lru_size=3)
    try:
        await q.enqueue([entry(f"m{i}", key=f"k{i}") for i in range(2)])
        assert q._complete  # 2 ids, room for 3
        await q.enqueue([entry(f"m{i}", key=f"k{i}") for i in range(2, 5)])
        assert not q._complete  # m0 and m1 were let go
        assert [(await q.lookup(f"m{i}")) is not None for i in range(5)] == [True] * 5
    finally:
        await q.close()
    q = await SqliteQueue.open(db, clock=clock, lru_size=3)
    try:
        assert not q._complete  # 5 ids do not fit in 3
        assert [(await q.lookup(f"m{i}")) is not None for i in range(5)] == [True] * 5
        assert await q.lookup("never-seen") is None
    finally:
        await q.close()


async def test_lingering_enqueues_wait_while_other_commits_pass_them(queue, clock, monkeypatch):
    """First tries' enqueues (linger=True) stay in line while their sends are out: a commit
    of delivered ids passes them by; hurry() commits one at once and leaves the other;
    withdraw() takes one back unwritten; one nobody asks about commits when its linger ends.

    The linger is stretched while the first two wait, so a VM pause cannot end it early,
    and shortened again for the one left alone."""
    monkeypatch.setattr(store, "_ENQUEUE_LINGER", 30.0)
    before = queue.commits
    first = queue.enqueue_soon([entry("a", key="ka")], claim=True, synced=False, linger=True)
    await asyncio.sleep(0)
    second = queue.enqueue_soon([entry("b", key="kb")], claim=True, synced=False, linger=True)
    queue.remember_soon(store.DedupRecord("d1", "delivered", "search", 1, 202, clock.now))
    await asyncio.sleep(store._COMPLETION_WAIT + 0.2)  # the delivered id's commit has gone

    async def remembered() -> object:
        return await queue.lookup("d1")

    assert await asyncio.wait_for(remembered(), 5.0) is not None
    assert queue.commits - before == 1
    assert not first.done()  # both still wait for their sends
    assert not second.done()
    queue.hurry(first)
    assert first.done()  # committed on the loop, in this call
    assert not second.done()  # its send is still out: it stays in line
    assert queue.commits - before == 2
    [enqueued] = first.result()
    assert isinstance(enqueued, Enqueued)
    assert enqueued.claim is not None
    assert queue.withdraw(second)  # its send delivered: nothing of it is written
    assert second.cancelled()
    assert await queue.lookup("b") is None
    monkeypatch.setattr(store, "_ENQUEUE_LINGER", 0.05)
    alone = queue.enqueue_soon([entry("c", key="kc")], claim=True, synced=False, linger=True)
    outcome = await asyncio.wait_for(alone, 10.0)
    assert isinstance(outcome[0], Enqueued)
    assert queue.commits - before == 3


async def test_a_lingering_enqueue_goes_with_an_operation_that_may_depend_on_it(queue, monkeypatch):
    """Anything but delivered ids and completions behind a lingering enqueue (here another
    customer's plain enqueue) takes it along in the same transaction: nothing overtakes it."""
    monkeypatch.setattr(store, "_ENQUEUE_LINGER", 30.0)
    before = queue.commits
    lingering = queue.enqueue_soon([entry("a", key="ka")], claim=True, synced=False, linger=True)
    await asyncio.sleep(0)
    [plain] = await queue.enqueue([entry("z", key="kz")])
    assert isinstance(plain, Enqueued)
    assert lingering.done()
    assert queue.commits - before == 1
    [enqueued] = lingering.result()
    assert isinstance(enqueued, Enqueued)
    assert enqueued.id < plain.id


async def test_a_lingering_enqueue_keeps_its_place_before_later_writes(queue):
    """An entry submitted after a lingering one of the same customer is numbered after it,
    even though the later one is not lingering and goes at once."""
    first = queue.enqueue_soon([entry("optin-1")], claim=True, synced=False, linger=True)
    later = queue.enqueue_soon([entry("unsub-2", event="unsubscribe")])
    [behind] = await later
    assert first.done()  # it rode along, ahead of the later one
    [enqueued] = first.result()
    assert isinstance(enqueued, Enqueued)  # the key's head
    assert enqueued.claim is not None
    assert isinstance(behind, Enqueued)
    assert behind.claim is None
    assert await queue.claim_due(10) == []  # the unsubscribe waits behind the optin
    assert await queue.complete(enqueued.claim, attempts=1, http_status=202)
    (head,) = await queue.claim_due(10)
    assert head.entry.message_id == "unsub-2"


async def test_reprs_carry_no_email_and_no_event(queue):
    """Entries and claims may end up in a log line: their repr hides the key and the payload."""
    new = entry("m1")
    await queue.enqueue([new])
    (claim,) = await queue.claim_due(1)
    for shown in (repr(new), repr(claim)):
        assert JANE not in shown
        assert "m1...." not in shown  # the payload
        assert "m1" in shown


# --- restart ------------------------------------------------------------------------------


async def test_restart_keeps_entries_and_dedup(db, clock):
    """Closed and reopened: queued entries, delivered ids and direct deliveries are all there."""
    q = await SqliteQueue.open(db, clock=clock)
    await q.enqueue([entry("m1"), entry("m2", key=JOHN), entry("m3", key="k3")])
    (claim, *_) = await q.claim_due(1)
    await q.complete(claim, attempts=1, http_status=202)
    await q.remember(store.DedupRecord("direct-1", "delivered", "search", 1, 202, clock.now))
    await q.close()

    q = await SqliteQueue.open(db, clock=clock)
    try:
        assert (await q.stats()).depth == 2
        assert await q.has_pending(JOHN)
        delivered = await q.lookup(claim.entry.message_id)
        assert delivered is not None
        assert delivered.state == "delivered"
        direct = await q.lookup("direct-1")
        assert direct is not None
        assert direct.bluecore_event == "search"
        queued = await q.lookup("m2")
        assert queued is not None
        assert queued.state == "queued"
        outcomes = await q.enqueue([entry("m2", key=JOHN), entry(claim.entry.message_id)])
        assert all(isinstance(o, Duplicate) for o in outcomes)
        claimed = await q.claim_due(10)
        assert {c.entry.message_id for c in claimed} == {"m1", "m2", "m3"} - {
            claim.entry.message_id
        }
        assert all(c.entry.payload.startswith(c.entry.message_id.encode()) for c in claimed)
        assert all(c.entry.traceparent.startswith("00-0af7") for c in claimed)
    finally:
        await q.close()


async def test_claims_left_by_a_stopped_process_are_released_at_open(db, clock, store_logs):
    """A claim not finished before the process stopped is pending again; the old claim is stale."""
    q = await SqliteQueue.open(db, clock=clock)
    await q.enqueue([entry("m1")])
    (old,) = await q.claim_due(1)
    await q.close()  # without releasing: as if the process had died mid-delivery

    q = await SqliteQueue.open(db, clock=clock)
    try:
        assert any("made pending again" in r.getMessage() for r in store_logs)
        (new,) = await q.claim_due(1)
        assert new.entry.message_id == "m1"
        assert new.claim_id != old.claim_id
        assert not await q.complete(old, attempts=1, http_status=202)  # a stale claim
        assert await q.complete(new, attempts=1, http_status=202)
    finally:
        await q.close()


async def test_release_all_claims_at_shutdown(queue):
    await queue.enqueue([entry("m1"), entry("m2", key=JOHN)])
    claims = await queue.claim_due(10)
    assert await queue.release_all_claims() == 2
    assert not await queue.reschedule(claims[0], next_due=T0, reason="X", http_status=0, attempts=1)
    assert len(await queue.claim_due(10)) == 2


async def test_completions_of_one_turn_commit_together_and_a_stale_one_fails_alone(queue):
    """Completions that arrive together are one operation; one with a stale claim among them
    answers False and leaves its entry queued, while the others are delivered."""
    await queue.enqueue([entry("m1"), entry("m2", key=JOHN), entry("m3", key="k3")])
    stale = {c.entry.message_id: c for c in await queue.claim_due(10)}
    await queue.release_all_claims()
    current = {c.entry.message_id: c for c in await queue.claim_due(10)}
    before = await queue.stats()
    kept = await asyncio.gather(
        queue.complete(current["m1"], attempts=1, http_status=202),
        queue.complete(stale["m2"], attempts=1, http_status=202),
        queue.complete(current["m3"], attempts=2, http_status=202),
    )
    after = await queue.stats()
    assert kept == [True, False, True]
    assert after.operations - before.operations == 1
    assert after.depth == 1  # m2 is still queued, under its current claim
    m3 = await queue.lookup("m3")
    assert m3 is not None
    assert (m3.state, m3.attempts) == ("delivered", 2)
    m2 = await queue.lookup("m2")
    assert m2 is not None
    assert m2.state == "queued"
    assert await queue.complete(current["m2"], attempts=1, http_status=202)


async def test_prefetch_reads_a_batch_of_ids_once_and_the_lookups_stay_right(queue):
    """prefetch() reads a batch's ids in one statement; each lookup then answers from memory,
    and an id enqueued after the prefetch is not taken for absent."""
    await queue.enqueue([entry("queued"), entry("done", key=JOHN)])
    (claim,) = [c for c in await queue.claim_due(10) if c.entry.message_id == "done"]
    assert await queue.complete(claim, attempts=1, http_status=202)
    statements: list[str] = []
    assert queue._reader is not None
    queue._reader.set_trace_callback(statements.append)
    ids = ["queued", "done", "new", "later"]
    # As after a restart on a file with more ids than the memory front holds: none of these
    # is in memory, and memory no longer knows every id of the file.
    queue._lru.clear()
    queue._complete = False
    queue.prefetch(ids)
    assert len(statements) == 1
    assert isinstance(await enqueue_one(queue, entry("later", key="k9")), Enqueued)
    found = {message_id: await queue.lookup(message_id) for message_id in ids}
    assert len(statements) == 1  # the four lookups read nothing
    assert {k: v.state if v else None for k, v in found.items()} == {
        "queued": "queued",
        "done": "delivered",
        "new": None,
        "later": "queued",
    }
    assert await queue.lookup("new") is None  # the mark is gone: the file is read again
    assert len(statements) == 2


async def test_a_second_opener_is_refused_while_the_first_holds_the_queue(queue, db, clock):
    """Two processes must never share a queue: the second would release the first's claims."""
    await queue.enqueue([entry("m1")])
    (claim,) = await queue.claim_due(1)
    with pytest.raises(store.StoreError, match="in use"):
        await SqliteQueue.open(db, clock=clock)
    assert await queue.complete(claim, attempts=1, http_status=202)  # the claim stayed valid


async def test_the_queue_can_be_reopened_once_closed(db, clock):
    q = await SqliteQueue.open(db, clock=clock)
    await q.close()
    q = await SqliteQueue.open(db, clock=clock)
    await q.close()


async def test_closed_queue_refuses_work(db, clock):
    q = await SqliteQueue.open(db, clock=clock)
    await q.close()
    await q.close()  # idempotent
    with pytest.raises(store.StoreClosed):
        await q.enqueue([entry("m1")])


# --- limits and failing disks ---------------------------------------------------------------


async def test_count_limit_answers_queue_full(db, clock):
    q = await SqliteQueue.open(db, clock=clock, limits=QueueLimits(max_entries=3))
    try:
        outcomes = await q.enqueue([entry(f"m{i}", key=f"k{i}") for i in range(5)])
        assert [type(o) for o in outcomes] == [Enqueued] * 3 + [QueueFull] * 2
        assert all(o.cause == "COUNT" and o.reason == "QUEUE_FULL" for o in outcomes[3:])
        (claim, *_) = await q.claim_due(1)
        await q.complete(claim, attempts=1, http_status=202)  # room for one more
        assert isinstance(await enqueue_one(q, entry("m9", key="k9")), Enqueued)
        assert isinstance(await enqueue_one(q, entry("m10", key="k10")), QueueFull)
        # A full queue still tells a duplicate, queued or delivered, from a new event.
        queued = await enqueue_one(q, entry("m9", key="k9"))
        delivered = await enqueue_one(q, entry(claim.entry.message_id))
        assert isinstance(queued, Duplicate)
        assert queued.record.state == "queued"
        assert isinstance(delivered, Duplicate)
        assert delivered.record.state == "delivered"
    finally:
        await q.close()


async def test_byte_limit_answers_queue_full(db, clock):
    q = await SqliteQueue.open(db, clock=clock, limits=QueueLimits(max_bytes=1000))
    try:
        big = await q.enqueue([entry("a", size=600), entry("b", key=JOHN, size=600)])
        assert isinstance(big[0], Enqueued)
        assert isinstance(big[1], QueueFull)
        assert big[1].cause == "BYTES"
        assert isinstance(await enqueue_one(q, entry("c", key="k3", size=400)), Enqueued)
        assert (await q.stats()).bytes == 1000
    finally:
        await q.close()


async def test_full_database_answers_queue_full_and_keeps_working(db, clock, store_logs):
    """At the file cap SQLite reports SQLITE_FULL: QueueFull, no crash, acknowledged rows kept."""
    q = await SqliteQueue.open(db, clock=clock, max_file_bytes=256 * 1024)
    acknowledged: list[str] = []
    full: list[QueueFull] = []
    try:
        for i in range(200):
            outcome = await enqueue_one(q, entry(f"m{i}", key=f"k{i}", size=8000))
            if isinstance(outcome, QueueFull):
                full.append(outcome)
                break
            acknowledged.append(f"m{i}")
        assert full, "the file cap was never reached"
        assert full[0].cause == "DISK_FULL"
        assert acknowledged
        # Still serving: reads work, and once a delivery frees pages new entries fit again.
        stats = await q.stats()
        assert stats.depth == len(acknowledged)
        (claim,) = await q.claim_due(1)
        assert await q.complete(claim, attempts=1, http_status=202)
        assert isinstance(await enqueue_one(q, entry("after", key="after", size=2000)), Enqueued)
        assert any(r.levelno == logging.ERROR and "DISK_FULL" in r.getMessage() for r in store_logs)
        assert not any(JANE in r.getMessage() or "@" in r.getMessage() for r in store_logs)
    finally:
        await q.close()
    q = await SqliteQueue.open(db, clock=clock)
    try:
        assert (await q.stats()).depth == len(acknowledged)  # one delivered, one added
    finally:
        await q.close()


async def test_in_a_group_that_hits_the_cap_exactly_the_acknowledged_are_kept(db, clock):
    """Big and small entries in one group at the file cap: exactly the Enqueued are on disk."""
    q = await SqliteQueue.open(db, clock=clock, max_file_bytes=192 * 1024)
    try:
        sizes = [30_000 if i % 3 == 2 else 300 for i in range(60)]
        results = await asyncio.gather(
            *(q.enqueue([entry(f"m{i}", key=f"k{i}", size=n)]) for i, n in enumerate(sizes))
        )
    finally:
        await q.close()
    kept = {f"m{i}" for i, (o,) in enumerate(results) if isinstance(o, Enqueued)}
    refused = {f"m{i}" for i, (o,) in enumerate(results) if isinstance(o, QueueFull)}
    assert kept
    assert refused
    assert kept | refused == {f"m{i}" for i in range(60)}
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        stored = {row[0] for row in conn.execute("SELECT message_id FROM entries")}
    assert stored == kept
    # SQLite drops the whole transaction on SQLITE_FULL; the entries before the one that did
    # not fit did nothing wrong and are redone, not refused with it.
    first = min(int(mid[1:]) for mid in refused)
    assert sizes[first] == 30_000
    assert {f"m{i}" for i in range(first)} <= kept
    assert any(sizes[i] == 300 and f"m{i}" in kept for i in range(first + 1, 60))


READ_ONLY_CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from bluecore_sidecar.store import NewEntry, SqliteQueue

    async def main():
        q = await SqliteQueue.open(sys.argv[1])
        try:
            (outcome,) = await q.enqueue([NewEntry("m2", "k", "optin", b"x", 0.0)])
            record = await q.lookup("m1")
            print(json.dumps({"outcome": type(outcome).__name__,
                              "cause": getattr(outcome, "cause", ""),
                              "reads": record is not None and record.state}))
        finally:
            await q.close()

    asyncio.run(main())
    """
)


async def test_read_only_file_answers_queue_full(tmp_path, clock):
    """A queue file the process cannot write: open works, reads work, enqueue is QueueFull."""
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "queue.db"
    q = await SqliteQueue.open(db, clock=clock)
    await q.enqueue([entry("m1")])
    await q.close()
    db.chmod(0o444)  # the folder stays writable: SQLite may make its -shm, not change the file
    # Root ignores file modes; without the capabilities that let it, the modes apply again.
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv (util-linux) is missing")
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    done = await asyncio.to_thread(
        subprocess.run,
        [*prefix, sys.executable, "-c", READ_ONLY_CHILD, str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer == {"outcome": "QueueFull", "cause": "READ_ONLY", "reads": "queued"}


# --- corrupt and foreign files --------------------------------------------------------------


def aside_files(db: Path, kind: str) -> list[Path]:
    """The database files moved aside (not their -wal / -shm companions)."""
    found = db.parent.glob(f"{db.name}.{kind}-*")
    return sorted(p for p in found if not p.name.endswith(("-wal", "-shm")))


async def test_corrupt_file_is_moved_aside_and_a_fresh_queue_starts(db, clock, store_logs):
    garbage = b"this is not a database" * 500
    db.write_bytes(garbage)
    db.with_name(db.name + "-wal").write_bytes(b"junk wal")
    q = await SqliteQueue.open(db, clock=clock)
    try:
        (aside,) = aside_files(db, "corrupt")
        assert aside.read_bytes() == garbage  # kept, not deleted
        assert aside.with_name(aside.name + "-wal").read_bytes() == b"junk wal"
        errors = [r.getMessage() for r in store_logs if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert "corrupt" in errors[0]
        assert aside.name in errors[0]
        assert isinstance(await enqueue_one(q, entry("m1")), Enqueued)
    finally:
        await q.close()
    q = await SqliteQueue.open(db, clock=clock)  # the fresh queue is ours: nothing moved again
    try:
        assert len(aside_files(db, "corrupt")) == 1
        assert (await q.stats()).depth == 1
    finally:
        await q.close()


async def test_damaged_page_fails_the_check_and_is_moved_aside(db, clock, store_logs):
    """A file whose header is fine but whose pages are not fails quick_check."""
    q = await SqliteQueue.open(db, clock=clock)
    await q.enqueue([entry(f"m{i}", key=f"k{i}", size=2000) for i in range(50)])
    await q.close()
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    page = 4096
    rng = random.Random(7)
    for offset in range(2 * page, len(data), page):  # scramble every page after the schema
        data[offset : offset + 64] = rng.randbytes(64)
    db.write_bytes(bytes(data))
    q = await SqliteQueue.open(db, clock=clock)
    try:
        assert len(aside_files(db, "corrupt")) == 1
        assert (await q.stats()).depth == 0
        assert any(r.levelno == logging.ERROR and "corrupt" in r.getMessage() for r in store_logs)
    finally:
        await q.close()


async def test_foreign_sqlite_file_is_moved_aside(db, clock, store_logs):
    with contextlib.closing(sqlite3.connect(db)) as other, other:
        other.execute("CREATE TABLE users (name TEXT)")
        other.execute("INSERT INTO users VALUES ('someone else')")
    q = await SqliteQueue.open(db, clock=clock)
    try:
        (aside,) = aside_files(db, "foreign")
        with contextlib.closing(sqlite3.connect(aside)) as check, check:
            assert check.execute("SELECT name FROM users").fetchall() == [("someone else",)]
        assert any(
            r.levelno == logging.ERROR and "not this sidecar's queue" in r.getMessage()
            for r in store_logs
        )
        assert isinstance(await enqueue_one(q, entry("m1")), Enqueued)
    finally:
        await q.close()


async def test_newer_schema_is_moved_aside_not_misread(db, clock):
    q = await SqliteQueue.open(db, clock=clock)
    await q.close()
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(f"PRAGMA user_version={store.SCHEMA_VERSION + 1}")
    q = await SqliteQueue.open(db, clock=clock)
    try:
        assert len(aside_files(db, "foreign")) == 1
    finally:
        await q.close()


async def test_schema_is_versioned(queue, db):
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert (version, app_id, mode) == (store.SCHEMA_VERSION, store.APPLICATION_ID, "wal")


# --- dead letters ---------------------------------------------------------------------------


async def make_dead_letters(q: SqliteQueue, clock: Clock) -> None:
    """Three dead letters: AUTH (purchase) at T0, EXPIRED (optin) at T0+100, HTTP_400 at +200."""
    specs = [
        ("p1", "k1", "purchase", store.AUTH, 403),
        ("o1", "k2", "optin", store.EXPIRED, 503),
        ("v1", "k3", "viewed_product", "HTTP_400", 400),
    ]
    await q.enqueue([entry(mid, key=key, event=event) for mid, key, event, _, _ in specs])
    claims = {c.entry.message_id: c for c in await q.claim_due(10)}
    for mid, _, _, reason, status in specs:
        await q.dead_letter(
            claims[mid], reason=reason, detail=f"gave up: {reason}", http_status=status, attempts=3
        )
        clock.now += 100


async def test_dead_letters_list_filter_and_get(queue, clock):
    await make_dead_letters(queue, clock)
    everything = await queue.list_dead_letters(DeadLetterFilter())
    assert [d.message_id for d in everything] == ["p1", "o1", "v1"]
    assert all(d.payload is None for d in everything)
    auth = await queue.list_dead_letters(DeadLetterFilter(reasons=("AUTH",)))
    assert [(d.message_id, d.http_status, d.attempts) for d in auth] == [("p1", 403, 3)]
    optin = await queue.list_dead_letters(DeadLetterFilter(bluecore_events=("optin",)))
    assert [d.reason for d in optin] == ["EXPIRED"]
    old = await queue.list_dead_letters(DeadLetterFilter(dead_before=T0 + 150))
    assert [d.message_id for d in old] == ["p1", "o1"]
    recent = await queue.list_dead_letters(DeadLetterFilter(dead_after=T0 + 150))
    assert [d.message_id for d in recent] == ["v1"]
    page = await queue.list_dead_letters(DeadLetterFilter(), limit=1, after_id=everything[0].id)
    assert [d.message_id for d in page] == ["o1"]

    shown = await queue.get_dead_letter(everything[0].id)
    assert shown is not None
    assert shown.payload == entry("p1").payload
    assert shown.traceparent.startswith("00-0af7")
    assert await queue.get_dead_letter(9999) is None
    stats = await queue.stats()
    assert stats.dead_letters == {"AUTH": 1, "EXPIRED": 1, "HTTP_400": 1}
    assert stats.depth == 0


async def test_replay_puts_dead_letters_back_due_now_with_attempts_reset(queue, clock):
    await make_dead_letters(queue, clock)
    result = await queue.replay_dead_letters(DeadLetterFilter(reasons=("AUTH",)))
    assert (result.replayed, result.skipped_duplicates) == (1, 0)
    (claim,) = await queue.claim_due(10)
    assert claim.entry.message_id == "p1"
    assert claim.entry.attempts == 0
    assert claim.entry.payload == entry("p1").payload
    assert await queue.list_dead_letters(DeadLetterFilter(reasons=("AUTH",))) == []


async def test_replay_goes_behind_what_the_customer_has_queued(queue, clock):
    await make_dead_letters(queue, clock)
    await queue.enqueue([entry("later", key="k1", event="unsubscribe")])
    await queue.replay_dead_letters(DeadLetterFilter(reasons=("AUTH",)))
    (first,) = await queue.claim_due(10)
    assert first.entry.message_id == "later"


async def test_replay_skips_ids_delivered_or_queued_again(queue, clock):
    await make_dead_letters(queue, clock)
    # The caller resent o1 (dead letters are forgotten by dedup) and it is queued again.
    assert isinstance(await enqueue_one(queue, entry("o1", key="k2")), Enqueued)
    result = await queue.replay_dead_letters(DeadLetterFilter())
    assert (result.replayed, result.skipped_duplicates) == (2, 1)
    left = await queue.list_dead_letters(DeadLetterFilter())
    assert [d.message_id for d in left] == ["o1"]
    assert (await queue.stats()).depth == 3


async def test_purge_deletes_only_the_selected_dead_letters(queue, clock):
    await make_dead_letters(queue, clock)
    await queue.enqueue([entry("live", key="k9")])
    assert await queue.purge_dead_letters(DeadLetterFilter(reasons=("EXPIRED", "HTTP_400"))) == 2
    assert await queue.purge_dead_letters(DeadLetterFilter(reasons=("EXPIRED",))) == 0
    everything = await queue.list_dead_letters(DeadLetterFilter())
    assert [d.message_id for d in everything] == ["p1"]
    assert await queue.purge_dead_letters(DeadLetterFilter(ids=(everything[0].id,))) == 1
    assert (await queue.stats()).depth == 1  # purge never touches live entries


async def test_stats_report_depth_bytes_claims_and_age(queue, clock):
    await queue.enqueue([entry("m1", size=100), entry("m2", key=JOHN, size=50)])
    await queue.claim_due(1)
    stats = await queue.stats(now=T0 + 42)
    assert (stats.depth, stats.bytes, stats.claimed) == (2, 150, 1)
    assert stats.oldest_pending_age == 42
    assert stats.commits == queue.commits


# --- retry schedule (pure) ------------------------------------------------------------------


def test_retry_delay_is_capped_exponential_with_full_jitter():
    policy = QueueRetryPolicy(base=1.0, cap=300.0)
    assert [store.retry_delay(policy, n, None, lambda: 1.0) for n in (1, 2, 3, 9, 10, 500)] == [
        1.0,
        2.0,
        4.0,
        256.0,
        300.0,
        300.0,
    ]
    assert store.retry_delay(policy, 5, None, lambda: 0.5) == 8.0
    assert store.retry_delay(policy, 5, None, lambda: 0.0) == 0.0


def test_retry_after_is_a_floor():
    policy = QueueRetryPolicy(base=1.0, cap=300.0)
    assert store.retry_delay(policy, 1, 120.0, lambda: 1.0) == 120.0
    assert store.retry_delay(policy, 10, 5.0, lambda: 1.0) == 300.0


def test_next_due_gives_up_past_the_maximum_age():
    policy = QueueRetryPolicy(base=1.0, cap=300.0, max_age=3600.0)
    due = store.next_due(
        policy, attempt=1, now=T0 + 100, event_time=T0, retry_after=None, rand=lambda: 1.0
    )
    assert due == T0 + 101
    expired = store.next_due(
        policy, attempt=9, now=T0 + 3500, event_time=T0, retry_after=None, rand=lambda: 1.0
    )
    assert expired is None
    forever = QueueRetryPolicy(max_age=0)
    kept = store.next_due(
        forever, attempt=9, now=T0 + 10**6, event_time=T0, retry_after=None, rand=lambda: 1.0
    )
    assert kept == T0 + 10**6 + 256


# --- crash ----------------------------------------------------------------------------------

CRASH_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from bluecore_sidecar.store import Enqueued, NewEntry, SqliteQueue

    async def writer(q, worker):
        for i in range(100_000):
            mid = f"w{worker}-{i}"
            (outcome,) = await q.enqueue([NewEntry(mid, f"key-{worker}", "purchase",
                                                   b"x" * 200, 0.0)])
            if isinstance(outcome, Enqueued):
                print(mid, flush=True)

    async def main():
        q = await SqliteQueue.open(sys.argv[1])
        await asyncio.gather(*(writer(q, w) for w in range(8)))

    asyncio.run(main())
    """
)


@pytest.mark.slow
async def test_sigkill_loses_no_acknowledged_entry(db, clock):
    """A child enqueues from 8 tasks and prints each acknowledged id; SIGKILL; all are there."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASH_CHILD,
        str(db),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    acknowledged: list[str] = []
    try:
        assert child.stdout is not None
        while len(acknowledged) < 500:
            line = await child.stdout.readline()
            if not line:
                break
            acknowledged.append(line.decode().strip())
        child.send_signal(signal.SIGKILL)  # right after an acknowledgement, mid-stream
    finally:
        if child.returncode is None:
            child.kill()
        _, err = await child.communicate()
    assert len(acknowledged) == 500, err.decode()
    assert child.returncode == -signal.SIGKILL

    q = await SqliteQueue.open(db, clock=clock)
    try:
        missing = [mid for mid in acknowledged if await q.lookup(mid) is None]
        assert missing == []
        assert (await q.stats()).depth >= 500
    finally:
        await q.close()


# --- claiming in the enqueue's own transaction ---------------------------------------------


async def test_enqueue_with_claim_commits_a_customers_only_entry_already_claimed(queue, db):
    """The caller holds the claim at once: no worker can claim the entry, and its completion
    leaves the queue empty with the id remembered as delivered."""
    (first,) = await queue.enqueue([entry("optin")], claim=True)
    assert isinstance(first, Enqueued)
    assert first.claim is not None
    assert first.claim.entry.message_id == "optin"
    assert first.claim.entry.id == first.id
    assert not queue.may_have_due()
    assert await queue.claim_due(10) == []
    with contextlib.closing(sqlite3.connect(db)) as other:
        assert other.execute("SELECT state FROM entries").fetchall() == [(store.CLAIMED,)]
    assert await queue.complete(first.claim, attempts=1, http_status=202)
    assert (await queue.stats()).depth == 0
    record = await queue.lookup("optin")
    assert record is not None
    assert record.state == "delivered"


async def test_enqueue_with_claim_leaves_an_entry_behind_its_customers_others_pending(queue):
    """Order: a second entry of the customer, in the same batch or later, is not claimed while
    the first is live, and becomes claimable once the first is delivered."""
    first, second = await queue.enqueue([entry("optin"), entry("unsub")], claim=True)
    (third,) = await queue.enqueue([entry("view")], claim=True)
    (other,) = await queue.enqueue([entry("john", key=JOHN)], claim=True)
    assert isinstance(first, Enqueued)
    assert first.claim is not None
    assert isinstance(second, Enqueued)
    assert second.claim is None
    assert isinstance(third, Enqueued)
    assert third.claim is None
    assert isinstance(other, Enqueued)
    assert other.claim is not None
    assert queue.may_have_due()
    assert await queue.claim_due(10) == []  # Jane's head is claimed; John's too
    assert await queue.complete(first.claim, attempts=1, http_status=202)
    assert [c.entry.message_id for c in await queue.claim_due(10)] == ["unsub"]


async def test_enqueue_with_claim_after_stop_claiming_leaves_the_entry_pending(queue):
    queue.stop_claiming()
    (outcome,) = await queue.enqueue([entry("late")], claim=True)
    assert isinstance(outcome, Enqueued)
    assert outcome.claim is None
    assert queue.may_have_due()


async def test_may_have_due_follows_pending_entries_through_claims_and_reschedules(queue, clock):
    assert not queue.may_have_due()
    await queue.enqueue([entry("m1")])
    assert queue.may_have_due()
    (claim,) = await queue.claim_due(10)
    assert not queue.may_have_due()
    assert await queue.reschedule(
        claim, next_due=clock.now + 60, reason="HTTP_503", http_status=503, attempts=1
    )
    assert queue.may_have_due()
    clock.now += 61
    (again,) = await queue.claim_due(10)
    assert not queue.may_have_due()
    assert await queue.release_all_claims() == 1
    assert queue.may_have_due()
    assert again.entry.message_id == "m1"


async def test_a_restart_counts_pending_entries_and_released_claims_as_due(db, clock):
    first = await SqliteQueue.open(db, clock=clock)
    await first.enqueue([entry("m1"), entry("m2", key=JOHN)], claim=True)
    await first.close()  # both stay claimed by a process that is gone
    second = await SqliteQueue.open(db, clock=clock)
    try:
        assert second.may_have_due()
        assert sorted(c.entry.message_id for c in await second.claim_due(10)) == ["m1", "m2"]
    finally:
        await second.close()


async def test_stats_count_the_write_operations_committed_beside_the_commits(queue):
    before = await queue.stats()
    await asyncio.gather(*(queue.enqueue([entry(f"s{i}", key=f"k{i}")]) for i in range(20)))
    after = await queue.stats()
    assert after.operations - before.operations == 20
    assert 1 <= after.commits - before.commits <= 20


async def test_lookups_read_committed_state_and_a_restart_still_knows_both_kinds(db, clock):
    """Lookups go through the second connection: they see what another operation committed
    a moment ago, and after a restart (empty memory) they still find queued and delivered
    ids in the file."""
    first = await SqliteQueue.open(db, clock=clock)
    (outcome,) = await first.enqueue([entry("done")], claim=True)
    await first.enqueue([entry("waiting", key=JOHN)])
    assert isinstance(outcome, Enqueued)
    assert outcome.claim is not None
    await first.complete(outcome.claim, attempts=1, http_status=202)
    await first.close()
    second = await SqliteQueue.open(db, clock=clock)
    try:
        done, waiting, unknown = (
            await second.lookup("done"),
            await second.lookup("waiting"),
            await second.lookup("nobody"),
        )
    finally:
        await second.close()
    assert done is not None
    assert done.state == "delivered"
    assert done.http_status == 202
    assert waiting is not None
    assert waiting.state == "queued"
    assert unknown is None


async def test_completions_and_unsynced_enqueues_skip_the_fsync_until_sync_asks_for_it(queue):
    """A commit that holds only completions, or an enqueue submitted ``synced=False``, is
    not counted as synced; ``sync()`` then commits one synced transaction (whose fsync
    covers the earlier frames), and does nothing when the last commit was synced."""
    before = await queue.stats()
    (outcome,) = await queue.enqueue_soon([entry("u1")], claim=True, synced=False)
    assert isinstance(outcome, Enqueued)
    assert outcome.claim is not None
    assert await queue.complete(outcome.claim, attempts=1, http_status=202)
    unsynced = await queue.stats()
    assert unsynced.commits - before.commits == 2
    assert unsynced.synced_commits == before.synced_commits
    await queue.sync()
    synced = await queue.stats()
    assert synced.commits - unsynced.commits == 1
    assert synced.synced_commits - unsynced.synced_commits == 1
    await queue.sync()  # the last commit was synced: nothing to do
    await enqueue_one(queue, entry("u2"))  # a plain enqueue is synced
    after = await queue.stats()
    assert after.commits - synced.commits == 1
    assert after.synced_commits - synced.synced_commits == 1
    record = await queue.lookup("u1")
    assert record is not None
    assert record.state == "delivered"


async def test_unsynced_commits_run_on_the_loop_and_the_thread_checkpoints_the_wal(db, clock):
    """Completions commit without an fsync (here on the event loop); SQLite's automatic
    checkpoint is off for a file this process has alone, so the writer thread checkpoints
    every few hundred commits: the WAL stays bounded and the pages reach the database file."""
    q = await SqliteQueue.open(db, clock=clock)
    wal = db.with_name(db.name + "-wal")
    try:
        start = db.stat().st_size
        sizes = []
        for i in range(3 * store._CHECKPOINT_EVERY):
            (outcome,) = await q.enqueue_soon([entry(f"c{i}", key=f"k{i}")], claim=True)
            assert isinstance(outcome, Enqueued)
            assert outcome.claim is not None
            assert await q.complete(outcome.claim, attempts=1, http_status=202)
            sizes.append(wal.stat().st_size)
        stats = await q.stats()
    finally:
        await q.close()
    assert stats.depth == 0
    assert stats.commits - stats.synced_commits >= 3 * store._CHECKPOINT_EVERY  # completions
    assert db.stat().st_size > start  # checkpointed into the file while it ran
    # Reused from its start after a checkpoint: without them it would pass 20 MB here.
    assert max(sizes) < 8 * 1024 * 1024


async def test_completions_wait_for_each_other_and_let_a_customer_go_when_asked(queue):
    """Delivered entries' completions (complete_soon) pass enqueues by and commit together
    as one operation; a customer held only by one is free at once when asked about
    (pending_now commits it there), and a read such as stats() sees them done."""
    answers: list[tuple[str, BaseException | None, bool]] = []

    def then(claim, error, kept):
        answers.append((claim.entry.message_id, error, kept))

    claims = []
    for name, key in (("a", JANE), ("b", JOHN)):
        (outcome,) = await queue.enqueue_soon([entry(name, key=key)], claim=True, synced=False)
        assert isinstance(outcome, Enqueued)
        assert outcome.claim is not None
        claims.append(outcome.claim)
    before = await queue.stats()
    for claim in claims:
        queue.complete_soon(claim, attempts=1, http_status=202, then=then)
    (other,) = await queue.enqueue_soon([entry("c", key="carol")], claim=True, synced=False)
    assert isinstance(other, Enqueued)
    assert queue.pending_now("carol") is True  # a live entry of its own, not a completion
    await asyncio.sleep(0)
    assert answers == []  # not committed yet: the enqueue passed them by
    assert queue.pending_now(JANE) is False  # asked about: committed now, both at once
    assert queue.pending_now(JOHN) is False
    after = await queue.stats()
    assert after.depth == 1
    assert after.operations - before.operations == 2  # the enqueue, then both completions
    await asyncio.sleep(0)
    assert answers == [("a", None, True), ("b", None, True)]


async def test_waiting_completions_commit_after_a_moment_or_with_any_other_operation(queue):
    """Nobody asking, the waiting completions commit after _COMPLETION_WAIT; a read takes
    them along at once."""
    kept: list[bool] = []
    for name, key in (("a", JANE), ("b", JOHN)):
        (outcome,) = await queue.enqueue_soon([entry(name, key=key)], claim=True)
        assert isinstance(outcome, Enqueued)
        assert outcome.claim is not None
        queue.complete_soon(
            outcome.claim, attempts=1, http_status=202, then=lambda _c, _e, ok: kept.append(ok)
        )
        if name == "a":
            await asyncio.sleep(store._COMPLETION_WAIT * 2)
            assert kept == [True]
    assert (await queue.stats()).depth == 0
    assert kept == [True, True]
