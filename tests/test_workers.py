"""``SIDECAR_WORKERS=2`` as real processes: one port, summed metrics, drain, a killed worker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from bluecore_sidecar import aggregate
from bluecore_sidecar.errors import ConfigError
from bluecore_sidecar.supervisor import (
    MAX_RESTARTS,
    cpu_limit,
    exit_code,
    reserve,
    restart_delay,
)
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from google.protobuf import json_format

from .conftest import EMAIL, NAMESPACE, eventually, make_event
from .processes import serve_env

Status = delivery_pb2.DeliveryStatus
DELIVERIES = "bluecore_sidecar_deliveries_total"
#: New connections tried before giving up on seeing both workers. The kernel picks a
#: listener per connection by hashing its addresses: all on one of two has odds 2**-63.
MAX_CONNECTIONS = 64

pytestmark = pytest.mark.slow


class Supervised:
    """A running supervisor: its process and every JSON line it and its workers wrote."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while raw := await self.process.stderr.readline():
            entry = json.loads(raw)
            async with self._changed:
                self.lines.append(entry)
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def line(self, match: Callable[[dict[str, Any]], bool], after: int = 0) -> dict[str, Any]:
        """The first line from index ``after`` on that ``match`` accepts; waits for it."""
        async with asyncio.timeout(30), self._changed:
            while True:
                for entry in self.lines[after:]:
                    if match(entry):
                        return entry
                if self._reader.done():
                    raise AssertionError(f"no such line; the output ended: {self.lines}")
                await self._changed.wait()

    def outcome_worker(self, message_id: str, status: str = "DELIVERED") -> int | None:
        """The worker that logged ``message_id``'s outcome ``status``."""
        for entry in self.lines:
            if (
                entry.get("message") == "delivery outcome"
                and entry["message_id"] == message_id
                and entry["status"] == status
            ):
                return int(entry["worker"])
        return None

    async def finish(self) -> int:
        async with asyncio.timeout(30):
            code = await self.process.wait()
            await self._reader
        return code


@contextlib.asynccontextmanager
async def supervise(**extra: str) -> AsyncIterator[tuple[Supervised, dict[str, Any]]]:
    """Start ``serve`` with two workers; yields it and its own "serving" line."""
    env = serve_env(
        extra.pop("api_url"), BLUECORE_NAMESPACE=NAMESPACE, SIDECAR_WORKERS="2", **extra
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bluecore_sidecar",
        "serve",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    running = Supervised(process)
    try:
        serving = await running.line(lambda e: e["message"] == "serving" and "worker" not in e)
        yield running, serving
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        with contextlib.suppress(Exception):
            await running._reader


def new_connection(address: str) -> grpc.aio.Channel:
    """A channel with a TCP connection of its own (grpc shares them between channels)."""
    return grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


async def deliver(
    channel: grpc.aio.Channel, message_id: str, **fields: Any
) -> delivery_pb2.DeliveryResult:
    stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
    reply = await stub.Deliver(
        delivery_pb2.DeliverRequest(event=make_event(messageId=message_id, **fields)), timeout=10
    )
    return reply.result


async def one_channel_per_worker(
    running: Supervised, address: str, stack: contextlib.AsyncExitStack, answer: str = "DELIVERED"
) -> dict[int, grpc.aio.Channel]:
    """Open connections until each worker has answered on one; returns one per worker."""
    found: dict[int, grpc.aio.Channel] = {}
    for number in range(MAX_CONNECTIONS):
        channel = await stack.enter_async_context(new_connection(address))
        probe = f"probe-{number}"
        result = await deliver(channel, probe)
        assert Status.Name(result.status) == f"DELIVERY_STATUS_{answer}"
        await running.line(lambda e, p=probe: e.get("message_id") == p and e["status"] == answer)
        worker = running.outcome_worker(probe, answer)
        assert worker is not None
        found.setdefault(worker, channel)
        if len(found) == 2:
            return found
    raise AssertionError(f"{MAX_CONNECTIONS} connections all reached worker(s) {sorted(found)}")


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def delivered_total(ops_url: str) -> float:
    status, text = await get(ops_url + "/metrics")
    assert status == 200
    family = aggregate.parse(text)["bluecore_sidecar_deliveries"]
    return sum(v for (name, _), v in family.samples.items() if name == DELIVERIES)


async def test_two_workers_share_one_port_the_ops_port_sums_them_and_sigterm_drains_both(
    sandbox,
):
    """Both workers answer on the one port; /metrics counts every delivery of both; SIGTERM
    lets a call in flight on each worker finish, and everything exits 0."""
    async with supervise(api_url=sandbox.url) as (running, serving):
        address, ops_url = serving["grpc_address"], serving["ops_url"]
        assert not address.endswith(":0")
        assert (await get(ops_url + "/healthz"))[0] == 200
        status, body = await get(ops_url + "/readyz")
        assert (status, json.loads(body)["status"]) == (200, "ready")
        async with contextlib.AsyncExitStack() as stack:
            channels = await one_channel_per_worker(running, address, stack)
            probes = len(sandbox.received)
            assert await delivered_total(ops_url) == probes

            sandbox.delay(1.5)
            in_flight = {
                worker: asyncio.ensure_future(deliver(channel, f"slow-{worker}"))
                for worker, channel in channels.items()
            }
            await eventually(lambda: len(sandbox.received) == probes + 2, timeout=10)
            mark = len(running.lines)
            running.process.send_signal(signal.SIGTERM)
            for worker in (1, 2):
                await running.line(
                    lambda e, w=worker: e.get("worker") == w and e["message"] == "draining", mark
                )
            results = {worker: await call for worker, call in in_flight.items()}
        assert all(r.status == Status.DELIVERY_STATUS_DELIVERED for r in results.values())
        assert await running.finish() == 0
    assert {running.outcome_worker(f"slow-{w}") for w in (1, 2)} == {1, 2}
    stopped = [e for e in running.lines if e["message"] == "stopped"]
    assert sorted(e.get("worker", 0) for e in stopped) == [0, 1, 2]
    assert running.lines[-1] == {**running.lines[-1], "message": "stopped", "exit_code": 0}
    text = json.dumps(running.lines)
    assert NAMESPACE not in text
    assert EMAIL not in text


async def test_the_json_door_is_shared_by_the_workers_too(sandbox):
    """SIDECAR_HTTP_ADDRESS on port 0 becomes one address that both workers answer on."""
    async with supervise(api_url=sandbox.url) as (running, serving):
        door = serving["http_address"]
        assert not door.endswith(":0")
        seen: set[int] = set()
        for number in range(MAX_CONNECTIONS):
            message_id = f"door-{number}"
            event = json_format.MessageToDict(make_event(messageId=message_id))
            async with (
                aiohttp.ClientSession() as session,  # a session of its own: a new connection
                session.post(f"http://{door}/v1/events", json=event) as response,
            ):
                assert response.status == 200
                assert (await response.json())["status"] == "DELIVERY_STATUS_DELIVERED"
            await running.line(lambda e, m=message_id: e.get("message_id") == m)
            worker = running.outcome_worker(message_id)
            assert worker is not None
            seen.add(worker)
            if seen == {1, 2}:
                break
        assert seen == {1, 2}
        running.process.send_signal(signal.SIGTERM)
        assert await running.finish() == 0


async def test_a_killed_worker_is_logged_restarted_on_the_same_port_and_its_counts_stay(
    sandbox,
):
    """SIGKILL of one worker: an ERROR line, a new worker on the same address, /metrics
    never goes below what it showed, and the supervisor still exits 0 on SIGTERM."""
    async with supervise(api_url=sandbox.url) as (running, serving):
        address, ops_url = serving["grpc_address"], serving["ops_url"]
        async with contextlib.AsyncExitStack() as stack:
            await one_channel_per_worker(running, address, stack)
        before = await delivered_total(ops_url)  # this scrape is what the sum keeps
        first = await running.line(lambda e: e["message"] == "worker serving" and e["worker"] == 1)
        mark = len(running.lines)
        os.kill(first["pid"], signal.SIGKILL)
        died = await running.line(lambda e: e["message"] == "worker exited unexpectedly", mark)
        assert (died["level"], died["worker"], died["exit_code"]) == ("ERROR", 1, -signal.SIGKILL)
        again = await running.line(lambda e: e["message"] == "worker serving", mark)
        assert again["worker"] == 1
        assert again["pid"] != first["pid"]
        restarted = await running.line(
            lambda e: e["message"] == "serving" and e.get("worker") == 1, mark
        )
        assert restarted["grpc_address"] == address

        assert await delivered_total(ops_url) >= before >= 2
        _, text = await get(ops_url + "/metrics")
        restarts = aggregate.parse(text)["bluecore_sidecar_worker_restarts"]
        assert list(restarts.samples.values()) == [1.0]
        async with new_connection(address) as channel:
            assert (await deliver(channel, "after")).status == Status.DELIVERY_STATUS_DELIVERED
        assert await delivered_total(ops_url) >= before + 1
        running.process.send_signal(signal.SIGTERM)
        assert await running.finish() == 0


async def test_with_the_durable_queue_an_id_queued_through_one_worker_is_known_to_the_other(
    sandbox, tmp_path
):
    """All workers share one queue file: the same message id through the second worker is
    not queued again, and Bluecore receives it once. (It needs app.py to open the queue
    with ``shared=settings.workers > 1``: otherwise the second worker cannot open it.)"""
    async with supervise(
        api_url=sandbox.url,
        SIDECAR_QUEUE_PATH=str(tmp_path / "queue.db"),
        SIDECAR_DELIVERY_MODE="enqueue",
    ) as (running, serving):
        address, ops_url = serving["grpc_address"], serving["ops_url"]
        async with contextlib.AsyncExitStack() as stack:
            channels = await one_channel_per_worker(running, address, stack, "QUEUED")
            once = {"properties": {"product_id": "ONLY-ONCE", "price": 1}}
            first = await deliver(channels[1], "same-id", **once)
            again = await deliver(channels[2], "same-id", **once)
        assert first.status == Status.DELIVERY_STATUS_QUEUED
        assert again.status in (
            Status.DELIVERY_STATUS_QUEUED,  # still queued: the same answer again
            Status.DELIVERY_STATUS_SKIPPED_DUPLICATE,  # delivered meanwhile
        )
        # Outcome lines wait up to LOG_FLUSH_SECONDS before they are written.
        await running.line(lambda e: e.get("message_id") == "same-id" and e["status"] == "QUEUED")
        assert running.outcome_worker("same-id", "QUEUED") == 1

        # Wait until the queue is empty: every queued event was sent.
        async def queue_empty() -> bool:
            _, text = await get(ops_url + "/metrics")
            depth = aggregate.parse(text)["bluecore_sidecar_queue_depth"].samples
            return list(depth.values()) == [0.0]

        await eventually(queue_empty, timeout=30, interval=0.1)
        running.process.send_signal(signal.SIGTERM)
        assert await running.finish() == 0
    sent = [r for r in sandbox.received if "ONLY-ONCE" in json.dumps(r.body)]
    assert len(sent) == 1


async def test_workers_shut_down_when_the_supervisor_is_killed(sandbox):
    """A supervisor that dies without draining leaves no worker serving behind it."""
    async with supervise(api_url=sandbox.url) as (running, serving):
        pids = serving["pids"]
        running.process.kill()
        assert await running.finish() == -signal.SIGKILL
        for worker in (1, 2):
            await running.line(
                lambda e, w=worker: e.get("worker") == w and e["message"] == "stopped"
            )
    gone = await asyncio.gather(*(wait_gone(pid) for pid in pids))
    assert gone == [True, True]
    errors = [e for e in running.lines if e["message"] == "the supervisor is gone: shutting down"]
    assert sorted(e["worker"] for e in errors) == [1, 2]


async def wait_gone(pid: int) -> bool:
    """Whether ``pid`` ends (or is a zombie: it exited, nobody reaped it) within 30 s."""

    def gone() -> bool:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        return stat.rpartition(")")[2].split()[0] == "Z"

    return await eventually(gone, timeout=30, interval=0.05, what=f"pid {pid} gone")


def test_the_exit_code_is_the_worst_workers():
    assert exit_code([0, 0]) == 0
    assert exit_code([0, 2]) == 2
    assert exit_code([-signal.SIGKILL, 2]) == 128 + signal.SIGKILL
    assert exit_code([0, None]) == 1


@pytest.mark.parametrize(
    ("cpu_max", "affinity", "cores"),
    [
        ("200000 100000\n", 8, 2.0),  # a container limit of 2 CPUs
        ("50000 100000", 8, 0.5),
        ("max 100000\n", 4, 4.0),  # no limit: the CPUs it may run on
        (None, 2, 2.0),  # no cgroup v2
        ("400000 100000", 2, 2.0),  # a quota above the CPUs there are
    ],
)
def test_the_cpus_a_worker_count_is_checked_against(cpu_max, affinity, cores):
    assert cpu_limit(cpu_max, affinity) == cores


def test_restarts_back_off_and_stop_after_the_budget():
    delays = [restart_delay(n) for n in range(1, MAX_RESTARTS + 2)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, None]


def test_a_port_another_process_listens_on_is_refused_not_shared():
    """SO_REUSEPORT alone would join the other listener's group, if it had the option set."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(ConfigError, match="SIDECAR_GRPC_ADDRESS"):
            reserve(f"127.0.0.1:{port}")


def test_port_0_is_reserved_as_one_free_port_that_workers_can_share():
    held, address = reserve("127.0.0.1:0")
    with held:
        host, port = address.rsplit(":", 1)
        assert host == "127.0.0.1"
        assert int(port) > 0
        with socket.socket() as worker:  # what grpc does in each worker
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            worker.bind(("127.0.0.1", int(port)))
            worker.listen()
        with socket.socket() as stranger, pytest.raises(OSError, match="in use"):
            stranger.bind(("127.0.0.1", int(port)))


def exposition(text: str) -> aggregate.Totals:
    return aggregate.parse(text)


# In the layout prometheus_client writes: `_created` is a gauge family of its own.
A = """# TYPE c_total counter
c_total{k="x"} 3.0
# TYPE c_created gauge
c_created{k="x"} 200.0
# TYPE h histogram
h_bucket{le="0.1"} 1.0
h_bucket{le="+Inf"} 2.0
h_count 2.0
h_sum 0.3
# TYPE g gauge
g 2.0
# TYPE bluecore_sidecar_queue_depth gauge
bluecore_sidecar_queue_depth 7.0
"""
B = """# TYPE c_total counter
c_total{k="x"} 4.0
c_total{k="y"} 1.0
# TYPE c_created gauge
c_created{k="x"} 100.0
# TYPE h histogram
h_bucket{le="0.1"} 0.0
h_bucket{le="+Inf"} 1.0
h_count 1.0
h_sum 0.5
# TYPE g gauge
g 5.0
# TYPE bluecore_sidecar_queue_depth gauge
bluecore_sidecar_queue_depth 7.0
"""


def test_counters_and_histograms_add_up_created_is_the_earliest_shared_gauges_are_not_summed():
    merged = aggregate.merge([exposition(A), exposition(B)])
    assert merged["c"].samples == {
        ("c_total", (("k", "x"),)): 7.0,
        ("c_total", (("k", "y"),)): 1.0,
    }
    assert merged["c_created"].samples == {("c_created", (("k", "x"),)): 100.0}
    assert merged["h"].samples == {
        ("h_bucket", (("le", "0.1"),)): 1.0,
        ("h_bucket", (("le", "+Inf"),)): 3.0,
        ("h_count", ()): 3.0,
        ("h_sum", ()): 0.8,
    }
    assert merged["g"].samples == {("g", ()): 7.0}
    assert merged["bluecore_sidecar_queue_depth"].samples == {
        ("bluecore_sidecar_queue_depth", ()): 7.0
    }
    # What is served parses back to the same numbers.
    assert aggregate.parse(aggregate.render(merged).decode())["c"].samples == merged["c"].samples


def test_a_dead_workers_counts_are_kept_but_not_its_gauges():
    kept = aggregate.monotonic(exposition(A))
    assert set(kept) == {"c", "h"}
    after = aggregate.merge([kept, exposition(B)])
    assert after["c"].samples[("c_total", (("k", "x"),))] == 7.0
    assert after["g"].samples == {("g", ()): 5.0}
