// Checks that a refused call reaches a Connect client as the sidecar means it:
// Deliver without an event is invalid_argument with the sidecar's ErrorInfo
// (reason EVENT_MISSING) among the error's details. Exits 0 when it does.
//
// make clients-e2e runs it against a live sidecar beside examples/deliver.ts.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { DeliveryService } from "../src/index.js";

const baseUrl = process.env.SIDECAR_HTTP_URL || "http://127.0.0.1:50080";
const useBinaryFormat = process.env.CONNECT_BINARY === "1";
const client = createClient(
  DeliveryService,
  createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat }),
);

try {
  await client.deliver({}, { timeoutMs: 5_000 });
  console.error("Deliver without an event was not refused");
  process.exit(1);
} catch (err) {
  const error = ConnectError.from(err);
  // The ErrorInfo's bytes as the sidecar packed them; its field 1 is the reason.
  const info = error.details.find((d) => "type" in d && d.type === "google.rpc.ErrorInfo");
  const bytes = info && "value" in info && info.value instanceof Uint8Array ? info.value : null;
  const reason =
    bytes && bytes[0] === 0x0a ? new TextDecoder().decode(bytes.subarray(2, 2 + bytes[1])) : "";
  console.log(`refused: ${Code[error.code]} ${error.rawMessage} (ErrorInfo reason ${reason})`);
  if (error.code !== Code.InvalidArgument || reason !== "EVENT_MISSING") {
    process.exit(1);
  }
}
