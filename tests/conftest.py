"""Shared fixtures: the real sandbox and the real sidecar on port 0, and a generated client.

The sidecar is started through :func:`bluecore_sidecar.app.running_sidecar`, the same factory
``bluecore-sidecar serve`` uses; only the addresses and the upstream URL differ.

There is one of each helper, so the tests read as one spec: the event builder
(:func:`make_event`, over :func:`event_json`; :func:`example_event` for ``examples/events``),
the poller (:func:`eventually`), the ports (``free_port`` for a child process, the
``refused_port`` fixture for a connection that must fail), the ``sandbox`` (its token rule is
the ``sandbox_tokens`` fixture) and the sidecar (``start_sidecar``/``sidecar``, with ``stub`` or
``connect`` for a client). test_tracing*.py call ``running_sidecar`` themselves: they assert on
what is exported when a sidecar stops, which the fixture does only at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import importlib.util
import inspect
import io
import json
import logging
import os
import socket
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import grpc
import pytest
from aiohttp import web

# The one free-port helper, for child processes (demo, bench, e2e and the tests share it).
from bluecore_devtools.localrun import free_port  # noqa: F401 - re-exported for the tests
from bluecore_devtools.sandbox import BluecoreSandbox, run_sandbox
from bluecore_sidecar import telemetry
from bluecore_sidecar.app import Sidecar, running_sidecar
from bluecore_sidecar.config import Settings
from bluecore_sidecar.retry import RetryPolicy
from bluecore_sidecar.telemetry import configure_logging
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from datafly.bluecore.v1.delivery_pb2 import DataflyEvent
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

NAMESPACE = "test-namespace-s3cr3t"
EMAIL = "jane@example.com"
T = TypeVar("T")


SEED_BODY_FILE = Path(__file__).resolve().parents[1] / "examples/bluecore/order_completed.body.json"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--replay",
        action="store_true",
        help="also run the Dockerfile replay (builds a venv from PyPI; `make image-replay`)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave the replay tests out unless asked for: deselected, so nothing reads as skipped."""
    if config.getoption("--replay"):
        return
    kept = [item for item in items if item.get_closest_marker("replay") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


@pytest.fixture
def process_env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Mapping[str, str]]:
    """Set variables in the process environment for one test; returns that environment.

    The OpenTelemetry SDK reads its ``OTEL_*`` variables from ``os.environ`` itself, so tests
    of those settings put them there, and pass the same mapping to the sidecar.
    """

    def put(**values: str) -> Mapping[str, str]:
        for name in [n for n in os.environ if n.startswith("OTEL_")]:
            monkeypatch.delenv(name)
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        return os.environ

    return put


def seed_purchase_body(token: str) -> dict[str, Any]:
    """The seed's Bluecore body for "Order Completed" (examples/bluecore/), with ``token``."""
    body: dict[str, Any] = json.loads(SEED_BODY_FILE.read_text(encoding="utf-8"))
    body["properties"]["token"] = token
    return body


EVENT_DEFAULTS: Mapping[str, Any] = {
    "messageId": "msg-1",
    "type": "track",
    "event": "Product Viewed",
    "anonymousId": "anon-1",
    "properties": {"product_id": "SKU123", "price": 39.9},
    "traits": {"email": EMAIL},
    "context": {"consent": {"marketing": True}},
}
EXAMPLE_EVENTS = Path(__file__).resolve().parents[1] / "examples/events"


def event_json(*, base: Mapping[str, Any] = EVENT_DEFAULTS, **fields: Any) -> dict[str, Any]:
    """The Signal-style JSON of a test event: ``base`` (the defaults) with ``fields``.

    A field replaces its default whole; a field given as ``None`` is left out. Names are
    Signal's camelCase or the proto's snake_case, as ``json_format`` accepts both.
    """
    raw = copy.deepcopy(dict(base))
    raw.update(copy.deepcopy(fields))
    return {name: value for name, value in raw.items() if value is not None}


def parse_event(
    raw: Mapping[str, Any], *, ignore_unknown_fields: bool = False
) -> delivery_pb2.DataflyEvent:
    """Signal-style camelCase JSON parsed the way any client would (NaN and infinities kept)."""
    return json_format.ParseDict(
        raw, delivery_pb2.DataflyEvent(), ignore_unknown_fields=ignore_unknown_fields
    )


def make_event(*, base: Mapping[str, Any] = EVENT_DEFAULTS, **fields: Any) -> DataflyEvent:
    """The one event builder: by default a deliverable ``Product Viewed`` with consent and an
    email, so a test names only what it is about (see :func:`event_json`).

    A test of one mapping rule passes a sparser ``base`` and names every field it relies on.
    """
    return parse_event(event_json(base=base, **fields))


def example_event(name: str) -> delivery_pb2.DataflyEvent:
    """One of the sample events in ``examples/events/`` (they carry Signal's extra fields)."""
    raw = json.loads((EXAMPLE_EVENTS / name).read_text(encoding="utf-8"))
    return parse_event(raw, ignore_unknown_fields=True)


async def deliver(
    stub: delivery_pb2_grpc.DeliveryServiceStub,
    event: delivery_pb2.DataflyEvent,
    timeout: float = 10.0,
) -> delivery_pb2.DeliveryResult:
    """``Deliver`` one event with a deadline; the result the caller gets."""
    reply = await stub.Deliver(delivery_pb2.DeliverRequest(event=event), timeout=timeout)
    return reply.result


def error_details(error: grpc.aio.AioRpcError) -> list[object]:
    """The unpacked ``google.rpc.Status`` details (ErrorInfo, RetryInfo) of a failed call.

    The status must be there and carry the same code as the call.
    """
    status = rpc_status.from_call(error)
    assert status is not None, "the error carries no google.rpc.Status"
    assert status.code == error.code().value[0]
    found: list[object] = []
    for detail in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo):
            if detail.Is(kind.DESCRIPTOR):
                unpacked = kind()
                detail.Unpack(unpacked)
                found.append(unpacked)
    return found


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The one ErrorInfo of the ``google.rpc.Status`` the sidecar attached to an RPC error."""
    infos = [d for d in error_details(error) if isinstance(d, error_details_pb2.ErrorInfo)]
    assert len(infos) == 1, f"expected one ErrorInfo, got {infos}"
    return infos[0]


async def eventually(
    predicate: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 5.0,
    interval: float = 0.01,
    what: str | None = None,
) -> T:
    """Poll ``predicate`` (plain or async) until it returns something truthy; return that.

    For states that offer no event to wait on (a record list, a public count, a scrape). An
    exception from the predicate propagates at once; on timeout an ``AssertionError`` names
    what was awaited and the last value seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            name = what or getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(f"not true within {timeout} s: {name} (last: {value!r})")
        await asyncio.sleep(interval)


def test_settings(api_url: str, **overrides: Any) -> Settings:
    """Settings for a sidecar on free loopback ports talking to ``api_url``."""
    env = {
        "BLUECORE_NAMESPACE": NAMESPACE,
        "BLUECORE_API_URL": api_url,
        "SIDECAR_GRPC_ADDRESS": "127.0.0.1:0",
        "SIDECAR_OPS_ADDRESS": "127.0.0.1:0",
        "SIDECAR_HTTP_ADDRESS": "127.0.0.1:0",
        "SIDECAR_RETRY_BASE": "10ms",
        "SIDECAR_RETRY_CAP": "50ms",
        "SIDECAR_ATTEMPT_TIMEOUT": "2s",
        "SIDECAR_SHUTDOWN_GRACE": "5s",
    }
    settings = Settings.from_env(env)
    return dataclasses.replace(settings, **overrides) if overrides else settings


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def retry_policy(**fields: Any) -> RetryPolicy:
    """``test_settings``' fast retry policy (5 attempts, 10 ms base, 50 ms cap), with ``fields``."""
    base = RetryPolicy(max_attempts=5, base=0.01, cap=0.05, attempt_timeout=2.0)
    return dataclasses.replace(base, **fields)


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port for the block; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
def sandbox_tokens() -> list[str] | None:
    """The tokens the ``sandbox`` accepts: the sidecar's namespace (``None``: any token).

    A module overrides this fixture, or a test parametrizes it, to change the rule.
    """
    return [NAMESPACE]


@pytest.fixture
async def sandbox(sandbox_tokens: list[str] | None) -> AsyncIterator[BluecoreSandbox]:
    """The sandbox Bluecore on a free loopback port, accepting ``sandbox_tokens``."""
    async with run_sandbox(tokens=sandbox_tokens) as running:
        yield running


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port bound for the test but not listening: connections to it are refused,
    and nothing else can take it meanwhile (a port from ``free_port`` could be reused)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(autouse=True)
def outcome_lines_at_the_next_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process sidecars write outcome lines at the next turn of the loop, not after
    LOG_FLUSH_SECONDS: a test reads them right after its call. The tests of the wait itself
    (test_logs.py) set it back; a sidecar in a process of its own keeps the real wait."""
    monkeypatch.setattr(telemetry, "LOG_FLUSH_SECONDS", 0.0)


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Everything the sidecar logs during the test, as JSON lines."""
    stream = io.StringIO()
    logger = configure_logging("DEBUG", stream)
    yield stream
    logger.handlers.clear()
    logger.setLevel(logging.WARNING)


SidecarFactory = Callable[..., Any]


@pytest.fixture
async def start_sidecar(
    sandbox: BluecoreSandbox, span_exporter: InMemorySpanExporter
) -> AsyncIterator[SidecarFactory]:
    """Start sidecars with setting overrides; all are stopped at the end of the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(api_url: str | None = None, **overrides: Any) -> Sidecar:
            settings = test_settings(api_url or sandbox.url, **overrides)
            return await stack.enter_async_context(
                running_sidecar(settings, {}, span_exporter=span_exporter)
            )

        yield start


@pytest.fixture
async def sidecar(start_sidecar: SidecarFactory) -> Sidecar:
    """One sidecar on free loopback ports, talking to the ``sandbox``."""
    return await start_sidecar()  # type: ignore[no-any-return]


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[Sidecar], delivery_pb2_grpc.DeliveryServiceStub]]:
    """A generated client for any sidecar of the test; its channel closes at the end."""
    async with contextlib.AsyncExitStack() as stack:

        def client(sidecar: Sidecar) -> delivery_pb2_grpc.DeliveryServiceStub:
            channel = grpc.aio.insecure_channel(sidecar.grpc_address)
            stack.push_async_callback(channel.close)
            return delivery_pb2_grpc.DeliveryServiceStub(channel)

        yield client


@pytest.fixture
async def stub(sidecar: Sidecar) -> AsyncIterator[delivery_pb2_grpc.DeliveryServiceStub]:
    """A generated client for the ``sidecar`` fixture."""
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        yield delivery_pb2_grpc.DeliveryServiceStub(channel)


PROJECT = Path(__file__).resolve().parent.parent
BENCH = PROJECT / "bench"


def compiled_modules() -> list[str]:
    """The modules pyproject.toml has setup.py compile with mypyc (``compiled-modules``)."""
    settings = tomllib.loads((PROJECT / "pyproject.toml").read_text(encoding="utf-8"))
    names: list[str] = settings["tool"]["bluecore-sidecar"]["compiled-modules"]
    return names


def load_bench(name: str, file: str) -> ModuleType:
    """A script of bench/ (not a package) imported as module ``name``, for testing its
    arithmetic."""
    spec = importlib.util.spec_from_file_location(name, BENCH / file)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
