"""One durable queue file shared by two processes (``shared=True``, as SIDECAR_WORKERS opens it).

The peer is a real second process (tests/store_peer.py) with its own SQLite connection, its own
writer thread and its own owner lock, driven one JSON line at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from bluecore_sidecar import store
from bluecore_sidecar.store import Duplicate, Enqueued, NewEntry, SqliteQueue

PEER = Path(__file__).with_name("store_peer.py")

pytestmark = pytest.mark.slow


class Peer:
    """The other process: send it a command, read its answer."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def ask(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()
        async with asyncio.timeout(30):
            line = await self.process.stdout.readline()
        assert line, "the peer ended"
        answer: dict[str, Any] = json.loads(line)
        return answer


@contextlib.asynccontextmanager
async def peer(db: Path) -> AsyncIterator[Peer]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PEER),
        str(db),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            hello = json.loads(await process.stdout.readline())
        assert "open" in hello
        yield Peer(process)
    finally:
        if process.returncode is None:
            assert process.stdin is not None
            process.stdin.close()
            async with asyncio.timeout(30):
                await process.wait()


def new(message_id: str, key: str) -> NewEntry:
    return NewEntry(
        message_id=message_id,
        ordering_key=key,
        bluecore_event="optin",
        payload=message_id.encode(),
        event_time=time.time(),
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


@pytest.fixture
async def shared(db: Path) -> AsyncIterator[SqliteQueue]:
    queue = await SqliteQueue.open(db, shared=True)
    yield queue
    await queue.close()


async def test_two_processes_claiming_at_once_never_claim_the_same_entry(shared, db):
    ids = [f"m{i}" for i in range(200)]
    assert all(
        isinstance(o, Enqueued) for o in await shared.enqueue([new(i, f"k-{i}") for i in ids])
    )
    async with peer(db) as other:
        # One round each first, so that both surely hold claims the other must not take.
        their = (await other.ask(op="claim", limit=2))["claimed"]
        mine = [c.entry.message_id for c in await shared.claim_due(2)]

        async def theirs() -> list[str]:
            got: list[str] = []
            while claimed := (await other.ask(op="claim", limit=2))["claimed"]:
                got += claimed
            return got

        async def ours() -> list[str]:
            got: list[str] = []
            while claimed := await shared.claim_due(2):
                got += [c.entry.message_id for c in claimed]
                await asyncio.sleep(0)
            return got

        # Then both at once, until nothing is left.
        more_mine, more_theirs = await asyncio.gather(ours(), theirs())
    mine += more_mine
    their += more_theirs
    assert len(mine) >= 2
    assert len(their) >= 2
    assert not set(mine) & set(their)
    assert sorted(mine + their) == sorted(ids)


async def test_a_message_id_queued_by_one_process_is_a_duplicate_in_the_other(shared, db):
    async with peer(db) as other:
        assert (await other.ask(op="enqueue", id="m-1", key="jane"))["outcome"] == "Enqueued"
        (outcome,) = await shared.enqueue([new("m-1", "jane")])
        assert isinstance(outcome, Duplicate)
        assert outcome.record.state == "queued"
        (outcome,) = await shared.enqueue([new("m-2", "john")])
        assert isinstance(outcome, Enqueued)
        assert (await other.ask(op="enqueue", id="m-2", key="john"))["outcome"] == "Duplicate"


async def test_a_key_queued_by_one_process_keeps_its_order_in_the_other(shared, db):
    """The peer numbered nothing yet; its entry for Jane must still go behind ours, and it
    must see that Jane has something pending (so a direct send would wait)."""
    async with peer(db) as other:  # opened first: it has seen no sequence number yet
        await shared.enqueue([new(f"x{i}", f"other-{i}") for i in range(5)])
        await shared.enqueue([new("optin", "jane")])
        assert (await other.ask(op="has_pending", key="jane"))["pending"] is True
        assert (await other.ask(op="has_pending", key="nobody"))["pending"] is False
        assert (await other.ask(op="enqueue", id="unsubscribe", key="jane"))["outcome"] == (
            "Enqueued"
        )
    first = [c for c in await shared.claim_due(10) if c.entry.ordering_key == "jane"]
    assert [c.entry.message_id for c in first] == ["optin"]
    assert await shared.complete(first[0], attempts=1, http_status=202)
    second = await shared.claim_due(10)
    assert [c.entry.message_id for c in second] == ["unsubscribe"]
    assert await shared.has_pending("jane")


async def test_an_opener_releases_only_the_claims_of_processes_that_are_gone(shared, db):
    await shared.enqueue([new("ours", "jane"), new("theirs", "john")])
    (mine,) = await shared.claim_due(1)
    async with peer(db) as other:
        assert (await other.ask(op="claim", limit=5))["claimed"] == ["theirs"]
        # A third opener while both live: nobody's claim is touched.
        third = await SqliteQueue.open(db, shared=True)
        try:
            assert await third.claim_due(5) == []
        finally:
            await third.close()
        other.process.send_signal(signal.SIGKILL)  # dies holding its claim
        await other.process.wait()
    third = await SqliteQueue.open(db, shared=True)
    try:
        reclaimed = await third.claim_due(5)
        assert [c.entry.message_id for c in reclaimed] == ["theirs"]
    finally:
        await third.close()
    assert await shared.complete(mine, attempts=1, http_status=202)  # ours stayed valid
    leftovers = sorted(p.name for p in db.parent.glob("queue.db.owner-*.lock"))
    assert len(leftovers) == 1  # ours; the dead peer's and the third's were tidied away


async def test_an_exclusive_opener_is_refused_while_shared_ones_hold_the_file(shared, db):
    with pytest.raises(store.StoreError, match="in use"):
        await SqliteQueue.open(db)


async def test_shutdown_releases_only_this_processes_claims(shared, db):
    await shared.enqueue([new("ours", "jane"), new("theirs", "john")])
    (mine,) = await shared.claim_due(1)
    async with peer(db) as other:
        assert (await other.ask(op="claim", limit=5))["claimed"] == ["theirs"]
        assert await shared.release_all_claims() == 1
        again = await shared.claim_due(5)
        assert [c.entry.message_id for c in again] == [mine.entry.message_id]


async def test_depth_and_the_count_limit_include_what_the_other_process_queued(db):
    queue = await SqliteQueue.open(db, shared=True, limits=store.QueueLimits(max_entries=3))
    try:
        async with peer(db) as other:
            for number in range(3):
                answer = await other.ask(op="enqueue", id=f"theirs-{number}", key=f"k{number}")
                assert answer["outcome"] == "Enqueued"
            assert (await queue.stats()).depth == 3
            (outcome,) = await queue.enqueue([new("ours", "jane")])
            assert isinstance(outcome, store.QueueFull)
            assert outcome.cause == "COUNT"
    finally:
        await queue.close()


async def test_an_id_the_other_process_delivered_is_known_as_delivered_not_still_queued(shared, db):
    await shared.enqueue([new("m-1", "jane")])
    assert (await shared.lookup("m-1")).state == "queued"  # now in this process's cache
    async with peer(db) as other:
        assert (await other.ask(op="deliver", limit=5))["delivered"] == ["m-1"]
    record = await shared.lookup("m-1")
    assert record is not None
    assert record.state == "delivered"
    assert not await shared.has_pending("jane")
