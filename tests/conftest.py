"""Shared fixtures: the real sandbox and the real sidecar on port 0, and a generated client.

The sidecar is started through :func:`bluecore_sidecar.app.running_sidecar`, the same factory
``bluecore-sidecar serve`` uses; only the addresses and the upstream URL differ.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from bluecore_devtools.sandbox import BluecoreSandbox, run_sandbox
from bluecore_sidecar.app import Sidecar, running_sidecar
from bluecore_sidecar.config import Settings
from bluecore_sidecar.telemetry import configure_logging
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from google.protobuf import json_format
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

NAMESPACE = "test-namespace-s3cr3t"
EMAIL = "jane@example.com"


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


def make_event(**fields: Any) -> delivery_pb2.DataflyEvent:
    """A DataflyEvent from Signal-style camelCase JSON fields.

    Defaults give a deliverable ``Product Viewed`` with consent and an email, so a test names
    only what it is about.
    """
    raw: dict[str, Any] = {
        "messageId": "msg-1",
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": "anon-1",
        "properties": {"product_id": "SKU123", "price": 39.9},
        "traits": {"email": EMAIL},
        "context": {"consent": {"marketing": True}},
    }
    raw.update(fields)
    event = delivery_pb2.DataflyEvent()
    json_format.ParseDict(raw, event)
    return event


def test_settings(api_url: str, **overrides: Any) -> Settings:
    """Settings for a sidecar on free loopback ports talking to ``api_url``."""
    env = {
        "BLUECORE_NAMESPACE": NAMESPACE,
        "BLUECORE_API_URL": api_url,
        "SIDECAR_GRPC_ADDRESS": "127.0.0.1:0",
        "SIDECAR_OPS_ADDRESS": "127.0.0.1:0",
        "SIDECAR_RETRY_BASE": "10ms",
        "SIDECAR_RETRY_CAP": "50ms",
        "SIDECAR_ATTEMPT_TIMEOUT": "2s",
        "SIDECAR_SHUTDOWN_GRACE": "5s",
    }
    settings = Settings.from_env(env)
    return dataclasses.replace(settings, **overrides) if overrides else settings


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


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
async def sandbox() -> AsyncIterator[BluecoreSandbox]:
    async with run_sandbox(tokens=[NAMESPACE]) as running:
        yield running


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


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
    return await start_sidecar()  # type: ignore[no-any-return]


@pytest.fixture
async def stub(sidecar: Sidecar) -> AsyncIterator[delivery_pb2_grpc.DeliveryServiceStub]:
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        yield delivery_pb2_grpc.DeliveryServiceStub(channel)
