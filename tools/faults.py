"""``make faults``: issue 10's misbehaviours, each against a real sidecar process, in one table.

For every case the harness starts a fresh ``python -m bluecore_sidecar serve`` on free loopback
ports, pointed at one Bluecore sandbox process (the fake with a fault queue, driven over its
``/_sandbox/`` control API), and drives it with a real ``grpc.aio`` client. It measures:

* what the caller got: gRPC codes, ``DeliveryResult`` statuses and ErrorInfo reasons, counted;
* event-loop stall: the longest ``/healthz`` wait seen by a separate poller process
  (``tools/faults_poller.py``, one probe every 50 ms);
* peak RSS: ``VmHWM`` of the sidecar process from ``/proc/<pid>/status`` (a guard kills a
  sidecar that passes ``--rss-limit`` MB and says so, to protect the shared machine);
* upstream requests per event: the sandbox's request counts per ``distinct_id`` (every event
  the harness sends has its own anonymous id).

Each row is marked PASS or FAIL against the behaviour issue 10 asks for once fixed, so the same
table is useful before and after the fixes. A case that breaks does not stop the others. The
exit status is non-zero only for harness errors (a case that raised, a sidecar that would not
start), never for a FAIL. The table is printed and written to ``--out`` with the UTC date and
the commit; ``--readme`` also replaces the block between the faults markers in the README.

    .venv/bin/python tools/faults.py [--only 1,5] [--scale 0.5] [--out docs/reliability-last-run.md]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import statistics
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
from bluecore_devtools.secretvolume import (
    kubelet_swap,
    kubelet_volume,
    plain_file,
    rewrite_in_place,
)
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
POLLER = Path(__file__).resolve().parent / "faults_poller.py"
PY = sys.executable
NAMESPACE = "ns-faults-7f3a9c"
EMAIL = "shopper@example.com"
DELIVER = "/datafly.bluecore.v1.DeliveryService/Deliver"
Status = delivery_pb2.DeliveryStatus

#: A single event or answer must not hold /healthz up longer than this (seconds).
STALL_LIMIT = 0.5
#: A hostile body may cost at most this much memory above the idle sidecar (MB).
BODY_RSS_LIMIT = 50.0
#: 4,000 big results may cost at most this much memory (MB): dedup is bounded in bytes.
RESULTS_RSS_LIMIT = 100.0
#: A gRPC client's default receive limit.
DEFAULT_RECEIVE_LIMIT = 4 * 1024 * 1024
#: Pause cap given to the sidecar when it has SIDECAR_MAX_PAUSE (its default is 60 s).
SHORT_PAUSE_CAP = 2.0
DEFAULT_PAUSE_CAP = 60.0
#: No case may run longer than this (seconds); its row then says so.
CASE_TIMEOUT = 120.0


class HarnessError(Exception):
    """The harness itself could not do its job (not a verdict on the sidecar)."""


# ----------------------------------------------------------------------------- the table


@dataclasses.dataclass
class Row:
    """One line of the table."""

    case: str
    got: str = ""
    stall: str = "-"
    rss: str = "-"
    per_event: str = "-"
    verdict: str = "FAIL"
    expected: str = ""


COLUMNS = (
    ("case", "case"),
    ("got", "what the caller got"),
    ("stall", "event-loop stall"),
    ("rss", "peak RSS"),
    ("per_event", "upstream requests per event"),
    ("verdict", "verdict"),
    ("expected", "expected once fixed"),
)


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as a GitHub markdown table (pipes in cells escaped)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(cell(getattr(row, name)) for name, _ in COLUMNS) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- processes


@dataclasses.dataclass
class Child:
    """A child process of the harness, in its own session, with its output in files."""

    name: str
    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def tail(self, lines: int = 12) -> str:
        """The last lines of its stderr, for error messages."""
        with contextlib.suppress(OSError):
            return "\n".join(self.stderr.read_text(errors="replace").splitlines()[-lines:])
        return ""


def spawn(name: str, argv: list[str], env: dict[str, str], workdir: Path) -> Child:
    """Start ``argv`` in its own session, so Ctrl-C reaches only the harness, which stops it."""
    out, err = workdir / f"{name}.out", workdir / f"{name}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
    return Child(name, proc, out, err)


async def stop(child: Child, grace: float = 15.0) -> int:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit code."""
    if child.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            child.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(child.proc.wait, grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                child.proc.kill()
            await asyncio.to_thread(child.proc.wait, 10)
    return int(child.proc.returncode)


async def wait_exit(child: Child, timeout: float) -> int:
    """Wait for ``child`` to exit by itself (no signal); SIGKILL after ``timeout`` seconds."""
    try:
        await asyncio.to_thread(child.proc.wait, timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            child.proc.kill()
        await asyncio.to_thread(child.proc.wait, 10)
    return int(child.proc.returncode)


def proc_status_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of ``pid`` in MB (1e6 bytes); empty when the process is gone."""
    values: dict[str, float] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024 / 1e6
    return values


def sidecar_base_env() -> dict[str, str]:
    """The harness's environment without anything that would configure a sidecar."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SIDECAR_", "BLUECORE_", "OTEL_"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


def sidecar_settings() -> frozenset[str]:
    """Names of the variables this checkout's sidecar reads (to use new ones only if present).

    From ``config.ENV_VARS`` when it exists, else every ``SIDECAR_*`` / ``BLUECORE_*`` name
    quoted in the package's source: the settings table is being reshaped concurrently.
    """
    spec = importlib.util.find_spec("bluecore_sidecar")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    names: set[str] = set()
    with contextlib.suppress(ImportError):
        from bluecore_sidecar import config  # noqa: PLC0415 - only to read its variable list

        names.update(getattr(config, "ENV_VARS", ()))
    for folder in spec.submodule_search_locations:
        for path in Path(folder).rglob("*.py"):
            names.update(re.findall(r"[\"'`]((?:SIDECAR|BLUECORE)_[A-Z0-9_]+)", path.read_text()))
    return frozenset(names)


def find_sandbox() -> tuple[str | None, Path]:
    """The sandbox module: its importable dotted name and its file."""
    name = "bluecore_devtools.sandbox"
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin:
        raise HarnessError(f"cannot import {name}; run `make venv` first")
    return name, Path(spec.origin)


# ----------------------------------------------------------------------------- sandbox


class Sandbox:
    """The sandbox process and its control API."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = self.base + "/api/track/mobile/v1"
        self.child: Child | None = None
        self.http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Start the sandbox process (again, if an earlier one died) and wait for it."""
        if self.child is not None and self.child.proc.poll() is None:
            return
        name, path = find_sandbox()
        if name is not None:
            load = f"from {name} import serve_sandbox"
        else:
            load = (
                "import importlib.util, sys\n"
                f"spec = importlib.util.spec_from_file_location('faults_sandbox', {str(path)!r})\n"
                "module = importlib.util.module_from_spec(spec)\n"
                "sys.modules['faults_sandbox'] = module\n"
                "spec.loader.exec_module(module)\n"
                "serve_sandbox = module.serve_sandbox"
            )
        code = f"{load}\nserve_sandbox('127.0.0.1', {self.port})"
        self.child = spawn("sandbox", [PY, "-c", code], sidecar_base_env(), self.workdir)
        if self.http is None:
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.child.proc.poll() is not None:
                raise HarnessError(f"the sandbox exited at start:\n{self.child.tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                await self.get("health")
                return
            await asyncio.sleep(0.1)
        raise HarnessError("the sandbox did not answer within 30 s")

    async def get(self, path: str) -> Any:
        assert self.http is not None
        async with self.http.get(f"{self.base}/_sandbox/{path}") as response:
            response.raise_for_status()
            return await response.json()

    async def fault(self, **spec: Any) -> None:
        """Queue one fault rule (see the sandbox's control API)."""
        assert self.http is not None
        async with self.http.post(f"{self.base}/_sandbox/faults", json=spec) as response:
            if response.status != 200:
                raise HarnessError(f"the sandbox refused {spec}: {await response.text()}")

    async def reset(self) -> None:
        """Clear faults, record and counts."""
        await self.start()
        assert self.http is not None
        async with self.http.post(f"{self.base}/_sandbox/reset") as response:
            response.raise_for_status()

    async def counts(self) -> dict[str, Any]:
        """``{"total": N, "by_distinct_id": {...}}``."""
        counts: dict[str, Any] = await self.get("counts")
        return counts

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.child is not None:
            await stop(self.child, grace=5)


# ----------------------------------------------------------------------------- sidecar


@dataclasses.dataclass
class Sidecar:
    """A running sidecar process and a client for it."""

    child: Child
    address: str
    ops: str
    channel: grpc.aio.Channel
    stub: delivery_pb2_grpc.DeliveryServiceStub
    rss_limit: float
    killed_at: float | None = None
    baseline_rss: float = 0.0
    seen_hwm: float = 0.0
    """The highest VmHWM read so far: still known after the process has exited."""

    @property
    def pid(self) -> int:
        return self.child.proc.pid

    def rss(self) -> dict[str, float]:
        values = proc_status_mb(self.pid)
        self.seen_hwm = max(self.seen_hwm, values.get("VmHWM", 0.0))
        return values

    def peak(self) -> str:
        """Peak RSS for the table (or that the guard had to kill it)."""
        if self.killed_at is not None:
            return f"> {self.rss_limit:.0f} MB (killed by the harness at {self.killed_at:.0f} MB)"
        return f"{self.peak_mb():.0f} MB"

    def peak_mb(self) -> float:
        if self.killed_at is not None:
            return self.killed_at
        self.rss()
        return self.seen_hwm

    def log_text(self) -> str:
        return self.child.stderr.read_text(errors="replace") + self.child.stdout.read_text(
            errors="replace"
        )

    async def ops_get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.get(self.ops + path) as response,
        ):
            return response.status, await response.text()


class Harness:
    """Shared state of a run: the sandbox, a work directory, the scale."""

    def __init__(self, workdir: Path, scale: float, rss_limit: float) -> None:
        self.workdir = workdir
        self.scale = scale
        self.rss_limit = rss_limit
        self.sandbox = Sandbox(workdir)
        self.settings = sidecar_settings()
        self.counts_used: dict[str, int] = {}
        self._serial = 0

    def n(self, label: str, full: int, minimum: int = 10) -> int:
        """``full`` scaled by ``--scale``, remembered for the report."""
        value = max(minimum, round(full * self.scale))
        self.counts_used[label] = value
        return value

    @contextlib.asynccontextmanager
    async def sidecar(
        self, name: str, env: dict[str, str] | None = None, *, namespace_file: Path | None = None
    ) -> AsyncIterator[Sidecar]:
        """A fresh sidecar process for one case; stopped (SIGTERM, then SIGKILL) afterwards."""
        await self.sandbox.reset()
        self._serial += 1
        grpc_port, ops_port = free_port(), free_port()
        full_env = sidecar_base_env()
        full_env.update(
            {
                "BLUECORE_API_URL": self.sandbox.url,
                "SIDECAR_GRPC_ADDRESS": f"127.0.0.1:{grpc_port}",
                "SIDECAR_OPS_ADDRESS": f"127.0.0.1:{ops_port}",
                "SIDECAR_HTTP_ADDRESS": "",  # the JSON door is not under test here
                "SIDECAR_SHUTDOWN_GRACE": "10s",
                "OTEL_TRACES_EXPORTER": "none",
            }
        )
        if namespace_file is None:
            full_env["BLUECORE_NAMESPACE"] = NAMESPACE
        else:
            full_env["BLUECORE_NAMESPACE_FILE"] = str(namespace_file)
        full_env.update(env or {})
        argv = [PY, "-m", "bluecore_sidecar", "serve"]
        child = spawn(f"sidecar-{self._serial:02d}-{name}", argv, full_env, self.workdir)
        address = f"127.0.0.1:{grpc_port}"
        channel = grpc.aio.insecure_channel(address)
        sidecar = Sidecar(
            child,
            address,
            f"http://127.0.0.1:{ops_port}",
            channel,
            delivery_pb2_grpc.DeliveryServiceStub(channel),
            self.rss_limit,
        )
        guard = asyncio.create_task(self._guard(sidecar))
        try:
            await self._wait_ready(sidecar)
            sidecar.baseline_rss = sidecar.rss().get("VmRSS", 0.0)
            yield sidecar
        finally:
            guard.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await guard
            await channel.close(grace=None)
            await stop(child)

    async def _wait_ready(self, sidecar: Sidecar) -> None:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            if sidecar.child.proc.poll() is not None:
                raise HarnessError(f"the sidecar exited at start:\n{sidecar.child.tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                status, _ = await sidecar.ops_get("/healthz", timeout=1)
                if status == 200:
                    await asyncio.wait_for(sidecar.channel.channel_ready(), 10)
                    return
            await asyncio.sleep(0.1)
        raise HarnessError(f"the sidecar was not ready within 45 s:\n{sidecar.child.tail()}")

    async def _guard(self, sidecar: Sidecar) -> None:
        """Kill the sidecar if its RSS passes the limit: the machine is shared."""
        while sidecar.child.proc.poll() is None:
            rss = sidecar.rss().get("VmRSS", 0.0)  # also keeps seen_hwm up to date
            if rss > self.rss_limit:
                sidecar.killed_at = rss
                with contextlib.suppress(ProcessLookupError):
                    sidecar.child.proc.kill()
                return
            await asyncio.sleep(0.05)


@dataclasses.dataclass
class Stall:
    """What the /healthz poller saw."""

    max_latency: float
    probes: int
    failures: int
    unanswered: float

    def text(self) -> str:
        extra = []
        if self.failures:
            extra.append(f"{self.failures} of {self.probes} probes failed")
        if self.unanswered >= STALL_LIMIT:
            extra.append(f"one still unanswered after {self.unanswered:.1f} s")
        suffix = f" ({'; '.join(extra)})" if extra else ""
        return f"{self.max_latency:.2f} s{suffix}"


class Poller:
    """The /healthz poller process around a block: ``async with Poller(sidecar) as p``."""

    def __init__(self, sidecar: Sidecar, harness: Harness) -> None:
        self._sidecar = sidecar
        self._harness = harness
        self._child: Child | None = None
        self.result: Stall | None = None

    async def __aenter__(self) -> Poller:
        argv = [PY, str(POLLER), self._sidecar.ops + "/healthz", "--max-seconds", "200"]
        self._child = spawn(
            f"poller-{self._harness._serial:02d}", argv, sidecar_base_env(), self._harness.workdir
        )
        # Let it start probing before the case begins: wait for its "probing" line (it can
        # take seconds to start on a loaded machine), then for its first probes.
        started = time.monotonic()
        while "probing" not in self._child.stderr.read_text(errors="replace"):
            if self._child.proc.poll() is not None or time.monotonic() - started > 30:
                raise HarnessError(f"the /healthz poller did not start:\n{self._child.tail()}")
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._child is not None
        await stop(self._child, grace=5)
        lines = self._child.stdout.read_text().strip().splitlines()
        if not lines:
            raise HarnessError(f"the /healthz poller reported nothing:\n{self._child.tail()}")
        report = json.loads(lines[-1])
        self.result = Stall(
            max(report["max_latency"], 0.0),
            report["probes"],
            report["failures"],
            report["unanswered_at_end"],
        )

    @property
    def stall(self) -> Stall:
        assert self.result is not None
        return self.result


# ----------------------------------------------------------------------------- events and calls


def now_ts() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def page_event(key: str, **fields: Any) -> delivery_pb2.DataflyEvent:
    """A page view that maps and passes the gates; ``key`` makes its ids unique."""
    event = delivery_pb2.DataflyEvent(
        message_id=f"msg-{key}",
        type="page",
        anonymous_id=f"anon-{key}",
        timestamp=now_ts(),
        **fields,
    )
    event.context.consent["marketing"] = True
    event.context.page.url = "https://shop.example/"
    return event


def track_event(key: str, name: str) -> delivery_pb2.DataflyEvent:
    """A track event named ``name`` with consent and an anonymous id."""
    event = delivery_pb2.DataflyEvent(
        message_id=f"msg-{key}",
        type="track",
        event=name,
        anonymous_id=f"anon-{key}",
        timestamp=now_ts(),
    )
    event.context.consent["marketing"] = True
    return event


def status_name(value: int) -> str:
    return Status.Name(value).removeprefix("DELIVERY_STATUS_")


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of an RPC error, or '' when it carries none."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            with contextlib.suppress(Exception):
                details = status_pb2.Status.FromString(value)
                for detail in details.details:
                    if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                        info = error_details_pb2.ErrorInfo()
                        detail.Unpack(info)
                        return str(info.reason)
    return ""


@dataclasses.dataclass
class Call:
    """The outcome of one RPC as the caller saw it."""

    key: str
    seconds: float
    result: delivery_pb2.DeliveryResult | None = None
    error: grpc.aio.AioRpcError | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None

    def label(self) -> str:
        if self.result is not None:
            result = self.result
            reason = f"/{result.reason}" if result.reason else ""
            return f"{status_name(result.status)}{reason}"
        assert self.error is not None
        reason = error_reason(self.error)
        return f"rpc {self.error.code().name}" + (f" ({reason})" if reason else "")


async def deliver(
    stub: delivery_pb2_grpc.DeliveryServiceStub, event: delivery_pb2.DataflyEvent, timeout: float
) -> Call:
    started = time.monotonic()
    try:
        reply = await stub.Deliver(delivery_pb2.DeliverRequest(event=event), timeout=timeout)
    except grpc.aio.AioRpcError as error:
        return Call(event.message_id, time.monotonic() - started, error=error)
    return Call(event.message_id, time.monotonic() - started, result=reply.result)


def kind(call: Call) -> str:
    """'OK' or 'rpc CODE': what the caller's gRPC library reported."""
    if call.error is None:
        return "OK"
    return f"rpc {call.error.code().name}"


def tally(calls: Iterable[Call]) -> str:
    """'DELIVERED x3, rpc DEADLINE_EXCEEDED x2', most frequent first."""
    counter = collections.Counter(call.label() for call in calls)
    return ", ".join(f"{label} x{count}" for label, count in counter.most_common())


def one(call: Call) -> str:
    return f"{call.label()} in {call.seconds:.2f} s"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def per_event(sandbox: Sandbox, keys: Iterable[str]) -> tuple[str, list[int]]:
    """'1.00 (max 1)' for the events ``keys``, and the per-event counts."""
    by_id = (await sandbox.counts())["by_distinct_id"]
    counts = [int(by_id.get(f"anon-{key}", 0)) for key in keys]
    if not counts:
        return "-", []
    return f"{sum(counts) / len(counts):.2f} (max {max(counts)})", counts


async def recover_healthz(sidecar: Sidecar, limit: float) -> float | None:
    """Seconds until /healthz answers again (None if not within ``limit``): bounds a case."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            status, _ = await sidecar.ops_get(
                "/healthz", timeout=max(0.1, limit - (time.monotonic() - started))
            )
            if status == 200:
                return time.monotonic() - started
        await asyncio.sleep(0.05)
    return None


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# ----------------------------------------------------------------------------- the cases

Case = Callable[[Harness], Awaitable[list[Row]]]
BIG_NAME = "a" * 60_000 + "@"


async def case_1(h: Harness) -> list[Row]:
    """A 60 kB event name, then a 60 kB answer body, must not freeze the sidecar."""
    rows = []
    async with h.sidecar("1a-name") as sc, Poller(sc, h) as poll:
        big = asyncio.create_task(deliver(sc.stub, track_event("1a", BIG_NAME), 20))
        await asyncio.sleep(0.2)
        small = await deliver(sc.stub, page_event("1a-small"), 20)
        call = await big
        await recover_healthz(sc, 10)
    ok = call.ok and call.seconds < 1 and small.seconds < 1 and poll.stall.max_latency < STALL_LIMIT
    rows.append(
        Row(
            '1a. Deliver with event name "a"x60000+"@"',
            f"{one(call)}; a small call sent meanwhile: {one(small)}",
            poll.stall.text(),
            sc.peak(),
            (await per_event(h.sandbox, ["1a"]))[0],
            verdict(ok),
            f"answered in < 1 s, other calls unaffected, stall < {STALL_LIMIT} s",
        )
    )
    async with h.sidecar("1b-body") as sc, Poller(sc, h) as poll:
        await h.sandbox.fault(kind="body", status=202, text=BIG_NAME)
        call = await deliver(sc.stub, page_event("1b"), 10)
        back = await recover_healthz(sc, 15)
    after = "" if back is None else f"; /healthz back {back:.1f} s after the answer"
    if back is None:
        after = "; /healthz still stalled 15 s after the answer (case cut short)"
    ok = (
        call.ok
        and call.result is not None
        and call.result.status == Status.DELIVERY_STATUS_DELIVERED
    )
    ok = ok and poll.stall.max_latency < STALL_LIMIT
    rows.append(
        Row(
            '1b. Bluecore answers 202 with body "a"x60000+"@"',
            f"{one(call)}{after}",
            poll.stall.text(),
            sc.peak(),
            (await per_event(h.sandbox, ["1b"]))[0],
            verdict(ok),
            f"DELIVERED, stall < {STALL_LIMIT} s",
        )
    )
    return rows


RETRY_AFTERS = (
    ("3600", "3600"),
    ("99999999999", "99999999999"),
    ("HTTP date in 9999", "Fri, 31 Dec 9999 23:59:59 GMT"),
    ("400 digits", "9" * 400),
)


async def case_2(h: Harness) -> list[Row]:
    """Retry-After from Bluecore: the shared pause is capped, and later calls go again."""
    rows: list[Row] = []
    has_cap = "SIDECAR_MAX_PAUSE" in h.settings
    cap = SHORT_PAUSE_CAP if has_cap else DEFAULT_PAUSE_CAP
    env = {"SIDECAR_MAX_PAUSE": f"{SHORT_PAUSE_CAP:g}s"} if has_cap else {}
    window = (SHORT_PAUSE_CAP if has_cap else 3.0) + 3.0
    for label, value in RETRY_AFTERS:
        key = f"2-{len(rows)}"
        async with h.sidecar(f"2-{len(rows)}", env) as sc, Poller(sc, h) as poll:
            await h.sandbox.fault(kind="fail", status=429, retry_after=value)
            first_call = asyncio.create_task(deliver(sc.stub, page_event(key), 5))
            # Looked at while the first call waits the pause out: afterwards it is over.
            await asyncio.sleep(0.5)
            shown = await pause_shown(sc)
            first = await first_call
            before = (await h.sandbox.counts())["total"]
            later: list[Call] = []
            started = time.monotonic()
            while time.monotonic() - started < window:
                event = page_event(f"{key}-{len(later)}")
                later.append(await deliver(sc.stub, event, 1.5))
                await asyncio.sleep(max(0.0, 0.5 - later[-1].seconds))
            sent = (await h.sandbox.counts())["total"] - before
        pauses = [
            c.result.retry_after.ToTimedelta().total_seconds()
            for c in later
            if c.result is not None and c.result.HasField("retry_after")
        ]
        delivered = [
            c for c in later if c.result and c.result.status == Status.DELIVERY_STATUS_DELIVERED
        ]
        longest = f"; longest retry_after in later results {max(pauses):.0f} s" if pauses else ""
        if has_cap:
            ok = bool(delivered) and sent > 0 and all(p <= cap + 0.5 for p in pauses)
            expect = f"pause ≤ SIDECAR_MAX_PAUSE ({cap:g} s here), then later calls DELIVERED"
        else:
            ok = bool(pauses) and all(p <= cap + 0.5 for p in pauses)
            expect = "pause ≤ 60 s (no SIDECAR_MAX_PAUSE in this build; not waited out)"
        rows.append(
            Row(
                f"2. 429, Retry-After: {label}",
                f"first: {one(first)}; {len(later)} later calls over {window:.0f} s: "
                f"{tally(later)}{longest}; upstream requests in that time: {sent}; "
                f"pause shown: {shown}",
                poll.stall.text(),
                sc.peak(),
                "-",
                verdict(ok),
                expect,
            )
        )
    return rows


async def pause_shown(sc: Sidecar) -> str:
    """What /readyz and /metrics say about a pause, if anything."""
    parts = []
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
        status, text = await sc.ops_get("/readyz")
        parts.append(f"/readyz {status} {text.strip()[:120]}")
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
        _, text = await sc.ops_get("/metrics")
        lines = [
            line
            for line in text.splitlines()
            if not line.startswith("#") and re.search("pause|throttl|retry_after", line)
        ]
        parts.append("/metrics " + ("; ".join(lines[:3]) if lines else "has no pause metric"))
    return "; ".join(parts) or "ops port not answering"


async def case_3(h: Harness) -> list[Row]:
    """Huge and endless 2xx bodies must cost bounded memory."""
    rows = []
    specs: tuple[tuple[str, dict[str, Any], float], ...] = (
        ("3a. 202 with a 200 MiB body", {"size": 200 * 1024 * 1024}, 15.0),
        ("3b. 202 with an endless body", {"endless": True}, 10.0),
    )
    for index, (label, body, timeout) in enumerate(specs):
        key = f"3-{index}"
        async with h.sidecar(key) as sc, Poller(sc, h) as poll:
            await h.sandbox.fault(kind="body", status=202, **body)
            call = await deliver(sc.stub, page_event(key), timeout)
            await recover_healthz(sc, 10)
            growth = sc.peak_mb() - sc.baseline_rss
            peak = f"{sc.peak()} (idle {sc.baseline_rss:.0f} MB)"
        ok = call.ok and growth < BODY_RSS_LIMIT
        rows.append(
            Row(
                label,
                one(call),
                poll.stall.text(),
                peak,
                (await per_event(h.sandbox, [key]))[0],
                verdict(ok),
                f"an answer before the deadline, peak RSS < idle + {BODY_RSS_LIMIT:.0f} MB",
            )
        )
    return rows


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2), encoded by hand."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def deep_struct(depth: int) -> bytes:
    """A Struct nested ``depth`` times ({"a": {"a": ...}}), encoded by hand.

    The Python protobuf runtime refuses to build it (each level is Struct -> Value -> Struct,
    so 34 levels pass upb's limit of 100), which is exactly why a caller can send it anyway.
    """
    struct = b""
    for _ in range(depth):
        value = _field(5, struct)  # Value.struct_value
        struct = _field(1, _field(1, b"a") + _field(2, value))  # Struct.fields map entry
    return struct


def malformed_requests() -> list[tuple[str, bytes]]:
    """(label, raw DeliverRequest bytes) for case 4."""
    good = delivery_pb2.DeliverRequest(event=page_event("4-good")).SerializeToString()
    # Same length in, same length out: every length prefix stays right, only UTF-8 breaks.
    placeholder = delivery_pb2.DeliverRequest(event=page_event("4-utf8-XX")).SerializeToString()
    bad_utf8 = placeholder.replace(b"msg-4-utf8-XX", b"msg-4-utf8-\xff\xfe")
    depth = 40
    event_no = delivery_pb2.DeliverRequest.DESCRIPTOR.fields_by_name["event"].number
    properties_no = delivery_pb2.DataflyEvent.DESCRIPTOR.fields_by_name["properties"].number
    event = page_event("4-deep").SerializeToString()
    nested = _field(event_no, event + _field(properties_no, deep_struct(depth)))
    return [
        ("random bytes", random.Random(10).randbytes(256)),
        ("truncated message", good[: len(good) // 2]),
        ("invalid UTF-8 in message_id", bad_utf8),
        (f"properties Struct nested {depth} deep", nested),
    ]


async def case_4(h: Harness) -> list[Row]:
    """Requests that do not parse (or nest too deep) get INVALID_ARGUMENT with an ErrorInfo."""
    rows = []
    async with h.sidecar("4-malformed") as sc, Poller(sc, h) as poll:
        raw = sc.channel.unary_unary(DELIVER, request_serializer=None, response_deserializer=None)
        calls = []
        for label, payload in malformed_requests():
            started = time.monotonic()
            try:
                answer = await raw(payload, timeout=5)
                reply = delivery_pb2.DeliverResponse.FromString(answer)
                calls.append((label, Call(label, time.monotonic() - started, result=reply.result)))
            except grpc.aio.AioRpcError as error:
                calls.append((label, Call(label, time.monotonic() - started, error=error)))
        alive = await deliver(sc.stub, page_event("4-after"), 5)
    for label, call in calls:
        good = (
            call.error is not None
            and call.error.code() == grpc.StatusCode.INVALID_ARGUMENT
            and bool(error_reason(call.error))
        )
        expect = "rpc INVALID_ARGUMENT with an ErrorInfo reason"
        if "Struct" in label:
            good = good or (
                call.result is not None
                and call.result.status == Status.DELIVERY_STATUS_REJECTED_INVALID
            )
            expect += " (or a REJECTED_INVALID result)"
        detail = ""
        if call.error is not None:
            detail = f": {(call.error.details() or '')[:80]}"
        rows.append(
            Row(
                f"4. malformed: {label}",
                f"{call.label()}{detail}",
                poll.stall.text(),
                sc.peak(),
                "-",
                verdict(good and alive.ok),
                expect + "; the sidecar keeps serving",
            )
        )
    rows[-1].got += f"; a good call afterwards: {one(alive)}"
    return rows


async def case_5(h: Harness) -> list[Row]:
    """Thousands of concurrent calls: each is answered, or refused with RESOURCE_EXHAUSTED."""
    rows = []
    answered = {"OK", "rpc RESOURCE_EXHAUSTED"}
    n_fast = h.n("5a concurrent Deliver calls, fast upstream", 5000)
    async with h.sidecar("5a-fast") as sc, Poller(sc, h) as poll:
        keys = [f"5a-{i}" for i in range(n_fast)]
        started = time.monotonic()
        calls = await asyncio.gather(*(deliver(sc.stub, page_event(k), 30) for k in keys))
        took = time.monotonic() - started
    kinds = {kind(c) for c in calls}
    rows.append(
        Row(
            f"5a. {n_fast} concurrent Deliver calls, fast upstream (30 s deadline)",
            f"{tally(calls)} (all done in {took:.1f} s)",
            poll.stall.text(),
            sc.peak(),
            (await per_event(h.sandbox, keys))[0],
            verdict(kinds <= answered),
            "each call a DeliveryResult or rpc RESOURCE_EXHAUSTED (OVERLOADED); none CANCELLED",
        )
    )
    n_hang = h.n("5b concurrent Deliver calls, hanging upstream", 2000)
    async with h.sidecar("5b-hang") as sc, Poller(sc, h) as poll:
        await h.sandbox.fault(kind="delay", seconds=60)
        keys = [f"5b-{i}" for i in range(n_hang)]
        started = time.monotonic()
        calls = await asyncio.gather(*(deliver(sc.stub, page_event(k), 10) for k in keys))
        took = time.monotonic() - started
        await h.sandbox.fault(kind="delay", seconds=0)
    kinds = {kind(c) for c in calls}
    rows.append(
        Row(
            f"5b. {n_hang} concurrent Deliver calls, upstream hangs, 10 s deadline",
            f"{tally(calls)} (all done in {took:.1f} s)",
            poll.stall.text(),
            sc.peak(),
            (await per_event(h.sandbox, keys))[0],
            verdict(kinds <= answered),
            "a FAILED_RETRYABLE result before the deadline or rpc RESOURCE_EXHAUSTED; "
            "no DEADLINE_EXCEEDED",
        )
    )
    return rows


async def case_6(h: Harness) -> list[Row]:
    """SIGTERM with events in flight: they finish within the grace, each POSTed once."""
    n = h.n("6 events in flight at SIGTERM", 100)
    async with h.sidecar("6-drain") as sc:
        async with Poller(sc, h) as poll:
            await h.sandbox.fault(kind="delay", seconds=3)
            keys = [f"6-{i}" for i in range(n)]
            tasks = [asyncio.create_task(deliver(sc.stub, page_event(k), 30)) for k in keys]
            started = time.monotonic()
            while time.monotonic() - started < 2:
                if (await h.sandbox.counts())["total"] >= min(n, 64):
                    break
                await asyncio.sleep(0.05)
            upstream_at_sigterm = (await h.sandbox.counts())["total"]
            sc.child.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            calls = await asyncio.gather(*tasks)
        # One SIGTERM only: a second one is not what Kubernetes sends within the grace.
        code = await wait_exit(sc.child, 30)
        exited = time.monotonic() - signalled
        shown, counts = await per_event(h.sandbox, keys)
        await h.sandbox.fault(kind="delay", seconds=0)
    twice = sum(1 for c in counts if c > 1)
    ok = twice == 0 and code == 0 and all(c.ok for c in calls)
    return [
        Row(
            f"6. SIGTERM with {n} events in flight, upstream takes 3 s "
            "(SIDECAR_SHUTDOWN_GRACE=10s)",
            f"{tally(calls)}; {upstream_at_sigterm} POSTs under way at SIGTERM; "
            f"{twice} of {n} events POSTed more than once; exit code {code} "
            f"{exited:.1f} s after SIGTERM",
            poll.stall.text(),
            sc.peak(),
            shown,
            verdict(ok),
            "every caller gets its result, each event POSTed at most once, exit 0",
        )
    ]


async def case_7(h: Harness) -> list[Row]:
    """Watchers that never read must not slow deliveries down."""
    n_watch = h.n("7 WatchDeliveries subscribers that never read", 500)
    n_events = h.n("7 events delivered (concurrently, per phase)", 2000)
    # The cap (SIDECAR_MAX_WATCHERS, default 100) is raised so that all of them get in: the
    # row is about what idle watchers cost, not about refusing them.
    env = {"SIDECAR_MAX_WATCHERS": str(n_watch)}
    async with h.sidecar("7-watchers", env) as sc, Poller(sc, h) as poll:
        base = await asyncio.gather(
            *(deliver(sc.stub, page_event(f"7a-{i}"), 20) for i in range(n_events))
        )
        channels = [grpc.aio.insecure_channel(sc.address) for _ in range(10)]
        watchers = []
        for i in range(n_watch):
            stub = delivery_pb2_grpc.DeliveryServiceStub(channels[i % len(channels)])
            watchers.append(stub.WatchDeliveries(delivery_pb2.WatchDeliveriesRequest()))
        await asyncio.sleep(1.0)  # let every subscription reach the sidecar
        calls = await asyncio.gather(
            *(deliver(sc.stub, page_event(f"7b-{i}"), 20) for i in range(n_events))
        )
        # Still open after the run: a stream the sidecar refused or ended has finished.
        refused = sum(1 for watcher in watchers if watcher.done())
        _, metrics = await sc.ops_get("/metrics")
        gauge = re.search(r"^bluecore_sidecar_watchers (\S+)$", metrics, re.MULTILINE)
        open_now = f"{float(gauge.group(1)):.0f}" if gauge else "not shown"
        for watcher in watchers:
            watcher.cancel()
        for channel in channels:
            await channel.close(grace=None)

    def summary(phase: list[Call]) -> str:
        seconds = [c.seconds for c in phase]
        deadline = sum(
            1
            for c in phase
            if c.error is not None and c.error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        )
        return (
            f"p50 {statistics.median(seconds):.2f} s, p99 {percentile(seconds, 0.99):.2f} s, "
            f"{deadline} DEADLINE_EXCEEDED"
        )

    p50_base = statistics.median(c.seconds for c in base)
    p50 = statistics.median(c.seconds for c in calls)
    deadline_hits = sum(
        1
        for c in calls
        if c.error is not None and c.error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    )
    ok = deadline_hits == 0 and p50 <= 2 * p50_base + 0.5 and refused == 0
    return [
        Row(
            f"7. {n_watch} WatchDeliveries subscribers that never read, {n_events} events",
            f"without watchers: {summary(base)}; with them: {summary(calls)} ({tally(calls)}); "
            f"streams ended or refused: {refused}, open per /metrics: {open_now}",
            poll.stall.text(),
            sc.peak(),
            "-",
            verdict(ok),
            "all streams open; no DEADLINE_EXCEEDED; p50 at most 2x (+0.5 s) the run without"
            " watchers",
        )
    ]


async def case_8(h: Harness) -> list[Row]:
    """Big results are bounded in memory and in the size of a batch reply."""
    rows = []
    n = h.n("8 events with 60 kB names", 4000)
    # Only DELIVERED results are kept for dedup, so the big name must map: an operator's
    # event map (SIDECAR_EVENT_MAP_FILE) sends it to a custom Bluecore event.
    name = "n" * 60_000
    event_map = h.workdir / "event-map.json"
    event_map.write_text(json.dumps({name: "faults_big_name"}))
    env = {"SIDECAR_EVENT_MAP_FILE": str(event_map)}
    async with h.sidecar("8-results", env) as sc, Poller(sc, h) as poll:
        before = sc.rss().get("VmRSS", 0.0)
        calls: list[Call] = []
        for start in range(0, n, 100):
            calls += await asyncio.gather(
                *(
                    deliver(sc.stub, track_event(f"8-{i}", name), 30)
                    for i in range(start, min(n, start + 100))
                )
            )
        after = sc.rss().get("VmRSS", 0.0)
        growth = after - before
        delivered = sum(
            1 for c in calls if c.result and c.result.status == Status.DELIVERY_STATUS_DELIVERED
        )
        batch = delivery_pb2.DeliverBatchRequest(
            events=[track_event(f"8b-{i}", name) for i in range(120)]
        )
        started = time.monotonic()
        try:
            reply = await sc.stub.DeliverBatch(batch, timeout=30)
            got_batch = (
                f"OK, {len(reply.results)} results, reply {reply.ByteSize() / 1e6:.2f} MB "
                f"in {time.monotonic() - started:.2f} s"
            )
            batch_ok = reply.ByteSize() < DEFAULT_RECEIVE_LIMIT and len(reply.results) == 120
        except grpc.aio.AioRpcError as error:
            got_batch = f"rpc {error.code().name}: {(error.details() or '')[:90]}"
            batch_ok = False
    rows.append(
        Row(
            f"8a. {n} Deliver calls with one 60 kB event name (mapped in SIDECAR_EVENT_MAP_FILE)",
            f"{tally(calls)}; RSS {before:.0f} → {after:.0f} MB (+{growth:.0f} MB)",
            poll.stall.text(),
            sc.peak(),
            (await per_event(h.sandbox, [f"8-{i}" for i in range(n)]))[0],
            verdict(growth < RESULTS_RSS_LIMIT and delivered == n),
            f"{n} DELIVERED, RSS growth < {RESULTS_RSS_LIMIT:.0f} MB (results bounded in bytes)",
        )
    )
    rows.append(
        Row(
            "8b. DeliverBatch of 120 such events, default client (4 MiB receive limit)",
            got_batch,
            poll.stall.text(),
            sc.peak(),
            "-",
            verdict(batch_ok),
            "OK, 120 results, reply < 4 MiB",
        )
    )
    return rows


async def case_9(h: Harness) -> list[Row]:
    """After the token is rotated and the old one revoked, later events use the new token."""
    rows = []
    old, new = "ns-old-token-1a2b", "ns-new-token-3c4d"
    window = 12.0
    for label, setup, layout, rotate in (
        ("9a. token file rewritten in place", "file", plain_file, rewrite_in_place),
        ("9b. Kubernetes ..data symlink swap", "k8s", kubelet_volume, kubelet_swap),
    ):
        root = h.workdir / f"secret-{setup}"
        root.mkdir()
        path = layout(root, old)
        async with h.sidecar(f"9-{setup}", namespace_file=path) as sc, Poller(sc, h) as poll:
            first = await deliver(sc.stub, page_event(f"9{setup}-0"), 5)
            rotate(root, new)
            await h.sandbox.fault(kind="token_status", token=old, status=403)
            later: list[Call] = []
            started = time.monotonic()
            recovered = None
            while time.monotonic() - started < window:
                call = await deliver(sc.stub, page_event(f"9{setup}-{len(later) + 1}"), 3)
                later.append(call)
                if (
                    call.result is not None
                    and call.result.status == Status.DELIVERY_STATUS_DELIVERED
                ):
                    recovered = time.monotonic() - started
                    break
                await asyncio.sleep(max(0.0, 1.0 - call.seconds))
            received = await h.sandbox.get("received")
        tokens = [
            r["body"]["properties"].get("token")
            for r in received
            if isinstance(r.get("body"), dict) and isinstance(r["body"].get("properties"), dict)
        ]
        used_new = tokens.count(new)
        end = (
            f"recovered {recovered:.1f} s after the rotation"
            if recovered is not None
            else f"no recovery within {window:.0f} s"
        )
        rows.append(
            Row(
                f"{label}; old token revoked (403)",
                f"before: {one(first)}; after: {tally(later)}; {end}; "
                f"requests with the new token: {used_new}",
                poll.stall.text(),
                sc.peak(),
                "-",
                verdict(recovered is not None and used_new > 0),
                f"later events DELIVERED with the new token within {window:.0f} s, no restart",
            )
        )
    return rows


class SpanSink(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC receiver that keeps every export's bytes, to search them for secrets."""

    def __init__(self) -> None:
        self.exports: list[bytes] = []
        self.spans = 0

    async def Export(  # noqa: N802 - the RPC name comes from the proto
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext,
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.exports.append(request.SerializeToString())
        for resource in request.resource_spans:
            self.spans += sum(len(scope.spans) for scope in resource.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


async def case_10(h: Harness) -> list[Row]:
    """Neither the namespace token nor an email reaches a log line or a span."""
    sink = SpanSink()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    quoted = '"jane q. doe"@example.com'
    in_id = "jane.roe@example.com"
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "SIDECAR_LOG_LEVEL": "DEBUG",
    }
    try:
        async with h.sidecar("10-secrets", env) as sc:
            token_event = page_event("10-token")
            token_event.message_id = f"order-{NAMESPACE}-1"
            quoted_event = page_event("10-quoted")
            quoted_event.traits["email"] = quoted
            quoted_event.context.traits["email"] = quoted
            id_event = page_event("10-id")
            id_event.message_id = f"order-17/{in_id}"
            echo_event = page_event("10-echo")
            echo_event.traits["email"] = EMAIL
            async with Poller(sc, h) as poll:
                calls = [
                    await deliver(sc.stub, token_event, 5),
                    await deliver(sc.stub, quoted_event, 5),
                    await deliver(sc.stub, id_event, 5),
                ]
                # Bluecore echoing the request in an error is how a token usually leaks out.
                echo = {"error": "bad", "echo": {"token": NAMESPACE, "to": [EMAIL, quoted]}}
                await h.sandbox.fault(kind="body", status=400, text=json.dumps(echo))
                calls.append(await deliver(sc.stub, echo_event, 5))
            code = await stop(sc.child)  # flushes the spans
            log = sc.log_text()
        spans = b"\n".join(sink.exports).decode("utf-8", errors="replace")
    finally:
        await server.stop(None)
    needles = {
        "token": NAMESPACE,
        "quoted email": quoted,
        "quoted email's local part": quoted.partition("@")[0].strip('"'),
        "email in message_id": in_id,
        "echoed email": EMAIL,
    }
    # Log lines are JSON and may quote JSON from Bluecore: without the backslashes, an
    # escaped \"quoted\"@address reads as it was sent.
    haystacks = {"log": log.replace("\\", "").lower(), "spans": spans.replace("\\", "").lower()}
    found = []
    for label, needle in needles.items():
        places = [where for where, text in haystacks.items() if needle.lower() in text]
        if places:
            found.append(f"{label} in {' and '.join(places)}")
    lines = len(log.splitlines())
    searched = f"{sink.spans} spans" if sink.spans else "no spans arrived, so spans unchecked"
    got = (
        f"{tally(calls)}; {lines} log lines and {searched}; "
        + ("found: " + ", ".join(found) if found else "found none")
        + f"; exit code {code}"
    )
    return [
        Row(
            "10. token in message_id, quoted-local-part email, email in message_id, "
            "Bluecore echoing both",
            got,
            poll.stall.text(),
            sc.peak(),
            "-",
            verdict(not found),
            "neither token nor email in any stderr log line or exported span",
        )
    ]


CASES: dict[str, Case] = {
    "1": case_1,
    "2": case_2,
    "3": case_3,
    "4": case_4,
    "5": case_5,
    "6": case_6,
    "7": case_7,
    "8": case_8,
    "9": case_9,
    "10": case_10,
}


# ----------------------------------------------------------------------------- the run


def git(*argv: str) -> str:
    try:
        done = subprocess.run(
            ["git", *argv],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


async def run(selected: list[str], harness: Harness) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    errors: list[str] = []
    try:
        for key in selected:
            started = time.monotonic()
            print(f"==> case {key}", flush=True)
            try:
                new = await asyncio.wait_for(CASES[key](harness), CASE_TIMEOUT)
            except TimeoutError:
                new = [Row(f"{key}. (whole case)", f"did not finish within {CASE_TIMEOUT:.0f} s")]
            except Exception as exc:  # noqa: BLE001 - one broken case must not stop the others
                errors.append(f"case {key}: {type(exc).__name__}: {exc}")
                new = [Row(f"{key}. (whole case)", f"harness error: {type(exc).__name__}: {exc}")]
                new[0].verdict = "ERROR"
            for row in new:
                print(f"    {row.verdict}  {row.case}: {row.got}", flush=True)
            print(f"    ({time.monotonic() - started:.0f} s)", flush=True)
            rows += new
    finally:
        await harness.sandbox.close()
    return rows, errors


README_BEGIN = "<!-- faults:begin (written by make faults) -->"
README_END = "<!-- faults:end -->"


def report(rows: list[Row], harness: Harness, seconds: float, started: dt.datetime) -> str:
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "server")
    passed = sum(1 for row in rows if row.verdict == "PASS")
    counts = ", ".join(f"{label}: {value}" for label, value in harness.counts_used.items())
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return "\n".join(
        [
            f"Measured {started:%Y-%m-%d %H:%M} UTC at commit `{commit}`"
            + (" (with uncommitted changes under server/)" if dirty else "")
            + f" by `make faults` in {seconds:.0f} s on {os.cpu_count()} CPUs"
            f" (load average at the end {load}). {passed} of {len(rows)} rows pass.",
            "",
            markdown_table(rows),
            "",
            f"Counts used (scale {harness.scale:g}): {counts}.",
            f"Event-loop stall is the longest `/healthz` wait seen by a separate process "
            f"probing every 50 ms; PASS for a single event or answer needs < {STALL_LIMIT} s. "
            "Peak RSS is the sidecar's `VmHWM`. Upstream requests per event come from the "
            "sandbox's counts per `distinct_id` (mean, and the most any one event got).",
        ]
    )


def update_readme(readme: Path, text: str) -> None:
    content = readme.read_text()
    begin, end = content.find(README_BEGIN), content.find(README_END)
    if begin < 0 or end < begin:
        raise HarnessError(f"{readme} has no {README_BEGIN} ... {README_END} block")
    content = content[: begin + len(README_BEGIN)] + "\n" + text + "\n" + content[end:]
    readme.write_text(content)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma list of cases, e.g. 1,5 (default all)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the call counts")
    parser.add_argument("--rss-limit", type=float, default=3000.0, help="MB; kill a sidecar above")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability-last-run.md")
    parser.add_argument("--readme", type=Path, help="also replace the faults block of this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    selected = [c.strip() for c in args.only.split(",") if c.strip()] or list(CASES)
    unknown = [c for c in selected if c not in CASES]
    if unknown:
        parser.error(f"unknown cases: {', '.join(unknown)} (known: {', '.join(CASES)})")

    workdir = Path(tempfile.mkdtemp(prefix="faults-"))
    started_at = dt.datetime.now(dt.UTC)
    started = time.monotonic()
    harness = Harness(workdir, args.scale, args.rss_limit)
    try:
        rows, errors = asyncio.run(run(selected, harness))
    except HarnessError as exc:
        print(f"faults: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    text = report(rows, harness, time.monotonic() - started, started_at)
    print()
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("# Reliability: the last `make faults` run\n\n" + text + "\n")
    print(f"\nwritten to {args.out}")
    if args.readme is not None:
        try:
            update_readme(args.readme, text)
        except (HarnessError, OSError) as exc:
            errors.append(str(exc))
        else:
            print(f"and to the Reliability section of {args.readme}")
    for error in errors:
        print(f"faults: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
