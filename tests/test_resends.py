"""A POST repeated after a timed-out try may land twice: such resends are counted."""

from __future__ import annotations

import dataclasses
import re

import aiohttp
import grpc
from bluecore_devtools.sandbox import BluecoreSandbox
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc

from .conftest import SidecarFactory, make_event, test_settings

S = delivery_pb2
RESENDS = re.compile(r"^bluecore_sidecar_upstream_resends_after_timeout_total (\S+)$", re.M)


async def resends_and_result(
    sandbox: BluecoreSandbox, start_sidecar: SidecarFactory
) -> tuple[float, delivery_pb2.DeliveryResult]:
    retry = dataclasses.replace(test_settings(sandbox.url).retry, attempt_timeout=0.3)
    sidecar = await start_sidecar(retry=retry)
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        reply = await stub.Deliver(delivery_pb2.DeliverRequest(event=make_event()), timeout=10)
    async with aiohttp.ClientSession() as http, http.get(sidecar.ops_url + "/metrics") as answer:
        match = RESENDS.search(await answer.text())
    assert match is not None, "no resend counter in /metrics"
    return float(match.group(1)), reply.result


async def test_a_resend_after_a_timed_out_try_is_counted(
    sandbox: BluecoreSandbox, start_sidecar: SidecarFactory
) -> None:
    sandbox.delay(1.0, count=1)
    resends, result = await resends_and_result(sandbox, start_sidecar)
    assert (result.status, result.attempts) == (S.DELIVERY_STATUS_DELIVERED, 2)
    assert resends == 1.0


async def test_a_retry_after_an_answer_is_not_a_resend_after_timeout(
    sandbox: BluecoreSandbox, start_sidecar: SidecarFactory
) -> None:
    sandbox.fail_next(1, 503)
    resends, result = await resends_and_result(sandbox, start_sidecar)
    assert (result.status, result.attempts) == (S.DELIVERY_STATUS_DELIVERED, 2)
    assert resends == 0.0
