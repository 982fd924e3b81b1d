package com.datafly.bluecore.examples;

import com.datafly.bluecore.v1.Context;
import com.datafly.bluecore.v1.DataflyEvent;
import com.datafly.bluecore.v1.DeliverRequest;
import com.datafly.bluecore.v1.DeliveryMode;
import com.datafly.bluecore.v1.DeliveryResult;
import com.datafly.bluecore.v1.DeliveryServiceGrpc;
import com.datafly.bluecore.v1.DeliveryStatus;
import com.google.protobuf.ListValue;
import com.google.protobuf.Struct;
import com.google.protobuf.Timestamp;
import com.google.protobuf.Value;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.MetadataUtils;
import java.security.SecureRandom;
import java.time.Instant;
import java.util.concurrent.TimeUnit;

/**
 * Sends the seed's "Order Completed" event to a running bluecore-sidecar and prints the
 * DeliveryResult.
 *
 * <p>Connects to SIDECAR_ADDRESS (default 127.0.0.1:50051), gives the call a 10 second deadline,
 * sends a fresh W3C traceparent so the delivery joins a trace, and exits 0 only when the sidecar
 * answers DELIVERY_STATUS_DELIVERED.
 */
public final class DeliverOrder {
  private static final SecureRandom RANDOM = new SecureRandom();
  private static final Metadata.Key<String> TRACEPARENT =
      Metadata.Key.of("traceparent", Metadata.ASCII_STRING_MARSHALLER);

  private DeliverOrder() {}

  public static void main(String[] args) throws InterruptedException {
    String address = System.getenv().getOrDefault("SIDECAR_ADDRESS", "127.0.0.1:50051");
    // The sidecar listens on loopback inside the pod, so plaintext is the norm.
    ManagedChannel channel = ManagedChannelBuilder.forTarget(address).usePlaintext().build();
    int exitCode;
    try {
      exitCode = deliver(channel);
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
    System.exit(exitCode);
  }

  private static int deliver(ManagedChannel channel) {
    String traceparent = "00-" + randomHex(16) + "-" + randomHex(8) + "-01";
    Metadata headers = new Metadata();
    headers.put(TRACEPARENT, traceparent);

    // The deadline bounds the sidecar's retries too: it never outlives the call.
    DeliveryServiceGrpc.DeliveryServiceBlockingStub stub =
        DeliveryServiceGrpc.newBlockingStub(channel)
            .withDeadlineAfter(10, TimeUnit.SECONDS)
            .withInterceptors(MetadataUtils.newAttachHeadersInterceptor(headers));

    DeliveryResult result;
    try {
      result = stub.deliver(DeliverRequest.newBuilder()
              .setEvent(orderCompleted())
              // DIRECT: answer once Bluecore has; WAIT or ENQUEUE may answer QUEUED.
              .setMode(DeliveryMode.DELIVERY_MODE_DIRECT)
              .build())
          .getResult();
    } catch (StatusRuntimeException e) {
      // Only a request that is unusable as a whole is an RPC error.
      System.err.println("Deliver failed: " + e.getStatus());
      return 1;
    }
    System.out.println("traceparent: " + traceparent);
    System.out.print(result);

    if (result.getStatus() != DeliveryStatus.DELIVERY_STATUS_DELIVERED) {
      System.err.println("not delivered: " + result.getStatus() + " " + result.getReason());
      return 1;
    }
    return 0;
  }

  /** The seed's Order Completed event, with a fresh message id. */
  static DataflyEvent orderCompleted() {
    Struct properties = Struct.newBuilder()
        .putFields("order_id", text("ORD-1001"))
        .putFields("revenue", number(49.90))
        .putFields("currency", text("USD"))
        .putFields("products", list(
            product("SKU123", 39.90, 1),
            product("SKU456", 10.00, 1)))
        .build();
    Instant now = Instant.now();
    return DataflyEvent.newBuilder()
        .setMessageId("java-example-" + randomHex(8))
        .setType("track")
        .setEvent("Order Completed")
        .setProperties(properties)
        .setTraits(Struct.newBuilder().putFields("email", text("jane@example.com")))
        .setContext(Context.newBuilder().putConsent("marketing", true))
        .setTimestamp(Timestamp.newBuilder()
            .setSeconds(now.getEpochSecond())
            .setNanos(now.getNano()))
        .build();
  }

  private static Value product(String id, double price, int quantity) {
    Struct product = Struct.newBuilder()
        .putFields("product_id", text(id))
        .putFields("price", number(price))
        .putFields("quantity", number(quantity))
        .build();
    return Value.newBuilder().setStructValue(product).build();
  }

  private static Value text(String s) {
    return Value.newBuilder().setStringValue(s).build();
  }

  private static Value number(double n) {
    return Value.newBuilder().setNumberValue(n).build();
  }

  private static Value list(Value... values) {
    ListValue.Builder list = ListValue.newBuilder();
    for (Value v : values) {
      list.addValues(v);
    }
    return Value.newBuilder().setListValue(list).build();
  }

  private static String randomHex(int bytes) {
    byte[] b = new byte[bytes];
    RANDOM.nextBytes(b);
    StringBuilder hex = new StringBuilder(bytes * 2);
    for (byte x : b) {
      hex.append(String.format("%02x", x));
    }
    return hex.toString();
  }
}
