"""Send the seed's "Order Completed" event to a running bluecore-sidecar.

Connects to SIDECAR_ADDRESS (default 127.0.0.1:50051), gives the call a 10 second
deadline, sends a fresh W3C traceparent so the delivery joins a trace, prints the
DeliveryResult and exits 0 only when the sidecar answers DELIVERY_STATUS_DELIVERED.

    pip install ./client_stubs/python && python client_stubs/python/examples/deliver.py
"""

from __future__ import annotations

import os
import secrets
import sys

import grpc
from google.protobuf import json_format

from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc


def order_completed() -> delivery_pb2.DataflyEvent:
    """The seed's Order Completed event, with a fresh message id."""
    event = delivery_pb2.DataflyEvent(
        message_id=f"python-example-{secrets.token_hex(8)}",
        type="track",
        event="Order Completed",
    )
    event.properties.update(
        {
            "order_id": "ORD-1001",
            "revenue": 49.90,
            "currency": "USD",
            "products": [
                {"product_id": "SKU123", "price": 39.90, "quantity": 1},
                {"product_id": "SKU456", "price": 10.00, "quantity": 1},
            ],
        }
    )
    event.traits.update({"email": "jane@example.com"})
    event.context.consent["marketing"] = True
    event.timestamp.GetCurrentTime()
    return event


def main() -> int:
    address = os.environ.get("SIDECAR_ADDRESS", "127.0.0.1:50051")
    traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    # The sidecar listens on loopback inside the pod, so plaintext is the norm.
    with grpc.insecure_channel(address) as channel:
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        try:
            # The deadline bounds the sidecar's retries too: it never outlives the call.
            response = stub.Deliver(
                delivery_pb2.DeliverRequest(
                    event=order_completed(),
                    # DIRECT: answer once Bluecore has; WAIT or ENQUEUE may answer QUEUED.
                    mode=delivery_pb2.DELIVERY_MODE_DIRECT,
                ),
                timeout=10.0,
                metadata=[("traceparent", traceparent)],
            )
        except grpc.RpcError as err:
            # Only a request that is unusable as a whole is an RPC error.
            print(f"Deliver failed: {err.code()} {err.details()}", file=sys.stderr)
            return 1
    result = response.result
    print(f"traceparent: {traceparent}")
    print(json_format.MessageToJson(result))
    if result.status != delivery_pb2.DELIVERY_STATUS_DELIVERED:
        status = delivery_pb2.DeliveryStatus.Name(result.status)
        print(f"not delivered: {status} {result.reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
