"""Bluecore's Retry-After, end to end: the shared pause is capped by SIDECAR_MAX_PAUSE, logged
when capped, and shown in /metrics and in the /readyz body without making the pod unready."""

from __future__ import annotations

import dataclasses
import io
import re

import aiohttp
import grpc
import pytest
from bluecore_devtools.sandbox import BluecoreSandbox
from bluecore_sidecar.app import Sidecar
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc

from .conftest import NAMESPACE, SidecarFactory, make_event, test_settings

S = delivery_pb2
CAP = 2.0

ABSURD = [
    pytest.param("3600", id="an-hour"),
    pytest.param("99999999999", id="eleven-digits"),
    pytest.param("Fri, 31 Dec 9999 23:59:59 GMT", id="date-in-9999"),
    pytest.param("9" * 400, id="400-digits"),
]


async def ops(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        return answer.status, await answer.text()


def pause_gauge(metrics: str) -> float:
    match = re.search(r"^bluecore_sidecar_upstream_pause_seconds (\S+)$", metrics, re.M)
    assert match is not None, "no pause gauge in /metrics"
    return float(match.group(1))


@pytest.mark.parametrize("header", ABSURD)
async def test_an_absurd_retry_after_pauses_everyone_only_up_to_the_cap(
    sandbox: BluecoreSandbox,
    start_sidecar: SidecarFactory,
    captured_logs: io.StringIO,
    header: str,
) -> None:
    retry = dataclasses.replace(test_settings(sandbox.url).retry, max_pause=CAP)
    sidecar = await start_sidecar(retry=retry)
    sandbox.fail_next(1, 429, retry_after=header)
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        # Too short a deadline to wait the pause out: answered at once with the capped pause.
        first = await stub.Deliver(
            delivery_pb2.DeliverRequest(event=make_event(messageId="first")), timeout=0.5
        )
        ready_status, ready_body = await ops(sidecar.ops_url + "/readyz")
        _, metrics = await ops(sidecar.ops_url + "/metrics")
        # Long enough to wait the capped pause out: sent again and delivered.
        later = await stub.Deliver(
            delivery_pb2.DeliverRequest(event=make_event(messageId="later")), timeout=CAP + 5
        )
    assert (first.result.status, first.result.reason) == (
        S.DELIVERY_STATUS_FAILED_RETRYABLE,
        "HTTP_429",
    )
    assert 0 < first.result.retry_after.ToTimedelta().total_seconds() <= CAP
    assert ready_status == 200
    assert ready_body.startswith('{"status": "ready", "upstream_pause_seconds": ')
    assert 0 < float(ready_body.split(":")[-1].rstrip("}")) <= CAP
    assert 0 < pause_gauge(metrics) <= CAP
    assert later.result.status == S.DELIVERY_STATUS_DELIVERED
    assert len(sandbox.received) == 2
    logged = captured_logs.getvalue()
    assert logged.count("Retry-After longer than SIDECAR_MAX_PAUSE") == 1
    assert NAMESPACE not in logged


async def test_no_pause_reads_zero_in_readyz_and_metrics(sidecar: Sidecar) -> None:
    status, body = await ops(sidecar.ops_url + "/readyz")
    _, metrics = await ops(sidecar.ops_url + "/metrics")
    assert (status, body) == (200, '{"status": "ready", "upstream_pause_seconds": 0.0}')
    assert pause_gauge(metrics) == 0.0


async def test_a_retry_after_within_the_cap_is_not_logged_as_capped(
    sandbox: BluecoreSandbox, start_sidecar: SidecarFactory, captured_logs: io.StringIO
) -> None:
    sidecar = await start_sidecar()
    sandbox.fail_next(1, 503, retry_after="1")
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        reply = await stub.Deliver(delivery_pb2.DeliverRequest(event=make_event()), timeout=5)
    assert (reply.result.status, reply.result.attempts) == (S.DELIVERY_STATUS_DELIVERED, 2)
    assert "Retry-After longer than" not in captured_logs.getvalue()
