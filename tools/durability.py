"""``make durability``: issue 11's proofs of the durable queue, each against real processes.

Every proof starts its own Bluecore sandbox process and its own ``python -m bluecore_sidecar
serve`` processes on free loopback ports, with a real SQLite queue file under a fresh work
directory, and drives them with a real ``grpc.aio`` client. Failures are real too: ``kill -9``
(SIGKILL), SIGTERM, a 60 s outage of the sandbox (every request answered 503 through its fault
API), a 1 MiB tmpfs for the full disk, garbage bytes in the queue file.

What the sandbox received is the ground truth. The sandbox process runs with a record large
enough for the whole proof, and a second loopback port of that process serves its record in
compact form (distinct_id, event, status, arrival time), read incrementally. Every event a
proof sends has its own ``distinct_id`` (the optin/unsubscribe proof: its own email per
customer), so each upstream request is attributed to one event:

* accepted: the caller was answered ``QUEUED`` or ``DELIVERED``;
* lost: accepted, and the sandbox never answered a request for it with 2xx;
* duplicates: 2xx answers beyond the first for one event (at-least-once shows here);
* upstream requests per event: every request the sandbox saw for the proof's events (503s
  included) divided by the accepted events.

A proof passes when every one of its checks holds; the checks, including the preconditions
that make a proof meaningful (requests really were in flight at the kill, the outage really
answered 503 for its whole length), are listed under the table. The table is printed and
written to ``--out`` with the UTC date and the commit; ``--readme`` also replaces the block
between the durability markers in the README. Exit status 1 when any proof fails: this is a CI
gate.

    .venv/bin/python tools/durability.py [--only a,f] [--outage 60] [--rate 50]

Run it as root for proof (d) (it mounts a tmpfs); as another user (d) fails and says why.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from bluecore_devtools.localrun import free_port
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2, status_pb2

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
NAMESPACE = "durability-proof"
SANDBOX_RECORDS = 400_000
BEGIN_MARK = "<!-- durability:begin -->"
END_MARK = "<!-- durability:end -->"

Mode = delivery_pb2.DeliveryMode
WAIT = Mode.DELIVERY_MODE_WAIT
ENQUEUE = Mode.DELIVERY_MODE_ENQUEUE
DIRECT = Mode.DELIVERY_MODE_DIRECT
DEFAULT = Mode.DELIVERY_MODE_UNSPECIFIED
ACCEPTED = frozenset({"QUEUED", "DELIVERED"})
QUEUE_FULL = "QUEUE_FULL"


class ProofError(Exception):
    """A proof could not go on (a process would not start, a wait ran out); the row FAILs."""


# --------------------------------------------------------------------------------------------
# The sandbox child: the real sandbox, plus its record in compact form on a second port.


async def sandbox_child(port: int, summary_port: int, max_records: int) -> None:
    """Serve the sandbox on ``port`` and ``GET /summary?since=N`` on ``summary_port``."""
    from aiohttp import web  # noqa: PLC0415 - only the child serves HTTP
    from bluecore_devtools.sandbox import BluecoreSandbox  # noqa: PLC0415

    sandbox = BluecoreSandbox(max_records=max_records)
    await sandbox.start("127.0.0.1", port)

    async def summary(request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        records = sandbox.received
        rows = []
        for record in records[since:]:
            props = record.body.get("properties") if isinstance(record.body, dict) else None
            key = props.get("distinct_id") if isinstance(props, dict) else None
            rows.append([key, record.event, record.status, record.received_at])
        return web.json_response(
            {"size": len(records), "full": len(records) >= max_records, "records": rows}
        )

    app = web.Application()
    app.router.add_get("/summary", summary)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", summary_port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()
    await sandbox.stop()


@dataclasses.dataclass
class Request:
    """One request the sandbox received, as the summary port serves it."""

    key: str | None
    event: str | None
    status: int | None
    at: float  # time.monotonic() of the sandbox process; CLOCK_MONOTONIC is system-wide

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Sandbox:
    """A sandbox process, its control API and what it has received so far."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, summary_port: int) -> None:
        self.proc = proc
        self.base = f"http://127.0.0.1:{port}"
        self.url = self.base + "/api/track/mobile/v1"
        self._summary = f"http://127.0.0.1:{summary_port}/summary"
        self.requests: list[Request] = []
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def close(self) -> None:
        await self._http.close()

    async def refresh(self) -> list[Request]:
        """Fetch the requests received since the last call; returns the new ones."""
        async with self._http.get(self._summary, params={"since": len(self.requests)}) as answer:
            data = await answer.json()
        if data["full"]:
            raise ProofError("the sandbox's record is full: requests would go uncounted")
        new = [Request(*row) for row in data["records"]]
        self.requests.extend(new)
        return new

    async def fault(self, **spec: Any) -> None:
        async with self._http.post(self.base + "/_sandbox/faults", json=spec) as answer:
            if answer.status != 200:
                raise ProofError(f"the sandbox refused fault {spec}: {await answer.text()}")

    async def clear_faults(self) -> None:
        async with self._http.delete(self.base + "/_sandbox/faults") as answer:
            answer.raise_for_status()

    def by_key(self) -> dict[str | None, list[Request]]:
        grouped: dict[str | None, list[Request]] = collections.defaultdict(list)
        for request in self.requests:
            grouped[request.key].append(request)
        return grouped


# --------------------------------------------------------------------------------------------
# The sidecar under test


@dataclasses.dataclass
class Sidecar:
    """One ``bluecore-sidecar serve`` process."""

    name: str
    proc: asyncio.subprocess.Process
    address: str
    ops_url: str
    log: Path

    def log_tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records


class Client:
    """A gRPC client of one sidecar; outcomes as short strings.

    ``QUEUED``, ``DELIVERED``, ``FAILED_RETRYABLE/QUEUE_FULL`` (status and reason, when there
    is a reason), or ``RPC/UNAVAILABLE`` and ``RPC/RESOURCE_EXHAUSTED/QUEUE_FULL`` for calls
    that failed as a whole (code and ErrorInfo reason).
    """

    def __init__(self, address: str) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self._stub = delivery_pb2_grpc.DeliveryServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def deliver(self, event: delivery_pb2.DataflyEvent, mode: int, timeout: float) -> str:
        try:
            response = await self._stub.Deliver(
                delivery_pb2.DeliverRequest(event=event, mode=mode),  # type: ignore[arg-type]
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as exc:
            return _rpc_outcome(exc)
        return _outcome(response.result)

    async def batch(
        self, events: Sequence[delivery_pb2.DataflyEvent], mode: int, timeout: float
    ) -> list[str]:
        try:
            response = await self._stub.DeliverBatch(
                delivery_pb2.DeliverBatchRequest(events=events, mode=mode),  # type: ignore[arg-type]
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as exc:
            return [_rpc_outcome(exc)] * len(events)
        return [_outcome(result) for result in response.results]


def _outcome(result: delivery_pb2.DeliveryResult) -> str:
    name = delivery_pb2.DeliveryStatus.Name(result.status).removeprefix("DELIVERY_STATUS_")
    if name in ACCEPTED or not result.reason:
        return name
    return f"{name}/{result.reason}"


def _rpc_outcome(exc: grpc.aio.AioRpcError) -> str:
    outcome = f"RPC/{exc.code().name}"
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    outcome += f"/{info.reason}"
    return outcome


# --------------------------------------------------------------------------------------------
# Events


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def page_event(key: str, *, pad: int = 0) -> delivery_pb2.DataflyEvent:
    """A page view whose ``distinct_id`` upstream is ``key`` (its anonymous id)."""
    event = delivery_pb2.DataflyEvent(
        message_id=f"msg-{key}", type="page", name="Durability", anonymous_id=key
    )
    event.timestamp.CopyFrom(_now())
    event.context.page.url = f"https://shop.example.com/p/{key}"
    event.context.page.title = "Durability proof"
    event.context.consent["marketing"] = True
    if pad:
        # Stored with the event in the queue (the payload), never sent upstream by the mapping.
        event.properties["padding"] = "x" * pad
    return event


def email_event(name: str, email: str, message_id: str) -> delivery_pb2.DataflyEvent:
    """A ``Signed Up`` (optin) or ``Unsubscribed`` track event for ``email``."""
    event = delivery_pb2.DataflyEvent(message_id=message_id, type="track", event=name)
    event.timestamp.CopyFrom(_now())
    event.traits["email"] = email
    event.context.consent["marketing"] = name != "Unsubscribed"
    return event


# --------------------------------------------------------------------------------------------
# One proof's bookkeeping and its row of the table


@dataclasses.dataclass
class Row:
    """One proof: what was done, the counts, the checks."""

    proof: str
    title: str
    done: list[str] = dataclasses.field(default_factory=list)
    sent: int = 0
    accepted: int = 0
    delivered: int = 0
    lost: int = 0
    requests_per_event: float | None = None
    duplicates: int = 0
    exit_codes: list[int | None] = dataclasses.field(default_factory=list)
    checks: list[tuple[str, bool]] = dataclasses.field(default_factory=list)
    error: str = ""
    seconds: float = 0.0
    counted: tuple[Ledger, Sandbox] | None = None
    """What :func:`count` reads when a proof stops early, so a FAIL row still has its counts."""

    def check(self, what: str, ok: bool) -> bool:
        self.checks.append((what, bool(ok)))
        return bool(ok)

    @property
    def passed(self) -> bool:
        return not self.error and bool(self.checks) and all(ok for _, ok in self.checks)


class Ledger:
    """What the callers were told, per event key (the event's ``distinct_id`` upstream)."""

    def __init__(self) -> None:
        self.outcomes: dict[str, str] = {}
        self.answered_at: dict[str, float] = {}

    def note(self, key: str, outcome: str) -> None:
        self.outcomes[key] = outcome
        self.answered_at[key] = time.monotonic()

    @property
    def accepted(self) -> set[str]:
        return {key for key, outcome in self.outcomes.items() if outcome in ACCEPTED}

    def tally(self) -> str:
        counts = collections.Counter(self.outcomes.values())
        return ", ".join(f"{name} {n}" for name, n in counts.most_common())


def requests_of(key: str, grouped: dict[str | None, list[Request]]) -> list[Request]:
    """The requests of one event: ``key`` is its distinct_id, or ``distinct_id#bluecore_event``
    when one customer has several events."""
    distinct_id, _, event = key.partition("#")
    return [r for r in grouped.get(distinct_id, ()) if not event or r.event == event]


def count(row: Row, ledger: Ledger, sandbox: Sandbox) -> None:
    """Fill the row's counts from what callers were told and what the sandbox received."""
    row.counted = None
    grouped = sandbox.by_key()
    accepted = ledger.accepted
    row.sent = len(ledger.outcomes)
    row.accepted = len(accepted)
    row.delivered = sum(1 for key in accepted if any(r.ok for r in requests_of(key, grouped)))
    row.lost = row.accepted - row.delivered
    requests = sum(len(requests_of(key, grouped)) for key in ledger.outcomes)
    row.requests_per_event = requests / row.accepted if row.accepted else None
    row.duplicates = sum(
        max(0, sum(1 for r in requests_of(key, grouped) if r.ok) - 1) for key in ledger.outcomes
    )


# --------------------------------------------------------------------------------------------
# Running processes


class Context:
    """Starts and always stops the processes of one proof, in its own work directory."""

    def __init__(self, workdir: Path, stack: contextlib.AsyncExitStack) -> None:
        self.workdir = workdir
        self._stack = stack
        workdir.mkdir(parents=True, exist_ok=True)

    async def sandbox(self) -> Sandbox:
        port, summary_port = free_port(), free_port()
        with (self.workdir / "sandbox.log").open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                PY,
                __file__,
                "--sandbox-child",
                str(port),
                str(summary_port),
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                cwd=ROOT,
            )
        self._stack.push_async_callback(_terminate, proc)
        sandbox = Sandbox(proc, port, summary_port)
        self._stack.push_async_callback(sandbox.close)
        await _until(
            lambda: _answers(sandbox.base + "/_sandbox/health", proc),
            20.0,
            "the sandbox did not start (see sandbox.log)",
        )
        return sandbox

    async def sidecar(
        self, name: str, sandbox: Sandbox, queue: Path, env: dict[str, str] | None = None
    ) -> Sidecar:
        address = f"127.0.0.1:{free_port()}"
        ops = f"127.0.0.1:{free_port()}"
        full_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SIDECAR_", "BLUECORE_", "OTEL_"))
        }
        full_env.update(
            {
                "BLUECORE_NAMESPACE": NAMESPACE,
                "BLUECORE_API_URL": sandbox.url,
                "SIDECAR_GRPC_ADDRESS": address,
                "SIDECAR_OPS_ADDRESS": ops,
                # The JSON door is not under test; its fixed default port may be taken.
                "SIDECAR_HTTP_ADDRESS": "off",
                "SIDECAR_QUEUE_PATH": str(queue),
                "SIDECAR_LOG_LEVEL": "INFO",
                "OTEL_SDK_DISABLED": "true",
                **(env or {}),
            }
        )
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                PY,
                "-m",
                "bluecore_sidecar",
                "serve",
                env=full_env,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                cwd=ROOT,
            )
        self._stack.push_async_callback(_terminate, proc)
        sidecar = Sidecar(name, proc, address, f"http://{ops}", log_path)
        try:
            await _until(lambda: _answers(sidecar.ops_url + "/readyz", proc), 30.0, "")
        except ProofError:
            raise ProofError(
                f"sidecar {name} did not become ready (exit {proc.returncode}):\n"
                + sidecar.log_tail()
            ) from None
        return sidecar

    async def client(self, sidecar: Sidecar) -> Client:
        client = Client(sidecar.address)
        self._stack.push_async_callback(client.close)
        return client


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    """Last-resort cleanup: SIGTERM, then SIGKILL after 30 s."""
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _answers(url: str, proc: asyncio.subprocess.Process) -> bool:
    if proc.returncode is not None:
        raise ProofError(f"the process exited with {proc.returncode} while starting")
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
            http.get(url) as answer,
        ):
            return answer.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def _until(
    condition: Callable[[], Awaitable[bool]], timeout: float, message: str, every: float = 0.2
) -> float:
    """Wait until ``condition()`` holds; returns the seconds waited. ProofError on timeout."""
    began = time.monotonic()
    while not await condition():
        if time.monotonic() - began > timeout:
            raise ProofError(message or f"gave up after {timeout:.0f} s")
        await asyncio.sleep(every)
    return time.monotonic() - began


async def stop(sidecar: Sidecar, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int | None:
    """Send ``sig`` and wait for the exit; the exit code (negative: killed by that signal)."""
    if sidecar.proc.returncode is None:
        sidecar.proc.send_signal(sig)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(sidecar.proc.wait(), timeout)
    return sidecar.proc.returncode


async def wait_delivered(sandbox: Sandbox, keys: Iterable[str], timeout: float) -> float:
    """Wait until the sandbox answered 2xx for every key; returns when the last one came.

    The time is the sandbox's monotonic clock; ProofError names how many are missing when
    ``timeout`` runs out.
    """
    wanted = set(keys)
    delivered: dict[str, float] = {}
    began = time.monotonic()
    while True:
        await sandbox.refresh()
        grouped = sandbox.by_key()
        for key in wanted - delivered.keys():
            done = [r.at for r in requests_of(key, grouped) if r.ok]
            if done:
                delivered[key] = min(done)
        if len(delivered) == len(wanted):
            return max(delivered.values(), default=time.monotonic())
        if time.monotonic() - began > timeout:
            raise ProofError(
                f"{len(wanted) - len(delivered)} of {len(wanted)} accepted events not delivered "
                f"{timeout:.0f} s after the sidecar could deliver them"
            )
        await asyncio.sleep(0.5)


async def drain_and_stop(
    sidecar: Sidecar, sandbox: Sandbox, keys: Iterable[str], timeout: float, row: Row
) -> float:
    """Wait until every key was delivered and the sandbox went quiet, then SIGTERM ``sidecar``
    and record its exit code on ``row``; returns when the last key was delivered."""
    last = await wait_delivered(sandbox, keys, timeout)
    await settle(sandbox)
    row.exit_codes.append(await stop(sidecar))
    return last


async def settle(sandbox: Sandbox, quiet: float = 1.5, timeout: float = 20.0) -> None:
    """Wait until the sandbox has received nothing new for ``quiet`` seconds."""
    began = time.monotonic()
    last = time.monotonic()
    while time.monotonic() - last < quiet:
        if await sandbox.refresh():
            last = time.monotonic()
        if time.monotonic() - began > timeout:
            return
        await asyncio.sleep(0.25)


# --------------------------------------------------------------------------------------------
# The proofs


async def proof_a(ctx: Context, row: Row, args: argparse.Namespace) -> None:
    """kill -9 with events queued and in flight, restart on the same path."""
    sandbox = await ctx.sandbox()
    delay = 1.0
    await sandbox.fault(kind="delay", seconds=delay)  # every answer waits: requests in flight
    queue = ctx.workdir / "queue.db"
    first = await ctx.sidecar("a-first", sandbox, queue)
    client = await ctx.client(first)
    ledger = Ledger()
    row.counted = (ledger, sandbox)
    keys = [f"a-{i:04d}" for i in range(args.kill_events)]
    for start in range(0, len(keys), 50):
        chunk = keys[start : start + 50]
        outcomes = await client.batch([page_event(k) for k in chunk], ENQUEUE, 10.0)
        for key, outcome in zip(chunk, outcomes, strict=True):
            ledger.note(key, outcome)

    # More calls keep coming while the process dies: those answered QUEUED count as accepted.
    killed = asyncio.Event()

    async def keep_sending() -> None:
        for n in range(100):
            if killed.is_set():
                return
            chunk = [f"a-late-{n:03d}-{i}" for i in range(10)]
            outcomes = await client.batch([page_event(k) for k in chunk], ENQUEUE, 5.0)
            for key, outcome in zip(chunk, outcomes, strict=True):
                ledger.note(key, outcome)
            await asyncio.sleep(0.05)

    sender = asyncio.create_task(keep_sending())

    async def enough_in_flight() -> bool:
        await sandbox.refresh()
        now = time.monotonic()
        return sum(1 for r in sandbox.requests if r.at > now - delay) >= 8

    await _until(enough_in_flight, 20.0, "the workers never had 8 requests in flight")
    killed_at = time.monotonic()
    row.exit_codes.append(await stop(first, signal.SIGKILL, 10.0))
    killed.set()
    await sender
    await sandbox.refresh()
    before = [r for r in sandbox.requests if r.at <= killed_at]
    in_flight = sum(1 for r in before if r.at > killed_at - delay)
    reached = {r.key for r in before}
    queued = sum(1 for key in ledger.accepted if key not in reached)
    row.check(f"requests in flight at the kill: {in_flight}", in_flight > 0)
    row.check(f"accepted events not yet sent at the kill: {queued}", queued > 0)
    row.check("the first sidecar died of SIGKILL (-9)", row.exit_codes[0] == -signal.SIGKILL)

    await sandbox.clear_faults()
    second = await ctx.sidecar("a-restart", sandbox, queue)
    await drain_and_stop(second, sandbox, ledger.accepted, args.drain_timeout, row)
    row.check("the restarted sidecar exited 0 on SIGTERM", row.exit_codes[1] == 0)
    count(row, ledger, sandbox)
    row.check("0 accepted events lost", row.lost == 0)
    row.done += [
        f"{len(keys)} events queued (DeliverBatch, ENQUEUE), answers held {delay:.0f} s "
        f"upstream; kill -9 with {in_flight} requests in flight and {queued} events not yet "
        "sent, batches still arriving",
        f"answers: {ledger.tally()}",
        "restart on the same file, delays off",
    ]


async def proof_b(ctx: Context, row: Row, args: argparse.Namespace) -> None:
    """An outage of Bluecore at a steady rate with short deadlines, then recovery."""
    sandbox = await ctx.sandbox()
    queue = ctx.workdir / "queue.db"
    sidecar = await ctx.sidecar(
        "b", sandbox, queue, {"SIDECAR_QUEUE_RETRY_CAP": args.outage_retry_cap}
    )
    client = await ctx.client(sidecar)
    ledger = Ledger()
    row.counted = (ledger, sandbox)
    total = int(args.rate * args.outage)
    await sandbox.fault(kind="fail", count=100_000_000, status=503)
    began = time.monotonic()

    async def one(key: str) -> None:
        ledger.note(key, await client.deliver(page_event(key), DEFAULT, args.deadline))

    calls: list[asyncio.Task[None]] = []
    for n in range(total):
        due = began + n / args.rate
        if (wait := due - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        calls.append(asyncio.create_task(one(f"b-{n:05d}")))
    sent_in = time.monotonic() - began
    if (wait := began + args.outage - time.monotonic()) > 0:
        await asyncio.sleep(wait)
    cleared = time.monotonic()
    await sandbox.clear_faults()
    ended = time.monotonic()
    await asyncio.gather(*calls)
    await sandbox.refresh()
    during = [r for r in sandbox.requests if r.at >= began]
    failed = sum(1 for r in during if r.status == 503 and r.at < ended)
    first_ok = min((r.at for r in during if r.ok), default=None)
    # A request read just before the faults were cleared may be answered after it: 0.1 s slack.
    row.check(
        f"the outage was real: {failed} answers 503, the first 2xx "
        + (f"{first_ok - began:.1f} s after it began" if first_ok else "never"),
        failed > 0 and first_ok is not None and first_ok >= cleared - 0.1,
    )
    row.check(
        f"{total} calls sent in {sent_in:.1f} s (target {args.outage:.0f} s)",
        sent_in <= args.outage * 1.05,
    )
    refused = len(ledger.outcomes) - len(ledger.accepted)
    row.check(f"every call answered QUEUED or DELIVERED ({refused} others)", refused == 0)
    last = await drain_and_stop(sidecar, sandbox, ledger.accepted, args.drain_timeout, row)
    row.check("the sidecar exited 0 on SIGTERM", row.exit_codes[0] == 0)
    count(row, ledger, sandbox)
    row.check("0 accepted events lost", row.lost == 0)
    row.done += [
        f"{args.rate:g} Deliver/s (default mode: wait) with {args.deadline:g} s deadlines during "
        f"a {args.outage:g} s outage (every request answered 503), "
        f"SIDECAR_QUEUE_RETRY_CAP={args.outage_retry_cap}",
        f"answers: {ledger.tally()}",
        f"all delivered {max(0.0, last - ended):.1f} s after Bluecore was back",
    ]


async def proof_c(ctx: Context, row: Row, args: argparse.Namespace) -> None:
    """SIGTERM under load: exit 0, nothing lost."""
    sandbox = await ctx.sandbox()
    # 16 workers at 0.5 s an answer take 32 events/s, below the 50/s queued: a backlog builds.
    await sandbox.fault(kind="delay", seconds=0.5)
    queue = ctx.workdir / "queue.db"
    grace = 5.0
    first = await ctx.sidecar("c-first", sandbox, queue, {"SIDECAR_SHUTDOWN_GRACE": f"{grace:g}s"})
    client = await ctx.client(first)
    ledger = Ledger()
    row.counted = (ledger, sandbox)
    stopping = asyncio.Event()

    async def one(key: str, mode: int) -> None:
        ledger.note(key, await client.deliver(page_event(key), mode, 5.0))

    async def load() -> list[asyncio.Task[None]]:
        tasks = []
        for n in range(2000):  # at most 20 s at 100/s, or until the sidecar has exited
            if first.proc.returncode is not None or stopping.is_set():
                break
            mode = WAIT if n % 2 else ENQUEUE
            tasks.append(asyncio.create_task(one(f"c-{n:05d}", mode)))
            await asyncio.sleep(0.01)
        return tasks

    sender = asyncio.create_task(load())
    await asyncio.sleep(3.0)
    await sandbox.refresh()
    term_at = time.monotonic()
    reached = {r.key for r in sandbox.requests if r.ok}
    pending = sum(1 for key in ledger.accepted if key not in reached)
    code = await stop(first, signal.SIGTERM, grace + 30.0)
    took = time.monotonic() - term_at
    stopping.set()
    calls = await sender
    await asyncio.gather(*calls)
    row.exit_codes.append(code)
    row.check(f"accepted but not yet delivered at SIGTERM: {pending}", pending > 0)
    row.check(f"exit 0 after SIGTERM (took {took:.1f} s, grace {grace:g} s)", code == 0)
    row.check("exited within the grace plus 10 s", took <= grace + 10.0)

    await sandbox.clear_faults()
    second = await ctx.sidecar("c-restart", sandbox, queue)
    await drain_and_stop(second, sandbox, ledger.accepted, args.drain_timeout, row)
    row.check("the restarted sidecar exited 0 on SIGTERM", row.exit_codes[1] == 0)
    count(row, ledger, sandbox)
    row.check("0 accepted events lost", row.lost == 0)
    row.done += [
        "100 Deliver/s, half wait, half enqueue, answers held 0.5 s upstream; SIGTERM after "
        f"3 s with {pending} accepted events not yet delivered; calls kept coming",
        f"answers: {ledger.tally()}",
        "restart on the same file delivers what was left",
    ]


@contextlib.asynccontextmanager
async def tiny_filesystem(path: Path, size: str) -> AsyncIterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (needs root); unmounted afterwards."""
    os.makedirs(path, exist_ok=True)
    mount = await asyncio.create_subprocess_exec(
        "mount",
        "-t",
        "tmpfs",
        "-o",
        f"size={size},mode=0700",
        "tmpfs",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await mount.communicate()
    if mount.returncode != 0:
        raise ProofError(f"cannot mount a {size} tmpfs (root needed): {output.decode().strip()}")
    try:
        yield path
    finally:
        umount = await asyncio.create_subprocess_exec("umount", "-l", str(path))
        await umount.wait()


async def proof_d(ctx: Context, row: Row, args: argparse.Namespace) -> None:
    """A full disk answers QUEUE_FULL, the sidecar keeps serving, nothing accepted is lost."""
    sandbox = await ctx.sandbox()
    async with tiny_filesystem(ctx.workdir / "disk", "1m") as disk:
        await sandbox.fault(kind="fail", count=100_000_000, status=503)
        queue = disk / "queue.db"
        sidecar = await ctx.sidecar("d", sandbox, queue)
        client = await ctx.client(sidecar)
        ledger = Ledger()
        row.counted = (ledger, sandbox)
        full_at = await _fill(client, ledger)
        answers_when_full = ledger.tally()
        row.check(f"QUEUE_FULL once the 1 MiB disk filled (first at event {full_at})", full_at > 0)
        more = [f"d-more-{i}" for i in range(10)]
        outcomes = [await client.deliver(page_event(k, pad=4096), ENQUEUE, 5.0) for k in more]
        for key, outcome in zip(more, outcomes, strict=True):
            ledger.note(key, outcome)
        row.check(
            "still answering on a full disk: " + ", ".join(sorted(set(outcomes))),
            all(QUEUE_FULL in o or o in ACCEPTED for o in outcomes),
        )
        alive = sidecar.proc.returncode is None and await _answers(
            sidecar.ops_url + "/readyz", sidecar.proc
        )
        row.check("no crash: the process runs and /readyz answers 200", alive)

        # Bluecore is back but the disk is still full: every claim and every completion is a
        # write. What gets through is reported, not judged.
        await sandbox.clear_faults()
        await asyncio.sleep(args.full_disk_wait)
        await sandbox.refresh()
        grouped = sandbox.by_key()
        while_full = sum(1 for k in ledger.accepted if any(r.ok for r in grouped.get(k, ())))
        # Room again (an operator frees the disk): the queue must drain without a restart.
        await _remount(disk, "8m")
        try:
            await wait_delivered(sandbox, ledger.accepted, args.drain_timeout / 2)
            drained = True
        except ProofError as exc:
            drained = False
            stuck = str(exc).split(" not delivered")[0]
        row.check(
            "drained once the disk had room, without a restart"
            + ("" if drained else f" ({stuck} stayed queued)"),
            drained,
        )
        if drained:
            after = [f"d-after-{i}" for i in range(5)]
            for key in after:
                ledger.note(key, await client.deliver(page_event(key), ENQUEUE, 5.0))
            again = [ledger.outcomes[k] for k in after]
            row.check(
                "takes events again: " + ", ".join(sorted(set(again))),
                all(o in ACCEPTED for o in again),
            )
            await wait_delivered(sandbox, ledger.accepted, 30.0)
        await settle(sandbox)
        row.exit_codes.append(await stop(sidecar))
        row.check("the sidecar exited 0 on SIGTERM", row.exit_codes[0] == 0)
        if not drained:  # is anything lost for good, or only stuck until a restart?
            second = await ctx.sidecar("d-restart", sandbox, queue)
            await drain_and_stop(second, sandbox, ledger.accepted, args.drain_timeout, row)
            row.check("the restarted sidecar exited 0 on SIGTERM", row.exit_codes[1] == 0)
    count(row, ledger, sandbox)
    row.check("0 accepted events lost", row.lost == 0)
    row.done += [
        "queue file on a 1 MiB tmpfs, Bluecore answering 503, 4 KiB events queued (ENQUEUE) "
        "until the disk filled; Bluecore back, then the tmpfs grown to 8 MiB",
        f"answers until full: {answers_when_full}",
        f"delivered in {args.full_disk_wait:g} s with Bluecore back and the disk still full: "
        f"{while_full} of {len(ledger.accepted)}"
        + ("" if drained else "; drained only after a restart"),
    ]


async def _fill(client: Client, ledger: Ledger, limit: int = 2000) -> int:
    """Queue 4 KiB events until one answer is QUEUE_FULL; the number of that event, or 0."""
    n = 0
    while n < limit:
        chunk = [f"d-{n + i:05d}" for i in range(20)]
        n += len(chunk)
        outcomes = await client.batch([page_event(k, pad=4096) for k in chunk], ENQUEUE, 10.0)
        for key, outcome in zip(chunk, outcomes, strict=True):
            ledger.note(key, outcome)
        for number, outcome in enumerate(outcomes, n - len(chunk) + 1):
            if QUEUE_FULL in outcome:
                return number
    return 0


async def _remount(path: Path, size: str) -> None:
    remount = await asyncio.create_subprocess_exec(
        "mount",
        "-o",
        f"remount,size={size}",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await remount.communicate()
    if remount.returncode != 0:
        raise ProofError(f"cannot grow the tmpfs: {output.decode().strip()}")


async def proof_e(ctx: Context, row: Row, args: argparse.Namespace) -> None:
    """A corrupt queue file at start is moved aside with an ERROR line; the sidecar serves."""
    sandbox = await ctx.sandbox()
    queue = ctx.workdir / "queue.db"
    garbage = b"this is not a queue\n" + os.urandom(64 * 1024)
    queue.write_bytes(garbage)
    sidecar = await ctx.sidecar("e", sandbox, queue)
    row.check("started and serving on a corrupt file", True)
    errors = [r for r in sidecar.log_records() if r.get("level") == "ERROR"]
    row.check(
        f"an ERROR line at start: {errors[0].get('message', '')[:80]!r}"
        if errors
        else "an ERROR line at start",
        bool(errors),
    )
    aside = sorted(ctx.workdir.glob("queue.db.corrupt-*"))
    kept = [p for p in aside if p.read_bytes() == garbage]
    row.check(
        f"the file moved aside unchanged as {kept[0].name}" if kept else "the file moved aside",
        bool(kept),
    )
    client = await ctx.client(sidecar)
    ledger = Ledger()
    row.counted = (ledger, sandbox)
    keys = [f"e-{i:03d}" for i in range(20)]
    outcomes = await client.batch([page_event(k) for k in keys], ENQUEUE, 10.0)
    for key, outcome in zip(keys, outcomes, strict=True):
        ledger.note(key, outcome)
    row.check("new events queued in a fresh file", len(ledger.accepted) == len(keys))
    await drain_and_stop(sidecar, sandbox, ledger.accepted, args.drain_timeout, row)
    row.check("the sidecar exited 0 on SIGTERM", row.exit_codes[0] == 0)
    count(row, ledger, sandbox)
    row.check("0 accepted events lost", row.lost == 0)
    row.done += [
        "64 KiB of garbage at SIDECAR_QUEUE_PATH, then start; 20 events queued (ENQUEUE)",
        f"answers: {ledger.tally()}",
    ]


async def proof_f(ctx: Context, row: Row, args: argparse.Namespace) -> None:
    """A failed, queued optin leaves before the same customer's unsubscribe."""
    sandbox = await ctx.sandbox()
    sidecar = await ctx.sidecar("f", sandbox, ctx.workdir / "queue.db")
    client = await ctx.client(sidecar)
    ledger = Ledger()
    row.counted = (ledger, sandbox)
    modes = {"wait": WAIT, "enqueue": ENQUEUE, "direct": DIRECT}
    for name, mode in modes.items():
        email = f"order-{name}@example.com"
        # The previous customer's events must be in first, or one of them could take the 503.
        await wait_delivered(sandbox, ledger.accepted, args.drain_timeout)
        await sandbox.fault(kind="fail", count=1, status=503)  # the optin's first request
        optin = await client.deliver(email_event("Signed Up", email, f"f-optin-{name}"), ENQUEUE, 5)
        ledger.note(f"{email}#optin", optin)

        async def failed_once(email: str = email) -> bool:
            await sandbox.refresh()
            return any(r.key == email and r.status == 503 for r in sandbox.requests)

        await _until(failed_once, 10.0, f"the optin of {email} never reached the sandbox", 0.02)
        # Sent at once: a sidecar that sends it directly overtakes the optin's retry.
        unsub = await client.deliver(
            email_event("Unsubscribed", email, f"f-unsub-{name}"), mode, 10.0
        )
        ledger.note(f"{email}#unsubscribe", unsub)
        row.done.append(f"{name}: optin {optin}, unsubscribe {unsub}")
    emails = [f"order-{name}@example.com" for name in modes]
    await drain_and_stop(sidecar, sandbox, ledger.accepted, args.drain_timeout, row)
    grouped = sandbox.by_key()
    for name, email in zip(modes, emails, strict=True):
        requests = grouped.get(email, [])
        optin_ok = min((r.at for r in requests if r.event == "optin" and r.ok), default=None)
        first_unsub = min((r.at for r in requests if r.event == "unsubscribe"), default=None)
        row.check(
            f"unsubscribe ({name}) first reached Bluecore after Bluecore took the optin",
            optin_ok is not None and first_unsub is not None and first_unsub > optin_ok,
        )
    row.check("the sidecar exited 0 on SIGTERM", row.exit_codes[0] == 0)
    count(row, ledger, sandbox)
    row.check("0 accepted events lost", row.lost == 0)
    row.done.insert(
        0,
        "per customer: optin (ENQUEUE) whose first request gets 503, then at once its "
        "unsubscribe in mode wait, enqueue or direct",
    )


async def proof_g(ctx: Context, row: Row, args: argparse.Namespace) -> None:
    """A restart on the same file still knows delivered and queued message ids."""
    sandbox = await ctx.sandbox()
    queue = ctx.workdir / "queue.db"
    first = await ctx.sidecar("g-first", sandbox, queue)
    client = await ctx.client(first)
    ledger = Ledger()
    row.counted = (ledger, sandbox)
    direct = [f"g-direct-{i:03d}" for i in range(20)]
    queued = [f"g-queued-{i:03d}" for i in range(20)]
    held = [f"g-held-{i:03d}" for i in range(10)]
    for keys, mode in ((direct, WAIT), (queued, ENQUEUE)):
        outcomes = await client.batch([page_event(k) for k in keys], mode, 10.0)
        for key, outcome in zip(keys, outcomes, strict=True):
            ledger.note(key, outcome)
    await wait_delivered(sandbox, ledger.accepted, args.drain_timeout)
    await sandbox.fault(kind="fail", count=100_000_000, status=503)
    outcomes = await client.batch([page_event(k) for k in held], ENQUEUE, 10.0)
    for key, outcome in zip(held, outcomes, strict=True):
        ledger.note(key, outcome)
    row.exit_codes.append(await stop(first))
    row.check("the first sidecar exited 0 on SIGTERM", row.exit_codes[0] == 0)

    second = await ctx.sidecar("g-restart", sandbox, queue)
    client = await ctx.client(second)
    await sandbox.refresh()
    baseline = len(sandbox.requests)
    again = await client.batch([page_event(k) for k in direct + queued], DEFAULT, 10.0)
    held_again = await client.batch([page_event(k) for k in held], DEFAULT, 10.0)
    await asyncio.sleep(2.0)  # time for anything wrongly sent in the background to arrive
    await sandbox.refresh()
    resent = set(direct + queued)
    new = [r for r in sandbox.requests[baseline:] if r.key in resent]
    dup = sum(1 for o in again if o.startswith("SKIPPED_DUPLICATE"))
    row.check(
        f"{dup} of {len(again)} delivered ids answered SKIPPED_DUPLICATE after the restart",
        dup == len(again),
    )
    row.check(f"upstream requests for them after the restart: {len(new)}", not new)
    row.check(
        f"ids still queued at the restart answered QUEUED again: {sorted(set(held_again))}",
        all(o == "QUEUED" for o in held_again),
    )
    await sandbox.clear_faults()
    await drain_and_stop(second, sandbox, ledger.accepted, args.drain_timeout, row)
    row.check("the restarted sidecar exited 0 on SIGTERM", row.exit_codes[1] == 0)
    count(row, ledger, sandbox)
    row.check("each event accepted once upstream (no duplicates)", row.duplicates == 0)
    row.check("0 accepted events lost", row.lost == 0)
    row.done += [
        "20 delivered directly (wait), 20 through the queue, 10 still queued (Bluecore 503); "
        "SIGTERM, restart on the same file, all 50 sent again",
        f"first answers: {ledger.tally()}; after restart: "
        + ", ".join(f"{k} {v}" for k, v in collections.Counter(again + held_again).items()),
    ]


PROOFS: dict[str, tuple[str, Callable[[Context, Row, argparse.Namespace], Awaitable[None]]]] = {
    "a": ("kill -9, restart", proof_a),
    "b": ("Bluecore outage", proof_b),
    "c": ("SIGTERM under load", proof_c),
    "d": ("full disk", proof_d),
    "e": ("corrupt file at start", proof_e),
    "f": ("optin before unsubscribe", proof_f),
    "g": ("restart keeps dedup", proof_g),
}


# --------------------------------------------------------------------------------------------
# Report


def git_commit() -> str:
    def git(*argv: str) -> str:
        done = subprocess.run(
            ["git", *argv],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "server", "tools")
    return commit + (" + uncommitted changes in server/ or tools/" if dirty else "")


def render(rows: list[Row], started: dt.datetime, seconds: float, command: str) -> str:
    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = [
        f"Run {started:%Y-%m-%d %H:%M} UTC, commit {git_commit()}, {seconds:.0f} s, "
        f"`{command}`; {sum(r.passed for r in rows)} passed, "
        f"{sum(not r.passed for r in rows)} failed.",
        "",
        "| proof | what was done | sent | accepted | delivered | lost | upstream requests "
        "per event | duplicates sent upstream | exit codes | result |",
        "|---|---|--:|--:|--:|--:|--:|--:|---|---|",
    ]
    for r in rows:
        codes = ", ".join("none" if c is None else str(c) for c in r.exit_codes) or "-"
        lines.append(
            f"| ({r.proof}) {r.title} | {r.done[0] if r.done else '-'} | {r.sent} | "
            f"{r.accepted} | {r.delivered} | {r.lost} | {num(r.requests_per_event)} | "
            f"{r.duplicates} | {codes} | {'PASS' if r.passed else '**FAIL**'} |"
        )
    return "\n".join(lines) + "\n"


def render_checks(rows: list[Row]) -> str:
    lines = ["Checks (✓ held, ✗ did not):", ""]
    for r in rows:
        lines.append(f"- ({r.proof}) {r.title}, {r.seconds:.0f} s: " + "; ".join(r.done[1:]))
        for what, ok in r.checks:
            lines.append(f"  - {'✓' if ok else '✗'} {what}")
        if r.error:
            lines.append(f"  - ✗ stopped: {r.error.splitlines()[0]}")
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, table: str, checks_file: Path) -> None:
    """Put ``table`` between the README's markers, with a link to the file of every check."""
    shown = os.path.relpath(checks_file.resolve(), readme.resolve().parent)
    block = f"{table}\nEvery check of this run: [{shown}]({shown}).\n"
    text = readme.read_text(encoding="utf-8")
    head, sep, rest = text.partition(BEGIN_MARK)
    _, sep2, tail = rest.partition(END_MARK)
    if not sep or not sep2:
        raise SystemExit(f"{readme} has no {BEGIN_MARK} ... {END_MARK} block")
    readme.write_text(f"{head}{BEGIN_MARK}\n{block}{END_MARK}{tail}", encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Main


async def run_proof(letter: str, args: argparse.Namespace, workdir: Path) -> Row:
    title, proof = PROOFS[letter]
    row = Row(letter, title)
    began = time.monotonic()
    print(f"==> ({letter}) {title}", flush=True)
    try:
        async with contextlib.AsyncExitStack() as stack, asyncio.timeout(args.proof_timeout):
            try:
                await proof(Context(workdir / letter, stack), row, args)
            finally:
                if row.counted is not None:  # stopped early: count what happened until then
                    ledger, sandbox = row.counted
                    with contextlib.suppress(Exception):
                        await sandbox.refresh()
                    count(row, ledger, sandbox)
    except TimeoutError:
        row.error = f"the proof took longer than {args.proof_timeout:.0f} s"
    except Exception as exc:  # noqa: BLE001 - one proof's breakage must not hide the others
        row.error = f"{type(exc).__name__}: {exc}"
    row.seconds = time.monotonic() - began
    verdict = "PASS" if row.passed else "FAIL"
    print(
        f"    {verdict} in {row.seconds:.0f} s: sent {row.sent}, accepted {row.accepted}, "
        f"delivered {row.delivered}, lost {row.lost}, duplicates {row.duplicates}",
        flush=True,
    )
    for what, ok in row.checks:
        print(f"    {'ok ' if ok else 'NOT'} {what}", flush=True)
    if row.error:
        print(f"    stopped: {row.error}", flush=True)
        print(f"    logs: {workdir / letter}", flush=True)
    return row


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(PROOFS), help="proofs to run, e.g. a,f")
    parser.add_argument("--outage", type=float, default=60.0, help="(b): outage, seconds")
    parser.add_argument("--rate", type=float, default=50.0, help="(b): Deliver calls per second")
    parser.add_argument("--deadline", type=float, default=5.0, help="(b): deadline per call, s")
    parser.add_argument(
        "--outage-retry-cap", default="15s", help="(b): SIDECAR_QUEUE_RETRY_CAP of the sidecar"
    )
    parser.add_argument(
        "--full-disk-wait", type=float, default=10.0, help="(d): seconds with the disk full"
    )
    parser.add_argument("--kill-events", type=int, default=300, help="(a): events queued")
    parser.add_argument("--drain-timeout", type=float, default=90.0, help="seconds per drain")
    parser.add_argument("--proof-timeout", type=float, default=240.0, help="seconds per proof")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "durability-last-run.md")
    parser.add_argument("--readme", type=Path, help="also replace the README's durability block")
    parser.add_argument("--workdir", type=Path, help="keep logs and queue files here")
    parser.add_argument("--sandbox-child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.proofs = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in args.proofs if p not in PROOFS]
    if unknown:
        parser.error(f"unknown proofs {unknown}; choose from {', '.join(PROOFS)}")
    return args


async def main_async(args: argparse.Namespace, command: str) -> int:
    started = dt.datetime.now(dt.UTC)
    began = time.monotonic()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="durability-"))
    print(f"durability: proofs {','.join(args.proofs)}; logs and queue files in {workdir}")
    rows = [await run_proof(letter, args, workdir) for letter in args.proofs]
    table = render(rows, started, time.monotonic() - began, command)
    checks = render_checks(rows)
    print()
    print(table)
    print(checks)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        "# Durability: the last run of `make durability`\n\n"
        "Written by `tools/durability.py`; README.md, section Durability, explains the "
        "proofs.\n\n" + table + "\n" + checks,
        encoding="utf-8",
    )
    if args.readme:
        update_readme(args.readme, table, args.out)
    failed = [r.proof for r in rows if not r.passed]
    print(f"durability: {len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sandbox_child:
        asyncio.run(sandbox_child(*args.sandbox_child, SANDBOX_RECORDS))
        return 0
    shown = " ".join(["tools/durability.py", *(sys.argv[1:] if argv is None else argv)])
    return asyncio.run(main_async(args, shown))


if __name__ == "__main__":
    sys.exit(main())
