"""A tiny OTLP/gRPC trace receiver that counts spans by ``service.name`` and discards them.

The benchmark points the traced sidecars at it, so tracing costs what an export really costs
(serialising and sending every sampled span) without a collector competing for the CPU.
"""

from __future__ import annotations

import collections

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class SpanCounter(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """Implements ``opentelemetry.proto.collector.trace.v1.TraceService/Export``."""

    def __init__(self) -> None:
        self.spans: collections.Counter[str] = collections.Counter()
        self.exports = 0

    async def Export(  # noqa: N802 - the RPC name comes from the proto
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext,
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.exports += 1
        for resource_spans in request.resource_spans:
            service = "unknown"
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    service = attribute.value.string_value
            self.spans[service] += sum(len(scope.spans) for scope in resource_spans.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


async def start_sink(host: str = "127.0.0.1") -> tuple[grpc.aio.Server, SpanCounter, int]:
    """Start the receiver on a free port of ``host``; returns the server, counter and port."""
    counter = SpanCounter()
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(counter, server)
    port = server.add_insecure_port(f"{host}:0")
    await server.start()
    return server, counter, port


async def _serve() -> None:
    """Serve until stdin closes, after printing ``{"port": N}`` (for a separate process)."""
    import asyncio  # noqa: PLC0415 - only when run as a script
    import json  # noqa: PLC0415
    import sys  # noqa: PLC0415

    server, counter, port = await start_sink()
    print(json.dumps({"port": port}), flush=True)
    await asyncio.to_thread(sys.stdin.read)
    await server.stop(0)
    print(json.dumps({"spans": dict(counter.spans), "exports": counter.exports}), flush=True)


if __name__ == "__main__":
    import asyncio

    asyncio.run(_serve())
