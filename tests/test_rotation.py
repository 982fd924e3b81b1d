"""Rotating the namespace token without a restart: a file rewritten in place, or a Kubernetes
Secret volume whose ``..data`` symlink the kubelet swaps, against the real sandbox revoking
the old token at runtime."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from bluecore_devtools.sandbox import BluecoreSandbox
from bluecore_devtools.secretvolume import (
    kubelet_swap,
    kubelet_volume,
    plain_file,
    rewrite_in_place,
)
from bluecore_sidecar.app import Sidecar, running_sidecar
from bluecore_sidecar.config import Settings
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from .conftest import deliver, make_event

OLD = "ns-old-token-1a2b"
NEW = "ns-new-token-3c4d"
S = delivery_pb2

Layout = Callable[[Path, str], Path]
Rotate = Callable[[Path, str], None]


LAYOUTS = [
    pytest.param(plain_file, rewrite_in_place, id="rewritten-in-place"),
    pytest.param(kubelet_volume, kubelet_swap, id="kubelet-data-swap"),
]


@pytest.fixture
def sandbox_tokens() -> list[str] | None:
    """The rotation tests' sandbox accepts any token unless told otherwise per token."""
    return None


def file_settings(api_url: str, path: Path, **overrides: Any) -> Settings:
    env = {
        "BLUECORE_NAMESPACE_FILE": str(path),
        "BLUECORE_API_URL": api_url,
        "SIDECAR_GRPC_ADDRESS": "127.0.0.1:0",
        "SIDECAR_OPS_ADDRESS": "127.0.0.1:0",
        # A free port, not the default 50080, which another sidecar on the machine may hold.
        "SIDECAR_HTTP_ADDRESS": "127.0.0.1:0",
        "SIDECAR_RETRY_BASE": "10ms",
        "SIDECAR_RETRY_CAP": "50ms",
        "SIDECAR_ATTEMPT_TIMEOUT": "2s",
        "SIDECAR_SHUTDOWN_GRACE": "1s",
        # Long enough that only a refused token makes the sidecar look, unless a test says so.
        "SIDECAR_TOKEN_CHECK_INTERVAL": "1h",
    }
    settings = Settings.from_env(env)
    return dataclasses.replace(settings, **overrides)


@contextlib.asynccontextmanager
async def sidecar_on(
    settings: Settings, exporter: InMemorySpanExporter | None = None
) -> AsyncIterator[tuple[Sidecar, delivery_pb2_grpc.DeliveryServiceStub]]:
    async with (
        running_sidecar(settings, {}, span_exporter=exporter) as sidecar,
        grpc.aio.insecure_channel(sidecar.grpc_address) as channel,
    ):
        yield sidecar, delivery_pb2_grpc.DeliveryServiceStub(channel)


def tokens_received(sandbox: BluecoreSandbox) -> list[tuple[str, int | None]]:
    out = []
    for request in sandbox.received:
        assert isinstance(request.body, dict)
        properties = request.body["properties"]
        assert isinstance(properties, dict)
        token = properties["token"]
        assert isinstance(token, str)
        out.append((token, request.status))
    return out


async def metrics_text(sidecar: Sidecar) -> str:
    async with aiohttp.ClientSession() as http, http.get(sidecar.ops_url + "/metrics") as answer:
        return await answer.text()


@pytest.mark.parametrize(("layout", "rotate"), LAYOUTS)
async def test_a_revoked_token_is_replaced_from_the_rotated_file_and_the_event_resent_once(
    sandbox: BluecoreSandbox, tmp_path: Path, layout: Layout, rotate: Rotate
) -> None:
    path = layout(tmp_path, OLD)
    exporter = InMemorySpanExporter()
    async with sidecar_on(file_settings(sandbox.url, path), exporter) as (sidecar, stub):
        before = await deliver(stub, make_event(messageId="before"))
        rotate(tmp_path, NEW)
        sandbox.set_token_status(OLD, 403)
        after = await deliver(stub, make_event(messageId="after"))
        later = await deliver(stub, make_event(messageId="later"))
        metrics = await metrics_text(sidecar)
    assert before.status == S.DELIVERY_STATUS_DELIVERED
    assert (after.status, after.attempts) == (S.DELIVERY_STATUS_DELIVERED, 2)
    assert (later.status, later.attempts) == (S.DELIVERY_STATUS_DELIVERED, 1)
    assert tokens_received(sandbox) == [(OLD, 202), (OLD, 403), (NEW, 202), (NEW, 202)]
    assert 'bluecore_sidecar_upstream_auth_failures_total{code="403"} 1.0' in metrics
    rotated = [
        event.name
        for span in exporter.get_finished_spans()
        for event in span.events
        if event.name == "credential.rotated"
    ]
    assert rotated == ["credential.rotated"]


@pytest.mark.parametrize(("layout", "rotate"), LAYOUTS)
async def test_a_rotated_file_is_picked_up_before_bluecore_refuses_the_old_token(
    sandbox: BluecoreSandbox, tmp_path: Path, layout: Layout, rotate: Rotate
) -> None:
    """With the check due at every request, the first request after a rotation uses the new
    token, without a 403 first."""
    path = layout(tmp_path, OLD)
    settings = file_settings(sandbox.url, path, token_check_interval=timedelta(0))
    async with sidecar_on(settings) as (_, stub):
        await deliver(stub, make_event(messageId="before"))
        rotate(tmp_path, NEW)
        after = await deliver(stub, make_event(messageId="after"))
    assert (after.status, after.attempts) == (S.DELIVERY_STATUS_DELIVERED, 1)
    assert tokens_received(sandbox) == [(OLD, 202), (NEW, 202)]


async def test_a_refused_token_that_did_not_change_fails_after_one_try(
    sandbox: BluecoreSandbox, tmp_path: Path, captured_logs: io.StringIO
) -> None:
    path = plain_file(tmp_path, OLD)
    sandbox.set_token_status(OLD, 401)
    async with sidecar_on(file_settings(sandbox.url, path)) as (sidecar, stub):
        result = await deliver(stub, make_event(messageId="refused"))
        metrics = await metrics_text(sidecar)
    assert (result.status, result.reason, result.attempts) == (
        S.DELIVERY_STATUS_FAILED_PERMANENT,
        "HTTP_401",
        1,
    )
    assert 'bluecore_sidecar_upstream_auth_failures_total{code="401"} 1.0' in metrics
    errors = [
        json.loads(line)
        for line in captured_logs.getvalue().splitlines()
        if '"ERROR"' in line and "refused the namespace token" in line
    ]
    assert len(errors) == 1
    assert OLD not in captured_logs.getvalue()


@pytest.mark.parametrize(
    "content",
    [b"", b"   \n", b"two words\n", b"x" * 300, b"y" * 100_000, b"ns-\xff-token\n"],
    ids=["empty", "blank", "two-words", "too-long", "huge", "not-utf8"],
)
async def test_a_bad_rotated_file_keeps_the_last_good_token_and_logs_an_error(
    sandbox: BluecoreSandbox, tmp_path: Path, captured_logs: io.StringIO, content: bytes
) -> None:
    path = plain_file(tmp_path, OLD)
    settings = file_settings(sandbox.url, path, token_check_interval=timedelta(0))
    async with sidecar_on(settings) as (_, stub):
        path.write_bytes(content)
        first = await deliver(stub, make_event(messageId="first"))
        second = await deliver(stub, make_event(messageId="second"))
    assert first.status == second.status == S.DELIVERY_STATUS_DELIVERED
    assert tokens_received(sandbox) == [(OLD, 202), (OLD, 202)]
    logged = captured_logs.getvalue()
    # Once per bad state of the file, not once per request.
    assert logged.count("namespace token file unusable") == 1
    assert OLD not in logged
    if content.strip():
        assert content.strip()[:32].decode("utf-8", "replace") not in logged


async def test_a_missing_file_keeps_the_last_good_token(
    sandbox: BluecoreSandbox, tmp_path: Path
) -> None:
    path = plain_file(tmp_path, OLD)
    settings = file_settings(sandbox.url, path, token_check_interval=timedelta(0))
    async with sidecar_on(settings) as (_, stub):
        path.unlink()
        result = await deliver(stub, make_event(messageId="after-unlink"))
    assert result.status == S.DELIVERY_STATUS_DELIVERED
    assert tokens_received(sandbox) == [(OLD, 202)]


async def test_logs_and_spans_scrub_both_the_new_and_the_old_token(
    sandbox: BluecoreSandbox, tmp_path: Path, captured_logs: io.StringIO
) -> None:
    """After a rotation the redactor knows the new token, and still the old one."""
    exporter = InMemorySpanExporter()
    path = kubelet_volume(tmp_path, OLD)
    settings = file_settings(sandbox.url, path, token_check_interval=timedelta(0))
    async with sidecar_on(settings, exporter) as (_, stub):
        await deliver(stub, make_event(messageId="before"))
        kubelet_swap(tmp_path, NEW)
        sandbox.fail_next(1, 400)
        await deliver(stub, make_event(messageId=f"id-with-{NEW}-and-{OLD}"))
    spans = json.dumps(
        [dict(span.attributes or {}) for span in exporter.get_finished_spans()], default=str
    )
    logged = captured_logs.getvalue()
    assert "id-with-***-and-***" in logged
    for text in (logged, spans):
        assert NEW not in text
        assert OLD not in text
