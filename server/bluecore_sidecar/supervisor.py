"""``SIDECAR_WORKERS=N`` above 1: one supervisor, N worker processes behind one gRPC port.

The supervisor reserves the gRPC port (port 0: a free one, chosen once and kept for restarts),
starts each worker as a fresh interpreter (``python -m bluecore_sidecar serve --worker K``;
grpc does not survive a fork) and owns the ops port. Every worker binds the same address with
``SO_REUSEPORT``, so the kernel spreads new connections over them; a worker serves its own
``/metrics`` and ``/readyz`` on a free loopback port, which it reports on its stdout, and the
supervisor answers ``/healthz``, ``/readyz`` and ``/metrics`` for all of them (the metrics
summed by :mod:`aggregate`).

Lifecycle: SIGTERM or SIGINT makes ``/readyz`` answer 503 and is passed to every worker, which
drains with the one configured grace; the supervisor exits 0 when every worker did, otherwise
with the worst code. A worker that dies on its own is logged at ERROR and started again after
a backoff; more than :data:`MAX_RESTARTS` deaths within :data:`RESTART_WINDOW` and the
supervisor drains the others and exits 1, so that Kubernetes sees a failing container. A
worker whose supervisor disappears (its stdin closes) drains and exits too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from . import aggregate, opsweb
from .config import Settings, split_address
from .errors import ConfigError
from .telemetry import LOGGER_NAME

if TYPE_CHECKING:
    from .app import Sidecar

log = logging.getLogger(LOGGER_NAME)

#: The first restart waits this long (seconds); each further recent death doubles it.
RESTART_BACKOFF = 0.5
RESTART_BACKOFF_CAP = 10.0
#: More deaths than this within :data:`RESTART_WINDOW` seconds and the supervisor gives up.
MAX_RESTARTS = 5
RESTART_WINDOW = 300.0
#: How long a worker may take from its start to serving (opening a large queue included).
START_TIMEOUT = 60.0
#: How often worker metrics are read even when nobody scrapes: what a crash can lose.
SCRAPE_INTERVAL = 5.0
#: Beyond the grace: time for a worker to flush its spans and exit after draining.
EXIT_MARGIN = 10.0
#: How long the supervisor waits for a worker's /readyz or /metrics.
PROBE_TIMEOUT = 2.0


class WorkerFailed(Exception):
    """A worker ended before it served."""


@dataclasses.dataclass(slots=True)
class Worker:
    """One worker process and what the supervisor knows of it."""

    number: int
    process: asyncio.subprocess.Process | None = None
    ops_url: str = ""
    serving: bool = False
    exit_code: int | None = None
    last: aggregate.Totals = dataclasses.field(default_factory=dict)
    """Its metrics at the last successful scrape."""

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None


def reserve(address: str, variable: str = "SIDECAR_GRPC_ADDRESS") -> tuple[socket.socket, str]:
    """Reserve ``address``'s port for the workers; returns the socket and ``HOST:PORT``.

    The socket is bound with ``SO_REUSEPORT`` and never listens: it takes no connections, but
    keeps the port (a free one, for port 0) ours while workers come and go. A port that
    another process listens on is refused first, as a single sidecar's bind would be:
    ``SO_REUSEPORT`` alone would quietly join that process's group.
    """
    host, port = split_address(address)
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            raise ConfigError(
                variable, f"{address}: cannot listen there ({exc.strerror})"
            ) from None
        chosen = int(probe.getsockname()[1])
    held = socket.socket(family, socket.SOCK_STREAM)
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    held.bind((sockaddr[0], chosen, *sockaddr[2:]))
    shown = f"[{host}]" if ":" in host else host
    return held, f"{shown}:{chosen}"


def cpu_limit(cpu_max: str | None, affinity: int) -> float:
    """Cores this process may use: the cgroup v2 quota (``cpu.max``: ``QUOTA PERIOD`` or
    ``max PERIOD``, a container's CPU limit) when set, else the CPUs it may run on."""
    if cpu_max:
        quota, _, period = cpu_max.strip().partition(" ")
        with contextlib.suppress(ValueError, ZeroDivisionError):
            if quota != "max":
                return min(float(affinity), int(quota) / int(period))
    return float(affinity)


def _cpu_max() -> str | None:
    try:
        return Path("/sys/fs/cgroup/cpu.max").read_text(encoding="ascii")
    except OSError:
        return None


def restart_delay(recent_deaths: int) -> float | None:
    """Seconds to wait before restarting a worker, given the deaths within
    :data:`RESTART_WINDOW` (this one included); None past :data:`MAX_RESTARTS`."""
    if recent_deaths > MAX_RESTARTS:
        return None
    return float(min(RESTART_BACKOFF_CAP, RESTART_BACKOFF * 2.0 ** (recent_deaths - 1)))


def exit_code(codes: list[int | None]) -> int:
    """The worst of the workers' exit codes; a death by signal S counts as 128 + S."""
    # None: the worker never ran to an exit of its own, which counts as a failure (1).
    return max((1 if c is None else 128 - c if c < 0 else c for c in codes), default=0)


class Supervisor:
    """Starts, watches, restarts and stops the workers; serves the ops port for all of them."""

    def __init__(
        self,
        settings: Settings,
        env: Mapping[str, str],
        grpc_address: str,
        http_address: str = "",
    ) -> None:
        self.settings = settings
        self.grpc_address = grpc_address
        self.http_address = http_address
        """The JSON door's reserved address; "" when the door is off."""
        self.workers = [Worker(number) for number in range(1, settings.workers + 1)]
        self.ops_url = ""
        self.draining = False
        self.gave_up = False
        self.restarts = 0
        self._env = dict(env)
        self._retired: aggregate.Totals = {}
        self._deaths: collections.deque[float] = collections.deque()
        self._stop = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- processes ---------------------------------------------------------------------------

    async def start(self, worker: Worker) -> None:
        """Start ``worker`` and wait until it serves; :class:`WorkerFailed` if it ends first."""
        env = dict(self._env)
        env["SIDECAR_GRPC_ADDRESS"] = self.grpc_address
        if self.http_address:
            env["SIDECAR_HTTP_ADDRESS"] = self.http_address
        env["SIDECAR_OPS_ADDRESS"] = "127.0.0.1:0"  # its own, private; ours is the public one
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bluecore_sidecar",
            "serve",
            "--worker",
            str(worker.number),
            env=env,
            stdin=asyncio.subprocess.PIPE,  # never written: it closes when we are gone
            stdout=asyncio.subprocess.PIPE,
        )
        worker.process, worker.exit_code, worker.serving = process, None, False
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
        except TimeoutError:
            process.kill()
            line = b""
        try:
            worker.ops_url = str(json.loads(line)["ops_url"])
        except (ValueError, KeyError, TypeError):
            # No hello (it ended, or hung) or a garbled one: without its ops port we cannot
            # watch it, so it must not serve unwatched.
            if process.returncode is None:
                process.kill()
            worker.exit_code = await process.wait()
            raise WorkerFailed(
                f"worker {worker.number} ended before serving (exit code {worker.exit_code})"
            ) from None
        worker.serving = True
        self._spawn(_copy_rest(process.stdout))
        log.info(
            "worker serving",
            extra={"fields": {"worker": worker.number, "pid": process.pid, "ops": worker.ops_url}},
        )

    async def watch(self, worker: Worker) -> None:
        """Wait for ``worker`` to end; restart it unless draining; give up when it keeps dying."""
        while worker.process is not None:
            code = await worker.process.wait()
            worker.serving, worker.exit_code = False, code
            # Its counts so far stay in the sum, so that totals never fall back.
            self._retired = aggregate.merge([self._retired, aggregate.monotonic(worker.last)])
            worker.last = {}
            if self.draining:
                return
            log.error(
                "worker exited unexpectedly",
                extra={"fields": {"worker": worker.number, "pid": worker.pid, "exit_code": code}},
            )
            delay = self._next_restart()
            if delay is None:
                log.error(
                    "workers keep dying: giving up",
                    extra={"fields": {"deaths": len(self._deaths), "window_s": RESTART_WINDOW}},
                )
                self.gave_up = True
                self._stop.set()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
                return  # stopped while waiting to restart
            self.restarts += 1
            try:
                await self.start(worker)
            except (WorkerFailed, OSError) as exc:
                log.error("restarting a worker failed", extra={"fields": {"error": str(exc)}})

    def _next_restart(self) -> float | None:
        """Seconds to wait before the next restart, or None past the restart budget."""
        now = asyncio.get_running_loop().time()
        self._deaths.append(now)
        while self._deaths and self._deaths[0] < now - RESTART_WINDOW:
            self._deaths.popleft()
        return restart_delay(len(self._deaths))

    async def drain(self) -> None:
        """Pass SIGTERM to every worker; kill those still running after the grace."""
        self.draining = True
        live = [w for w in self.workers if w.alive]
        log.info("draining workers", extra={"fields": {"workers": len(live)}})
        for worker in live:
            assert worker.process is not None
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        limit = self.settings.shutdown_grace.total_seconds() + EXIT_MARGIN
        waits = [asyncio.ensure_future(w.process.wait()) for w in live if w.process is not None]
        if waits:
            await asyncio.wait(waits, timeout=limit)
        for worker in live:
            if worker.alive:
                assert worker.process is not None
                log.error(
                    "worker still running after the grace: killed",
                    extra={"fields": {"worker": worker.number, "pid": worker.pid}},
                )
                worker.process.kill()
                worker.exit_code = await worker.process.wait()
            elif worker.process is not None:
                worker.exit_code = worker.process.returncode

    async def run(self) -> int:
        """Start every worker, serve until a signal (or giving up), drain, return the code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        results = await asyncio.gather(
            *(self.start(w) for w in self.workers), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            for exc in failed:
                log.error("a worker did not start", extra={"fields": {"error": str(exc)}})
            await self.drain()
            return max(1, exit_code([w.exit_code for w in self.workers]))
        log.info(
            "serving",
            extra={
                "fields": {
                    "grpc_address": self.grpc_address,
                    "http_address": self.http_address,
                    "ops_url": self.ops_url,
                    "workers": len(self.workers),
                    "pids": [w.pid for w in self.workers],
                }
            },
        )
        watchers = [self._spawn(self.watch(w)) for w in self.workers]
        self._spawn(self._scrape_forever())
        await self._stop.wait()
        if not self.gave_up:
            log.info("signal received, shutting down")
        await self.drain()
        await asyncio.gather(*watchers, return_exceptions=True)
        code = exit_code([w.exit_code for w in self.workers])
        return max(code, 1) if self.gave_up else code

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- ops port ----------------------------------------------------------------------------

    async def _get(self, worker: Worker, path: str) -> tuple[int, str]:
        assert self._session is not None
        async with self._session.get(
            worker.ops_url + path, timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
        ) as response:
            return response.status, await response.text()

    async def scrape(self) -> None:
        """Read every serving worker's metrics into ``last`` (a failed read keeps the old)."""

        async def one(worker: Worker) -> None:
            try:
                status, text = await self._get(worker, "/metrics")
            except (aiohttp.ClientError, TimeoutError):
                return
            if status == 200 and worker.serving:
                worker.last = aggregate.parse(text)

        await asyncio.gather(*(one(w) for w in self.workers if w.serving))

    async def _scrape_forever(self) -> None:
        while not self.draining:
            await asyncio.sleep(SCRAPE_INTERVAL)
            await self.scrape()

    def metrics(self) -> bytes:
        """Every worker's metrics summed, the dead ones' counts included, plus our own."""
        own: aggregate.Totals = {
            "bluecore_sidecar_workers": aggregate.Family(
                "gauge",
                "Worker processes configured (SIDECAR_WORKERS).",
                {("bluecore_sidecar_workers", ()): float(len(self.workers))},
            ),
            "bluecore_sidecar_workers_serving": aggregate.Family(
                "gauge",
                "Worker processes serving now.",
                {("bluecore_sidecar_workers_serving", ()): float(self._serving())},
            ),
            "bluecore_sidecar_worker_restarts": aggregate.Family(
                "counter",
                "Workers started again after they exited on their own.",
                {("bluecore_sidecar_worker_restarts_total", ()): float(self.restarts)},
            ),
        }
        parts = [self._retired, *(w.last for w in self.workers), own]
        return aggregate.render(aggregate.merge(parts))

    def _serving(self) -> int:
        return sum(w.serving for w in self.workers)

    def _states(self) -> dict[str, str]:
        return {
            str(w.number): "serving" if w.serving else ("starting" if w.alive else "down")
            for w in self.workers
        }

    async def serve_ops(self, stack: contextlib.AsyncExitStack) -> str:
        """Serve /healthz, /readyz and /metrics on ``SIDECAR_OPS_ADDRESS``; returns its URL."""

        async def healthz(_: web.Request) -> web.Response:
            ok = not self.gave_up and (self.draining or self._serving() == len(self.workers))
            body = {"status": "ok" if ok else "worker down", "workers": self._states()}
            return web.json_response(body, status=200 if ok else 503)

        async def readyz(_: web.Request) -> web.Response:
            if self.draining:
                return web.json_response({"status": "draining"}, status=503)

            async def ready(worker: Worker) -> bool:
                if not worker.serving:
                    return False
                try:
                    status, _ = await self._get(worker, "/readyz")
                except (aiohttp.ClientError, TimeoutError):
                    return False
                return status == 200

            answers = await asyncio.gather(*(ready(w) for w in self.workers))
            if all(answers):
                return web.json_response({"status": "ready", "workers": self._states()})
            states = {
                str(w.number): "ready" if ok else "not ready"
                for w, ok in zip(self.workers, answers, strict=True)
            }
            return web.json_response({"status": "not ready", "workers": states}, status=503)

        async def metrics(_: web.Request) -> web.Response:
            await self.scrape()
            return web.Response(body=self.metrics(), headers={"Content-Type": CONTENT_TYPE_LATEST})

        self._session = aiohttp.ClientSession()
        stack.push_async_callback(self._session.close)
        return await opsweb.serve(
            stack, self.settings.ops_address, healthz=healthz, readyz=readyz, metrics=metrics
        )


async def _copy_rest(stream: asyncio.StreamReader) -> None:
    """Pass on whatever a worker writes to stdout after its hello line."""
    while line := await stream.readline():
        sys.stdout.buffer.write(line)
        sys.stdout.flush()


async def supervise(settings: Settings, env: Mapping[str, str]) -> int:
    """Run ``settings.workers`` workers until SIGTERM or SIGINT; return the exit code."""
    cores = cpu_limit(_cpu_max(), len(os.sched_getaffinity(0)))
    if settings.workers > cores:
        # Each worker uses up to one core: beyond the limit they only share it, and throttle.
        log.warning(
            "more workers than CPUs: raise the CPU limit with SIDECAR_WORKERS",
            extra={"fields": {"workers": settings.workers, "cpus": round(cores, 2)}},
        )
    with contextlib.ExitStack() as reserved:
        held, grpc_address = reserve(settings.grpc_address)
        reserved.enter_context(held)
        http_address = ""
        if settings.http_address:
            held, http_address = reserve(settings.http_address, "SIDECAR_HTTP_ADDRESS")
            reserved.enter_context(held)
        supervisor = Supervisor(settings, env, grpc_address, http_address)
        async with contextlib.AsyncExitStack() as stack:
            supervisor.ops_url = await supervisor.serve_ops(stack)
            code = await supervisor.run()
    log.info("stopped", extra={"fields": {"exit_code": code}})
    return code


async def run_worker(settings: Settings, env: Mapping[str, str], number: int) -> int:
    """Serve as worker ``number``: report where on stdout, stop when stdin closes."""
    # Here, not at the top: the supervisor itself runs no sidecar and stays small.
    from .app import serve  # noqa: PLC0415

    watching: list[asyncio.Task[None]] = []

    async def announce(sidecar: Sidecar, stop: asyncio.Event) -> None:
        hello = {"worker": number, "grpc_address": sidecar.grpc_address, "ops_url": sidecar.ops_url}
        sys.stdout.write(json.dumps(hello) + "\n")
        sys.stdout.flush()
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        watching.append(asyncio.ensure_future(_stop_at_eof(reader, stop)))

    return await serve(settings, env, on_serving=announce)


async def _stop_at_eof(reader: asyncio.StreamReader, stop: asyncio.Event) -> None:
    """The supervisor holds our stdin open; EOF means it is gone: drain rather than linger."""
    while await reader.read(4096):
        pass
    if not stop.is_set():
        log.error("the supervisor is gone: shutting down")
        stop.set()


__all__ = [
    "MAX_RESTARTS",
    "Supervisor",
    "cpu_limit",
    "exit_code",
    "reserve",
    "restart_delay",
    "run_worker",
    "supervise",
]
