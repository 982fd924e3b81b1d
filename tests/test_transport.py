"""The aiohttp transport against small real HTTP servers on loopback: bounded body reads."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest
from aiohttp import web
from bluecore_sidecar.errors import UpstreamConnectionError
from bluecore_sidecar.transport import AiohttpTransport

from .conftest import serving

CHUNK = b"x" * 65536


async def endless(request: web.Request) -> web.StreamResponse:
    """A 202 whose body never ends (until the client hangs up)."""
    response = web.StreamResponse(status=202, headers={"Retry-After": "3"})
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        while True:
            await response.write(CHUNK)
    return response


async def small(request: web.Request) -> web.Response:
    return web.Response(status=400, text="missing distinct_id")


PEERS = web.AppKey("peers", list[tuple[str, int]])


async def record_peer(request: web.Request) -> web.Response:
    """A small answer that notes which client connection (address, port) carried it."""
    request.app[PEERS].append(request.transport.get_extra_info("peername")[:2])
    return web.Response(status=202, text="ok")


async def large(request: web.Request) -> web.Response:
    """A finite 8 MiB body: reading it through would let the connection be reused."""
    request.app[PEERS].append(request.transport.get_extra_info("peername")[:2])
    return web.Response(status=202, body=b"y" * (8 << 20))


def app() -> web.Application:
    application = web.Application()
    application[PEERS] = []
    application.router.add_post("/endless", endless)
    application.router.add_post("/small", small)
    application.router.add_post("/peer", record_peer)
    application.router.add_post("/large", large)
    return application


async def test_an_endless_body_is_read_only_up_to_the_bound_and_the_answer_comes_back():
    async with serving(app()) as base, aiohttp.ClientSession() as session:
        transport = AiohttpTransport(session, f"{base}/endless", max_body_bytes=1000)
        async with asyncio.timeout(5):
            answer = await transport.post(b"{}", 1)
        assert answer.status == 202
        assert answer.retry_after == "3"
        assert answer.body == b"x" * 1000
        # The abandoned connection does not poison the pool: the next request works.
        small_answer = await AiohttpTransport(session, f"{base}/small").post(b"{}", 1)
        assert (small_answer.status, small_answer.body) == (400, b"missing distinct_id")


async def test_a_short_body_is_read_whole():
    async with serving(app()) as base, aiohttp.ClientSession() as session:
        answer = await AiohttpTransport(session, f"{base}/small", max_body_bytes=4096).post(
            b"{}", 1
        )
    assert answer.status == 400
    assert answer.retry_after is None
    assert answer.body == b"missing distinct_id"


async def test_a_refused_connection_is_an_upstream_connection_error():
    async with serving(app()) as base:
        pass  # the server is gone: its port refuses connections now
    async with aiohttp.ClientSession() as session:
        with pytest.raises(UpstreamConnectionError):
            await AiohttpTransport(session, f"{base}/small").post(b"{}", 1)


async def test_a_body_read_whole_leaves_its_connection_for_reuse():
    """The control for the test below: keep-alive does reuse a connection here."""
    application = app()
    async with serving(application) as base, aiohttp.ClientSession() as session:
        transport = AiohttpTransport(session, f"{base}/peer")
        await transport.post(b"{}", 1)
        await transport.post(b"{}", 2)
    first, second = application[PEERS]
    assert first == second


async def test_a_body_left_unread_closes_its_connection_instead_of_draining_it():
    """8 MiB read 1000 bytes deep: the connection is dropped, not read to its end for reuse."""
    application = app()
    async with serving(application) as base, aiohttp.ClientSession() as session:
        answer = await AiohttpTransport(session, f"{base}/large", max_body_bytes=1000).post(
            b"{}", 1
        )
        await AiohttpTransport(session, f"{base}/peer").post(b"{}", 2)
    assert (answer.status, answer.body) == (202, b"y" * 1000)
    large_peer, next_peer = application[PEERS]
    assert large_peer != next_peer
