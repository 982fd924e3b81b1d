// Sends the seed's "Order Completed" event to a running bluecore-sidecar and
// prints the DeliveryResult.
//
// Connects to SIDECAR_ADDRESS (default 127.0.0.1:50051), gives the call a 10
// second deadline, sends a fresh W3C traceparent so the delivery joins a
// trace, and exits 0 only when the sidecar answers DELIVERY_STATUS_DELIVERED.
//
//   npm run build && npm run build:examples && npm run example
import { randomBytes } from "node:crypto";
import { credentials, Metadata } from "@grpc/grpc-js";
import {
  DataflyEvent,
  DeliveryMode,
  DeliveryResult,
  DeliveryServiceClient,
  DeliveryStatus,
  deliveryStatusToJSON,
} from "bluecore-sidecar-client";

const address = process.env.SIDECAR_ADDRESS || "127.0.0.1:50051";
// The sidecar listens on loopback inside the pod, so plaintext is the norm.
const client = new DeliveryServiceClient(address, credentials.createInsecure());

const event = DataflyEvent.fromPartial({
  messageId: `node-example-${randomBytes(8).toString("hex")}`,
  type: "track",
  event: "Order Completed",
  properties: {
    order_id: "ORD-1001",
    revenue: 49.9,
    currency: "USD",
    products: [
      { product_id: "SKU123", price: 39.9, quantity: 1 },
      { product_id: "SKU456", price: 10.0, quantity: 1 },
    ],
  },
  traits: { email: "jane@example.com" },
  context: { consent: { marketing: true } },
  timestamp: new Date(),
});

const traceparent = `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-01`;
const metadata = new Metadata();
metadata.set("traceparent", traceparent);

// The deadline bounds the sidecar's retries too: it never outlives the call.
client.deliver(
  // DIRECT: answer once Bluecore has; WAIT or ENQUEUE may answer QUEUED.
  { event, mode: DeliveryMode.DELIVERY_MODE_DIRECT },
  metadata,
  { deadline: Date.now() + 10_000 },
  (err, response) => {
    client.close();
    if (err) {
      // Only a request that is unusable as a whole is an RPC error.
      console.error(`Deliver failed: ${err.code} ${err.details}`);
      process.exit(1);
    }
    const result = response.result ?? DeliveryResult.fromPartial({});
    console.log(`traceparent: ${traceparent}`);
    console.log(JSON.stringify(DeliveryResult.toJSON(result), null, 2));
    if (result.status !== DeliveryStatus.DELIVERY_STATUS_DELIVERED) {
      console.error(`not delivered: ${deliveryStatusToJSON(result.status)} ${result.reason}`);
      process.exit(1);
    }
  },
);
