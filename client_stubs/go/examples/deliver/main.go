// Command deliver sends the seed's "Order Completed" event to a running
// bluecore-sidecar and prints the DeliveryResult.
//
// It connects to SIDECAR_ADDRESS (default 127.0.0.1:50051), gives the call a
// 10 second deadline, sends a fresh W3C traceparent so the delivery joins a
// trace, and exits 0 only when the sidecar answers DELIVERY_STATUS_DELIVERED.
//
//	go run ./examples/deliver
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	bluecorev1 "github.com/datafly/bluecore-sidecar/client_stubs/go/datafly/bluecore/v1"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "deliver:", err)
		os.Exit(1)
	}
}

func run() error {
	address := os.Getenv("SIDECAR_ADDRESS")
	if address == "" {
		address = "127.0.0.1:50051"
	}
	// The sidecar listens on loopback inside the pod, so plaintext is the norm.
	conn, err := grpc.NewClient(address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := bluecorev1.NewDeliveryServiceClient(conn)

	event, err := orderCompleted()
	if err != nil {
		return err
	}

	// The deadline bounds the sidecar's retries too: it never outlives the call.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	traceparent := newTraceparent()
	ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", traceparent)

	resp, err := client.Deliver(ctx, &bluecorev1.DeliverRequest{
		Event: event,
		// DIRECT: answer once Bluecore has; WAIT or ENQUEUE may answer QUEUED.
		Mode: bluecorev1.DeliveryMode_DELIVERY_MODE_DIRECT,
	})
	if err != nil {
		// Only a request that is unusable as a whole is an RPC error.
		return fmt.Errorf("Deliver failed: %w", err)
	}
	result := resp.GetResult()
	fmt.Println("traceparent:", traceparent)
	fmt.Println(protojson.Format(result))

	if result.GetStatus() != bluecorev1.DeliveryStatus_DELIVERY_STATUS_DELIVERED {
		return fmt.Errorf("not delivered: %s %s", result.GetStatus(), result.GetReason())
	}
	return nil
}

// orderCompleted builds the seed's Order Completed event with a fresh message id.
func orderCompleted() (*bluecorev1.DataflyEvent, error) {
	properties, err := structpb.NewStruct(map[string]any{
		"order_id": "ORD-1001",
		"revenue":  49.90,
		"currency": "USD",
		"products": []any{
			map[string]any{"product_id": "SKU123", "price": 39.90, "quantity": 1},
			map[string]any{"product_id": "SKU456", "price": 10.00, "quantity": 1},
		},
	})
	if err != nil {
		return nil, err
	}
	traits, err := structpb.NewStruct(map[string]any{"email": "jane@example.com"})
	if err != nil {
		return nil, err
	}
	return &bluecorev1.DataflyEvent{
		MessageId:  "go-example-" + randomHex(8),
		Type:       "track",
		Event:      "Order Completed",
		Properties: properties,
		Traits:     traits,
		Context: &bluecorev1.Context{
			Consent: map[string]bool{"marketing": true},
		},
		Timestamp: timestamppb.Now(),
	}, nil
}

// newTraceparent returns a W3C trace context header for a new, sampled trace.
func newTraceparent() string {
	return "00-" + randomHex(16) + "-" + randomHex(8) + "-01"
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms.
	return hex.EncodeToString(b)
}
