"""Answers that are final: a 4xx or a redirect is tried once and reported as
``FAILED_PERMANENT`` with Bluecore's words, never the token or the email, and a redirect is
not followed, so the token goes nowhere else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from datafly.bluecore.v1 import delivery_pb2

from .conftest import EMAIL, NAMESPACE, deliver, make_event, serving

Status = delivery_pb2.DeliveryStatus


async def test_400_is_not_retried(stub, sandbox):
    sandbox.fail_next(1, 400)
    result = await deliver(stub, make_event())
    assert result.status == Status.DELIVERY_STATUS_FAILED_PERMANENT
    assert result.attempts == 1
    assert result.http_status == 400
    assert result.reason == "HTTP_400"
    assert "sandbox fault" in result.detail
    assert len(sandbox.received) == 1


@pytest.mark.parametrize("status", [401, 403])
async def test_401_and_403_are_permanent(status, stub, sandbox):
    sandbox.set_token_status(NAMESPACE, status)
    result = await deliver(stub, make_event())
    assert result.status == Status.DELIVERY_STATUS_FAILED_PERMANENT
    assert result.attempts == 1
    assert result.http_status == status
    assert result.reason == f"HTTP_{status}"


async def test_an_unknown_namespace_gets_403_from_bluecore(start_sidecar, connect, sandbox):
    stub = connect(await start_sidecar(namespace="not-our-namespace"))
    result = await deliver(stub, make_event())
    assert result.status == Status.DELIVERY_STATUS_FAILED_PERMANENT
    assert result.http_status == 403
    assert "not-our-namespace" not in result.detail


@pytest.fixture
async def echoing_bluecore() -> AsyncIterator[str]:
    """A Bluecore stand-in that answers 400 and echoes the request body back."""

    async def handle(request: web.Request) -> web.Response:
        return web.Response(status=400, text="rejected: " + await request.text())

    app = web.Application()
    app.router.add_post("/api/track/mobile/v1", handle)
    async with serving(app) as base_url:
        yield f"{base_url}/api/track/mobile/v1"


async def test_a_400_detail_quotes_bluecore_without_token_or_email(
    echoing_bluecore, start_sidecar, connect, captured_logs
):
    stub = connect(await start_sidecar(echoing_bluecore))
    result = await deliver(stub, make_event())
    assert result.status == Status.DELIVERY_STATUS_FAILED_PERMANENT
    assert result.http_status == 400
    assert "rejected:" in result.detail
    assert "viewed_product" in result.detail
    assert NAMESPACE not in result.detail
    assert EMAIL not in result.detail
    assert NAMESPACE not in captured_logs.getvalue()
    assert EMAIL not in captured_logs.getvalue()


@pytest.fixture
async def redirecting_bluecore(sandbox) -> AsyncIterator[str]:
    """A Bluecore stand-in that answers 307 pointing at the sandbox."""

    async def handle(_: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": sandbox.url})

    app = web.Application()
    app.router.add_post("/api/track/mobile/v1", handle)
    async with serving(app) as base_url:
        yield f"{base_url}/api/track/mobile/v1"


async def test_a_redirect_is_not_followed_so_the_token_goes_nowhere_else(
    redirecting_bluecore, start_sidecar, connect, sandbox
):
    stub = connect(await start_sidecar(redirecting_bluecore))
    result = await deliver(stub, make_event())
    assert result.status == Status.DELIVERY_STATUS_FAILED_PERMANENT
    assert result.http_status == 307
    assert result.attempts == 1
    assert sandbox.received == []
