// Sends the seed's "Order Completed" event to a running bluecore-sidecar over
// its HTTP door, with the Connect protocol, and prints the DeliveryResult.
//
// Reads the event as Signal writes it (EVENT_FILE, default the repository's
// examples/events/order_completed.json), gives it a fresh messageId and
// timestamp, calls Deliver on SIDECAR_HTTP_URL (default http://127.0.0.1:50080)
// with a 10 second timeout and a fresh W3C traceparent, and exits 0 only when
// the sidecar answers DELIVERY_STATUS_DELIVERED.
//
//   npm ci && npm run build && npm run example
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { create, fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import {
  DataflyEventSchema,
  DeliveryResultSchema,
  DeliveryService,
  DeliveryStatus,
} from "../src/index.js";

const baseUrl = process.env.SIDECAR_HTTP_URL || "http://127.0.0.1:50080";
const eventFile = process.env.EVENT_FILE || "../../examples/events/order_completed.json";

// Signal's camelCase JSON is the proto3 JSON form of DataflyEvent.
const signalJson = JSON.parse(readFileSync(eventFile, "utf8")) as JsonValue;
const event = fromJson(DataflyEventSchema, signalJson, { ignoreUnknownFields: true });
event.messageId = `connect-node-example-${randomBytes(8).toString("hex")}`;
event.timestamp = timestampNow();

// The door speaks HTTP/1.1 on loopback; JSON on the wire (useBinaryFormat: true for protobuf).
const transport = createConnectTransport({ baseUrl, httpVersion: "1.1" });
const client = createClient(DeliveryService, transport);
const traceparent = `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-01`;

try {
  // The timeout is the call's deadline: the sidecar stops retrying Bluecore before it.
  const response = await client.deliver({ event }, { timeoutMs: 10_000, headers: { traceparent } });
  const result = response.result ?? create(DeliveryResultSchema);
  console.log(`traceparent: ${traceparent}`);
  console.log(JSON.stringify(toJson(DeliveryResultSchema, result), null, 2));
  if (result.status !== DeliveryStatus.DELIVERED) {
    console.error(`not delivered: ${DeliveryStatus[result.status]} ${result.reason}`);
    process.exit(1);
  }
} catch (err) {
  // Only a request that is unusable as a whole is an RPC error.
  const error = ConnectError.from(err);
  console.error(`Deliver failed: ${Code[error.code]} ${error.rawMessage}`);
  process.exit(1);
}
