"""``python -m bluecore_sidecar serve`` as a real process: SIGTERM drain, config errors."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import grpc
import pytest
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .conftest import EMAIL, NAMESPACE, eventually, make_event
from .processes import clean_env, serve, serve_env

Status = delivery_pb2.DeliveryStatus
SERVICE = "datafly.bluecore.v1.DeliveryService"

pytestmark = pytest.mark.slow


async def health(address: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
    return int(reply.status)


async def test_sigterm_drains_in_flight_work_refuses_new_work_and_exits_0(sandbox):
    """SIGTERM: health watchers see NOT_SERVING, new calls are refused with UNAVAILABLE,
    the call in flight still finishes, and the process exits 0."""
    sandbox.delay(1.5)
    async with serve(serve_env(sandbox.url, BLUECORE_NAMESPACE=NAMESPACE)) as served:
        assert await health(served.grpc_address) == health_pb2.HealthCheckResponse.SERVING
        async with grpc.aio.insecure_channel(served.grpc_address) as channel:
            stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=SERVICE)
            )
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            in_flight = asyncio.ensure_future(
                stub.Deliver(delivery_pb2.DeliverRequest(event=make_event()), timeout=10)
            )
            await eventually(lambda: sandbox.received)

            served.process.send_signal(signal.SIGTERM)

            async with asyncio.timeout(5):
                assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
            async with grpc.aio.insecure_channel(served.grpc_address) as late_channel:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await delivery_pb2_grpc.DeliveryServiceStub(late_channel).Deliver(
                        delivery_pb2.DeliverRequest(event=make_event(messageId="late")), timeout=5
                    )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

            reply = await in_flight
        assert reply.result.status == Status.DELIVERY_STATUS_DELIVERED
        assert reply.result.attempts == 1

        assert await served.finish() == 0
    assert len(sandbox.received) == 1
    output = "\n".join(served.stderr)
    assert NAMESPACE not in output
    assert EMAIL not in output
    messages = [json.loads(line)["message"] for line in served.stderr if line.strip()]
    assert "delivery outcome" in messages
    assert messages[-1] == "stopped"


async def test_namespace_file_is_used_and_never_printed(sandbox, tmp_path):
    secret_file = tmp_path / "namespace"
    secret_file.write_text(NAMESPACE + "\n", encoding="utf-8")
    env = serve_env(sandbox.url, BLUECORE_NAMESPACE_FILE=str(secret_file))
    async with serve(env) as served:
        async with grpc.aio.insecure_channel(served.grpc_address) as channel:
            stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
            reply = await stub.Deliver(delivery_pb2.DeliverRequest(event=make_event()), timeout=10)
        assert reply.result.status == Status.DELIVERY_STATUS_DELIVERED
        served.process.send_signal(signal.SIGTERM)
        assert await served.finish() == 0
        stdout = await served.process.stdout.read() if served.process.stdout else b""
    assert [r.body["properties"]["token"] for r in sandbox.received] == [NAMESPACE]
    assert NAMESPACE not in "\n".join(served.stderr)
    assert NAMESPACE not in stdout.decode()


def run_serve(env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bluecore_sidecar", "serve"],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("extra", "variable"),
    [
        ({}, "BLUECORE_NAMESPACE"),
        (
            {"BLUECORE_NAMESPACE": NAMESPACE, "SIDECAR_RETRY_MAX_ATTEMPTS": "lots"},
            "SIDECAR_RETRY_MAX_ATTEMPTS",
        ),
        ({"BLUECORE_NAMESPACE_FILE": "/nonexistent/namespace"}, "BLUECORE_NAMESPACE_FILE"),
    ],
)
def test_a_config_error_exits_2_with_one_line(extra, variable):
    done = run_serve(clean_env(**extra))
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert variable in lines[0]
    assert "Traceback" not in done.stderr
    assert NAMESPACE not in done.stderr
    assert done.stdout == ""


def test_a_bad_namespace_file_content_is_not_echoed(tmp_path: Path):
    secret_file = tmp_path / "namespace"
    secret_file.write_text("has spaces s3cr3t", encoding="utf-8")
    done = run_serve(clean_env(BLUECORE_NAMESPACE_FILE=str(secret_file)))
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert "BLUECORE_NAMESPACE_FILE" in done.stderr
    assert "s3cr3t" not in done.stderr + done.stdout
