// Entry point of the bluecore-sidecar client: re-exports the generated
// datafly.bluecore.v1 messages and the DeliveryServiceClient (src/gen is
// written by `make stubs` and never edited by hand).
export * from "./gen/datafly/bluecore/v1/delivery";
