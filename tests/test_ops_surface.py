"""What a platform sees besides the delivery RPCs: gRPC health, reflection of the contract,
and the ops HTTP ``/healthz`` and ``/readyz`` (which turns 503 on drain)."""

from __future__ import annotations

import aiohttp
import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

SERVICE = "datafly.bluecore.v1.DeliveryService"


@pytest.mark.parametrize("service", ["", SERVICE])
async def test_health_reports_serving(service, sidecar):
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_delivery_service(sidecar):
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = [
            service.name
            async for response in call
            for service in response.list_services_response.service
        ]
    assert SERVICE in names
    assert "grpc.health.v1.Health" in names


async def test_reflection_describes_the_contract(sidecar):
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE)]),
            timeout=5,
        )
        protos = [r.file_descriptor_response.file_descriptor_proto async for r in call]
    files = [descriptor_pb2.FileDescriptorProto.FromString(raw) for rs in protos for raw in rs]
    contract = next(f for f in files if f.name == "datafly/bluecore/v1/delivery.proto")
    assert [s.name for s in contract.service] == ["DeliveryService", "DeadLetterService"]
    assert {m.name for m in contract.service[0].method} == {
        "Deliver",
        "DeliverBatch",
        "Preview",
        "WatchDeliveries",
    }


async def test_ops_http_health_and_readiness_until_drain(sidecar):
    async with aiohttp.ClientSession() as http:
        async with http.get(sidecar.ops_url + "/healthz") as response:
            assert response.status == 200
        async with http.get(sidecar.ops_url + "/readyz") as response:
            assert response.status == 200
        await sidecar.drain()
        async with http.get(sidecar.ops_url + "/readyz") as response:
            assert response.status == 503
        async with http.get(sidecar.ops_url + "/healthz") as response:
            assert response.status == 200
