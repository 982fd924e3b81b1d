"""The SDK's OTLP/gRPC span exporter, sending requests that :mod:`.tracing` encoded.

Kept apart from :mod:`.tracing`: it is loaded only when spans go out over OTLP/gRPC, and its
classes are defined inside a function (so that grpc and the SDK's exporter load with it),
which mypyc, compiling :mod:`.tracing`, does not support.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter

from .tracing import encode_export_request


def grpc_span_exporter() -> SpanExporter:
    """The SDK's OTLP/gRPC span exporter (it reads its own settings), encoding with ours."""
    import grpc  # noqa: PLC0415 - with the exporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: PLC0415
        ExportTraceServiceResponse as Response,
    )

    class BytesStub:
        """The ``TraceService`` client stub, for a request that is already its bytes.

        The generated stub serialises a request message; ours is written as bytes, which
        grpc sends as they are when the method has no request serializer.
        """

        def __init__(self, channel: grpc.Channel) -> None:
            self.Export = channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                request_serializer=None,
                response_deserializer=Response.FromString,
                _registered_method=True,
            )

    class GrpcSpanExporter(OTLPSpanExporter):
        """OTLP over gRPC; the request is written by :func:`encode_export_request`.

        Endpoint, headers, TLS, compression, retries, timeouts and reconnecting stay the
        SDK's; only the request goes out as our bytes, neither parsed into a message nor
        serialised again (two passes of upb over every span).
        """

        def _initialize_channel_and_stub(self) -> None:
            # Called at start and again when the SDK reconnects after UNAVAILABLE.
            super()._initialize_channel_and_stub()  # type: ignore[no-untyped-call]
            self._client = BytesStub(self._channel)  # type: ignore[assignment]

        def _translate_data(self, data: Sequence[ReadableSpan]) -> bytes:  # type: ignore[override]
            return encode_export_request(data)

    return GrpcSpanExporter()
