// The package's entry point: the generated messages and the DeliveryService
// descriptor (protoc-gen-es), to call with @connectrpc/connect's createClient.
export * from "./gen/datafly/bluecore/v1/delivery_pb.js";
