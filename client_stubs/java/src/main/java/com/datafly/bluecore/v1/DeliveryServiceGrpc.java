package com.datafly.bluecore.v1;

import static io.grpc.MethodDescriptor.generateFullMethodName;

/**
 * <pre>
 * DeliveryService maps Datafly events to Bluecore events and delivers them.
 * </pre>
 */
@io.grpc.stub.annotations.GrpcGenerated
public final class DeliveryServiceGrpc {

  private DeliveryServiceGrpc() {}

  public static final java.lang.String SERVICE_NAME = "datafly.bluecore.v1.DeliveryService";

  // Static method descriptors that strictly reflect the proto.
  private static volatile io.grpc.MethodDescriptor<com.datafly.bluecore.v1.DeliverRequest,
      com.datafly.bluecore.v1.DeliverResponse> getDeliverMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "Deliver",
      requestType = com.datafly.bluecore.v1.DeliverRequest.class,
      responseType = com.datafly.bluecore.v1.DeliverResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<com.datafly.bluecore.v1.DeliverRequest,
      com.datafly.bluecore.v1.DeliverResponse> getDeliverMethod() {
    io.grpc.MethodDescriptor<com.datafly.bluecore.v1.DeliverRequest, com.datafly.bluecore.v1.DeliverResponse> getDeliverMethod;
    if ((getDeliverMethod = DeliveryServiceGrpc.getDeliverMethod) == null) {
      synchronized (DeliveryServiceGrpc.class) {
        if ((getDeliverMethod = DeliveryServiceGrpc.getDeliverMethod) == null) {
          DeliveryServiceGrpc.getDeliverMethod = getDeliverMethod =
              io.grpc.MethodDescriptor.<com.datafly.bluecore.v1.DeliverRequest, com.datafly.bluecore.v1.DeliverResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "Deliver"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  com.datafly.bluecore.v1.DeliverRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  com.datafly.bluecore.v1.DeliverResponse.getDefaultInstance()))
              .setSchemaDescriptor(new DeliveryServiceMethodDescriptorSupplier("Deliver"))
              .build();
        }
      }
    }
    return getDeliverMethod;
  }

  private static volatile io.grpc.MethodDescriptor<com.datafly.bluecore.v1.DeliverBatchRequest,
      com.datafly.bluecore.v1.DeliverBatchResponse> getDeliverBatchMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "DeliverBatch",
      requestType = com.datafly.bluecore.v1.DeliverBatchRequest.class,
      responseType = com.datafly.bluecore.v1.DeliverBatchResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<com.datafly.bluecore.v1.DeliverBatchRequest,
      com.datafly.bluecore.v1.DeliverBatchResponse> getDeliverBatchMethod() {
    io.grpc.MethodDescriptor<com.datafly.bluecore.v1.DeliverBatchRequest, com.datafly.bluecore.v1.DeliverBatchResponse> getDeliverBatchMethod;
    if ((getDeliverBatchMethod = DeliveryServiceGrpc.getDeliverBatchMethod) == null) {
      synchronized (DeliveryServiceGrpc.class) {
        if ((getDeliverBatchMethod = DeliveryServiceGrpc.getDeliverBatchMethod) == null) {
          DeliveryServiceGrpc.getDeliverBatchMethod = getDeliverBatchMethod =
              io.grpc.MethodDescriptor.<com.datafly.bluecore.v1.DeliverBatchRequest, com.datafly.bluecore.v1.DeliverBatchResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "DeliverBatch"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  com.datafly.bluecore.v1.DeliverBatchRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  com.datafly.bluecore.v1.DeliverBatchResponse.getDefaultInstance()))
              .setSchemaDescriptor(new DeliveryServiceMethodDescriptorSupplier("DeliverBatch"))
              .build();
        }
      }
    }
    return getDeliverBatchMethod;
  }

  private static volatile io.grpc.MethodDescriptor<com.datafly.bluecore.v1.PreviewRequest,
      com.datafly.bluecore.v1.PreviewResponse> getPreviewMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "Preview",
      requestType = com.datafly.bluecore.v1.PreviewRequest.class,
      responseType = com.datafly.bluecore.v1.PreviewResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<com.datafly.bluecore.v1.PreviewRequest,
      com.datafly.bluecore.v1.PreviewResponse> getPreviewMethod() {
    io.grpc.MethodDescriptor<com.datafly.bluecore.v1.PreviewRequest, com.datafly.bluecore.v1.PreviewResponse> getPreviewMethod;
    if ((getPreviewMethod = DeliveryServiceGrpc.getPreviewMethod) == null) {
      synchronized (DeliveryServiceGrpc.class) {
        if ((getPreviewMethod = DeliveryServiceGrpc.getPreviewMethod) == null) {
          DeliveryServiceGrpc.getPreviewMethod = getPreviewMethod =
              io.grpc.MethodDescriptor.<com.datafly.bluecore.v1.PreviewRequest, com.datafly.bluecore.v1.PreviewResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "Preview"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  com.datafly.bluecore.v1.PreviewRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  com.datafly.bluecore.v1.PreviewResponse.getDefaultInstance()))
              .setSchemaDescriptor(new DeliveryServiceMethodDescriptorSupplier("Preview"))
              .build();
        }
      }
    }
    return getPreviewMethod;
  }

  private static volatile io.grpc.MethodDescriptor<com.datafly.bluecore.v1.WatchDeliveriesRequest,
      com.datafly.bluecore.v1.WatchDeliveriesResponse> getWatchDeliveriesMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "WatchDeliveries",
      requestType = com.datafly.bluecore.v1.WatchDeliveriesRequest.class,
      responseType = com.datafly.bluecore.v1.WatchDeliveriesResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.SERVER_STREAMING)
  public static io.grpc.MethodDescriptor<com.datafly.bluecore.v1.WatchDeliveriesRequest,
      com.datafly.bluecore.v1.WatchDeliveriesResponse> getWatchDeliveriesMethod() {
    io.grpc.MethodDescriptor<com.datafly.bluecore.v1.WatchDeliveriesRequest, com.datafly.bluecore.v1.WatchDeliveriesResponse> getWatchDeliveriesMethod;
    if ((getWatchDeliveriesMethod = DeliveryServiceGrpc.getWatchDeliveriesMethod) == null) {
      synchronized (DeliveryServiceGrpc.class) {
        if ((getWatchDeliveriesMethod = DeliveryServiceGrpc.getWatchDeliveriesMethod) == null) {
          DeliveryServiceGrpc.getWatchDeliveriesMethod = getWatchDeliveriesMethod =
              io.grpc.MethodDescriptor.<com.datafly.bluecore.v1.WatchDeliveriesRequest, com.datafly.bluecore.v1.WatchDeliveriesResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.SERVER_STREAMING)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "WatchDeliveries"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  com.datafly.bluecore.v1.WatchDeliveriesRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  com.datafly.bluecore.v1.WatchDeliveriesResponse.getDefaultInstance()))
              .setSchemaDescriptor(new DeliveryServiceMethodDescriptorSupplier("WatchDeliveries"))
              .build();
        }
      }
    }
    return getWatchDeliveriesMethod;
  }

  /**
   * Creates a new async stub that supports all call types for the service
   */
  public static DeliveryServiceStub newStub(io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<DeliveryServiceStub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<DeliveryServiceStub>() {
        @java.lang.Override
        public DeliveryServiceStub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new DeliveryServiceStub(channel, callOptions);
        }
      };
    return DeliveryServiceStub.newStub(factory, channel);
  }

  /**
   * Creates a new blocking-style stub that supports all types of calls on the service
   */
  public static DeliveryServiceBlockingV2Stub newBlockingV2Stub(
      io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<DeliveryServiceBlockingV2Stub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<DeliveryServiceBlockingV2Stub>() {
        @java.lang.Override
        public DeliveryServiceBlockingV2Stub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new DeliveryServiceBlockingV2Stub(channel, callOptions);
        }
      };
    return DeliveryServiceBlockingV2Stub.newStub(factory, channel);
  }

  /**
   * Creates a new blocking-style stub that supports unary and streaming output calls on the service
   */
  public static DeliveryServiceBlockingStub newBlockingStub(
      io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<DeliveryServiceBlockingStub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<DeliveryServiceBlockingStub>() {
        @java.lang.Override
        public DeliveryServiceBlockingStub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new DeliveryServiceBlockingStub(channel, callOptions);
        }
      };
    return DeliveryServiceBlockingStub.newStub(factory, channel);
  }

  /**
   * Creates a new ListenableFuture-style stub that supports unary calls on the service
   */
  public static DeliveryServiceFutureStub newFutureStub(
      io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<DeliveryServiceFutureStub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<DeliveryServiceFutureStub>() {
        @java.lang.Override
        public DeliveryServiceFutureStub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new DeliveryServiceFutureStub(channel, callOptions);
        }
      };
    return DeliveryServiceFutureStub.newStub(factory, channel);
  }

  /**
   * <pre>
   * DeliveryService maps Datafly events to Bluecore events and delivers them.
   * </pre>
   */
  public interface AsyncService {

    /**
     * <pre>
     * Deliver maps, gates and sends one event, and returns once the outcome is
     * known (or the call's deadline is near). It is idempotent by
     * `DataflyEvent.message_id`: a repeat within the dedup window sends nothing
     * and returns DELIVERY_STATUS_SKIPPED_DUPLICATE with the first outcome.
     * Errors: INVALID_ARGUMENT when `event` is missing, UNAVAILABLE while the
     * sidecar shuts down.
     * </pre>
     */
    default void deliver(com.datafly.bluecore.v1.DeliverRequest request,
        io.grpc.stub.StreamObserver<com.datafly.bluecore.v1.DeliverResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getDeliverMethod(), responseObserver);
    }

    /**
     * <pre>
     * DeliverBatch delivers up to the configured batch limit (500 by default)
     * of events concurrently and returns one result per event, in request
     * order. One bad event never fails the batch. Errors: INVALID_ARGUMENT
     * when the batch is empty or over the limit, UNAVAILABLE while the sidecar
     * shuts down.
     * </pre>
     */
    default void deliverBatch(com.datafly.bluecore.v1.DeliverBatchRequest request,
        io.grpc.stub.StreamObserver<com.datafly.bluecore.v1.DeliverBatchResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getDeliverBatchMethod(), responseObserver);
    }

    /**
     * <pre>
     * Preview returns the decision and the exact JSON body(ies) that Deliver
     * would send for an event, with the namespace token redacted. It sends
     * nothing, records nothing and is always safe to repeat. Errors:
     * INVALID_ARGUMENT when `event` is missing.
     * </pre>
     */
    default void preview(com.datafly.bluecore.v1.PreviewRequest request,
        io.grpc.stub.StreamObserver<com.datafly.bluecore.v1.PreviewResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getPreviewMethod(), responseObserver);
    }

    /**
     * <pre>
     * WatchDeliveries streams the outcome of every delivery as it happens,
     * starting from the moment of the call. A watcher that reads too slowly
     * loses results rather than slowing delivery; the number lost is reported
     * in `WatchDeliveriesResponse.dropped`. At most `SIDECAR_MAX_WATCHERS`
     * streams (default 100) are open at once; one more is refused with
     * RESOURCE_EXHAUSTED and the ErrorInfo reason `TOO_MANY_WATCHERS`. Message
     * ids and event names reach watchers as they appear in the sidecar's logs,
     * with the namespace token and email addresses replaced.
     * </pre>
     */
    default void watchDeliveries(com.datafly.bluecore.v1.WatchDeliveriesRequest request,
        io.grpc.stub.StreamObserver<com.datafly.bluecore.v1.WatchDeliveriesResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getWatchDeliveriesMethod(), responseObserver);
    }
  }

  /**
   * Base class for the server implementation of the service DeliveryService.
   * <pre>
   * DeliveryService maps Datafly events to Bluecore events and delivers them.
   * </pre>
   */
  public static abstract class DeliveryServiceImplBase
      implements io.grpc.BindableService, AsyncService {

    @java.lang.Override public final io.grpc.ServerServiceDefinition bindService() {
      return DeliveryServiceGrpc.bindService(this);
    }
  }

  /**
   * A stub to allow clients to do asynchronous rpc calls to service DeliveryService.
   * <pre>
   * DeliveryService maps Datafly events to Bluecore events and delivers them.
   * </pre>
   */
  public static final class DeliveryServiceStub
      extends io.grpc.stub.AbstractAsyncStub<DeliveryServiceStub> {
    private DeliveryServiceStub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected DeliveryServiceStub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new DeliveryServiceStub(channel, callOptions);
    }

    /**
     * <pre>
     * Deliver maps, gates and sends one event, and returns once the outcome is
     * known (or the call's deadline is near). It is idempotent by
     * `DataflyEvent.message_id`: a repeat within the dedup window sends nothing
     * and returns DELIVERY_STATUS_SKIPPED_DUPLICATE with the first outcome.
     * Errors: INVALID_ARGUMENT when `event` is missing, UNAVAILABLE while the
     * sidecar shuts down.
     * </pre>
     */
    public void deliver(com.datafly.bluecore.v1.DeliverRequest request,
        io.grpc.stub.StreamObserver<com.datafly.bluecore.v1.DeliverResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getDeliverMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * DeliverBatch delivers up to the configured batch limit (500 by default)
     * of events concurrently and returns one result per event, in request
     * order. One bad event never fails the batch. Errors: INVALID_ARGUMENT
     * when the batch is empty or over the limit, UNAVAILABLE while the sidecar
     * shuts down.
     * </pre>
     */
    public void deliverBatch(com.datafly.bluecore.v1.DeliverBatchRequest request,
        io.grpc.stub.StreamObserver<com.datafly.bluecore.v1.DeliverBatchResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getDeliverBatchMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * Preview returns the decision and the exact JSON body(ies) that Deliver
     * would send for an event, with the namespace token redacted. It sends
     * nothing, records nothing and is always safe to repeat. Errors:
     * INVALID_ARGUMENT when `event` is missing.
     * </pre>
     */
    public void preview(com.datafly.bluecore.v1.PreviewRequest request,
        io.grpc.stub.StreamObserver<com.datafly.bluecore.v1.PreviewResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getPreviewMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * WatchDeliveries streams the outcome of every delivery as it happens,
     * starting from the moment of the call. A watcher that reads too slowly
     * loses results rather than slowing delivery; the number lost is reported
     * in `WatchDeliveriesResponse.dropped`. At most `SIDECAR_MAX_WATCHERS`
     * streams (default 100) are open at once; one more is refused with
     * RESOURCE_EXHAUSTED and the ErrorInfo reason `TOO_MANY_WATCHERS`. Message
     * ids and event names reach watchers as they appear in the sidecar's logs,
     * with the namespace token and email addresses replaced.
     * </pre>
     */
    public void watchDeliveries(com.datafly.bluecore.v1.WatchDeliveriesRequest request,
        io.grpc.stub.StreamObserver<com.datafly.bluecore.v1.WatchDeliveriesResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncServerStreamingCall(
          getChannel().newCall(getWatchDeliveriesMethod(), getCallOptions()), request, responseObserver);
    }
  }

  /**
   * A stub to allow clients to do synchronous rpc calls to service DeliveryService.
   * <pre>
   * DeliveryService maps Datafly events to Bluecore events and delivers them.
   * </pre>
   */
  public static final class DeliveryServiceBlockingV2Stub
      extends io.grpc.stub.AbstractBlockingStub<DeliveryServiceBlockingV2Stub> {
    private DeliveryServiceBlockingV2Stub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected DeliveryServiceBlockingV2Stub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new DeliveryServiceBlockingV2Stub(channel, callOptions);
    }

    /**
     * <pre>
     * Deliver maps, gates and sends one event, and returns once the outcome is
     * known (or the call's deadline is near). It is idempotent by
     * `DataflyEvent.message_id`: a repeat within the dedup window sends nothing
     * and returns DELIVERY_STATUS_SKIPPED_DUPLICATE with the first outcome.
     * Errors: INVALID_ARGUMENT when `event` is missing, UNAVAILABLE while the
     * sidecar shuts down.
     * </pre>
     */
    public com.datafly.bluecore.v1.DeliverResponse deliver(com.datafly.bluecore.v1.DeliverRequest request) throws io.grpc.StatusException {
      return io.grpc.stub.ClientCalls.blockingV2UnaryCall(
          getChannel(), getDeliverMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * DeliverBatch delivers up to the configured batch limit (500 by default)
     * of events concurrently and returns one result per event, in request
     * order. One bad event never fails the batch. Errors: INVALID_ARGUMENT
     * when the batch is empty or over the limit, UNAVAILABLE while the sidecar
     * shuts down.
     * </pre>
     */
    public com.datafly.bluecore.v1.DeliverBatchResponse deliverBatch(com.datafly.bluecore.v1.DeliverBatchRequest request) throws io.grpc.StatusException {
      return io.grpc.stub.ClientCalls.blockingV2UnaryCall(
          getChannel(), getDeliverBatchMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * Preview returns the decision and the exact JSON body(ies) that Deliver
     * would send for an event, with the namespace token redacted. It sends
     * nothing, records nothing and is always safe to repeat. Errors:
     * INVALID_ARGUMENT when `event` is missing.
     * </pre>
     */
    public com.datafly.bluecore.v1.PreviewResponse preview(com.datafly.bluecore.v1.PreviewRequest request) throws io.grpc.StatusException {
      return io.grpc.stub.ClientCalls.blockingV2UnaryCall(
          getChannel(), getPreviewMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * WatchDeliveries streams the outcome of every delivery as it happens,
     * starting from the moment of the call. A watcher that reads too slowly
     * loses results rather than slowing delivery; the number lost is reported
     * in `WatchDeliveriesResponse.dropped`. At most `SIDECAR_MAX_WATCHERS`
     * streams (default 100) are open at once; one more is refused with
     * RESOURCE_EXHAUSTED and the ErrorInfo reason `TOO_MANY_WATCHERS`. Message
     * ids and event names reach watchers as they appear in the sidecar's logs,
     * with the namespace token and email addresses replaced.
     * </pre>
     */
    @io.grpc.ExperimentalApi("https://github.com/grpc/grpc-java/issues/10918")
    public io.grpc.stub.BlockingClientCall<?, com.datafly.bluecore.v1.WatchDeliveriesResponse>
        watchDeliveries(com.datafly.bluecore.v1.WatchDeliveriesRequest request) {
      return io.grpc.stub.ClientCalls.blockingV2ServerStreamingCall(
          getChannel(), getWatchDeliveriesMethod(), getCallOptions(), request);
    }
  }

  /**
   * A stub to allow clients to do limited synchronous rpc calls to service DeliveryService.
   * <pre>
   * DeliveryService maps Datafly events to Bluecore events and delivers them.
   * </pre>
   */
  public static final class DeliveryServiceBlockingStub
      extends io.grpc.stub.AbstractBlockingStub<DeliveryServiceBlockingStub> {
    private DeliveryServiceBlockingStub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected DeliveryServiceBlockingStub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new DeliveryServiceBlockingStub(channel, callOptions);
    }

    /**
     * <pre>
     * Deliver maps, gates and sends one event, and returns once the outcome is
     * known (or the call's deadline is near). It is idempotent by
     * `DataflyEvent.message_id`: a repeat within the dedup window sends nothing
     * and returns DELIVERY_STATUS_SKIPPED_DUPLICATE with the first outcome.
     * Errors: INVALID_ARGUMENT when `event` is missing, UNAVAILABLE while the
     * sidecar shuts down.
     * </pre>
     */
    public com.datafly.bluecore.v1.DeliverResponse deliver(com.datafly.bluecore.v1.DeliverRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getDeliverMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * DeliverBatch delivers up to the configured batch limit (500 by default)
     * of events concurrently and returns one result per event, in request
     * order. One bad event never fails the batch. Errors: INVALID_ARGUMENT
     * when the batch is empty or over the limit, UNAVAILABLE while the sidecar
     * shuts down.
     * </pre>
     */
    public com.datafly.bluecore.v1.DeliverBatchResponse deliverBatch(com.datafly.bluecore.v1.DeliverBatchRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getDeliverBatchMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * Preview returns the decision and the exact JSON body(ies) that Deliver
     * would send for an event, with the namespace token redacted. It sends
     * nothing, records nothing and is always safe to repeat. Errors:
     * INVALID_ARGUMENT when `event` is missing.
     * </pre>
     */
    public com.datafly.bluecore.v1.PreviewResponse preview(com.datafly.bluecore.v1.PreviewRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getPreviewMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * WatchDeliveries streams the outcome of every delivery as it happens,
     * starting from the moment of the call. A watcher that reads too slowly
     * loses results rather than slowing delivery; the number lost is reported
     * in `WatchDeliveriesResponse.dropped`. At most `SIDECAR_MAX_WATCHERS`
     * streams (default 100) are open at once; one more is refused with
     * RESOURCE_EXHAUSTED and the ErrorInfo reason `TOO_MANY_WATCHERS`. Message
     * ids and event names reach watchers as they appear in the sidecar's logs,
     * with the namespace token and email addresses replaced.
     * </pre>
     */
    public java.util.Iterator<com.datafly.bluecore.v1.WatchDeliveriesResponse> watchDeliveries(
        com.datafly.bluecore.v1.WatchDeliveriesRequest request) {
      return io.grpc.stub.ClientCalls.blockingServerStreamingCall(
          getChannel(), getWatchDeliveriesMethod(), getCallOptions(), request);
    }
  }

  /**
   * A stub to allow clients to do ListenableFuture-style rpc calls to service DeliveryService.
   * <pre>
   * DeliveryService maps Datafly events to Bluecore events and delivers them.
   * </pre>
   */
  public static final class DeliveryServiceFutureStub
      extends io.grpc.stub.AbstractFutureStub<DeliveryServiceFutureStub> {
    private DeliveryServiceFutureStub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected DeliveryServiceFutureStub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new DeliveryServiceFutureStub(channel, callOptions);
    }

    /**
     * <pre>
     * Deliver maps, gates and sends one event, and returns once the outcome is
     * known (or the call's deadline is near). It is idempotent by
     * `DataflyEvent.message_id`: a repeat within the dedup window sends nothing
     * and returns DELIVERY_STATUS_SKIPPED_DUPLICATE with the first outcome.
     * Errors: INVALID_ARGUMENT when `event` is missing, UNAVAILABLE while the
     * sidecar shuts down.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<com.datafly.bluecore.v1.DeliverResponse> deliver(
        com.datafly.bluecore.v1.DeliverRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getDeliverMethod(), getCallOptions()), request);
    }

    /**
     * <pre>
     * DeliverBatch delivers up to the configured batch limit (500 by default)
     * of events concurrently and returns one result per event, in request
     * order. One bad event never fails the batch. Errors: INVALID_ARGUMENT
     * when the batch is empty or over the limit, UNAVAILABLE while the sidecar
     * shuts down.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<com.datafly.bluecore.v1.DeliverBatchResponse> deliverBatch(
        com.datafly.bluecore.v1.DeliverBatchRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getDeliverBatchMethod(), getCallOptions()), request);
    }

    /**
     * <pre>
     * Preview returns the decision and the exact JSON body(ies) that Deliver
     * would send for an event, with the namespace token redacted. It sends
     * nothing, records nothing and is always safe to repeat. Errors:
     * INVALID_ARGUMENT when `event` is missing.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<com.datafly.bluecore.v1.PreviewResponse> preview(
        com.datafly.bluecore.v1.PreviewRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getPreviewMethod(), getCallOptions()), request);
    }
  }

  private static final int METHODID_DELIVER = 0;
  private static final int METHODID_DELIVER_BATCH = 1;
  private static final int METHODID_PREVIEW = 2;
  private static final int METHODID_WATCH_DELIVERIES = 3;

  private static final class MethodHandlers<Req, Resp> implements
      io.grpc.stub.ServerCalls.UnaryMethod<Req, Resp>,
      io.grpc.stub.ServerCalls.ServerStreamingMethod<Req, Resp>,
      io.grpc.stub.ServerCalls.ClientStreamingMethod<Req, Resp>,
      io.grpc.stub.ServerCalls.BidiStreamingMethod<Req, Resp> {
    private final AsyncService serviceImpl;
    private final int methodId;

    MethodHandlers(AsyncService serviceImpl, int methodId) {
      this.serviceImpl = serviceImpl;
      this.methodId = methodId;
    }

    @java.lang.Override
    @java.lang.SuppressWarnings("unchecked")
    public void invoke(Req request, io.grpc.stub.StreamObserver<Resp> responseObserver) {
      switch (methodId) {
        case METHODID_DELIVER:
          serviceImpl.deliver((com.datafly.bluecore.v1.DeliverRequest) request,
              (io.grpc.stub.StreamObserver<com.datafly.bluecore.v1.DeliverResponse>) responseObserver);
          break;
        case METHODID_DELIVER_BATCH:
          serviceImpl.deliverBatch((com.datafly.bluecore.v1.DeliverBatchRequest) request,
              (io.grpc.stub.StreamObserver<com.datafly.bluecore.v1.DeliverBatchResponse>) responseObserver);
          break;
        case METHODID_PREVIEW:
          serviceImpl.preview((com.datafly.bluecore.v1.PreviewRequest) request,
              (io.grpc.stub.StreamObserver<com.datafly.bluecore.v1.PreviewResponse>) responseObserver);
          break;
        case METHODID_WATCH_DELIVERIES:
          serviceImpl.watchDeliveries((com.datafly.bluecore.v1.WatchDeliveriesRequest) request,
              (io.grpc.stub.StreamObserver<com.datafly.bluecore.v1.WatchDeliveriesResponse>) responseObserver);
          break;
        default:
          throw new AssertionError();
      }
    }

    @java.lang.Override
    @java.lang.SuppressWarnings("unchecked")
    public io.grpc.stub.StreamObserver<Req> invoke(
        io.grpc.stub.StreamObserver<Resp> responseObserver) {
      switch (methodId) {
        default:
          throw new AssertionError();
      }
    }
  }

  public static final io.grpc.ServerServiceDefinition bindService(AsyncService service) {
    return io.grpc.ServerServiceDefinition.builder(getServiceDescriptor())
        .addMethod(
          getDeliverMethod(),
          io.grpc.stub.ServerCalls.asyncUnaryCall(
            new MethodHandlers<
              com.datafly.bluecore.v1.DeliverRequest,
              com.datafly.bluecore.v1.DeliverResponse>(
                service, METHODID_DELIVER)))
        .addMethod(
          getDeliverBatchMethod(),
          io.grpc.stub.ServerCalls.asyncUnaryCall(
            new MethodHandlers<
              com.datafly.bluecore.v1.DeliverBatchRequest,
              com.datafly.bluecore.v1.DeliverBatchResponse>(
                service, METHODID_DELIVER_BATCH)))
        .addMethod(
          getPreviewMethod(),
          io.grpc.stub.ServerCalls.asyncUnaryCall(
            new MethodHandlers<
              com.datafly.bluecore.v1.PreviewRequest,
              com.datafly.bluecore.v1.PreviewResponse>(
                service, METHODID_PREVIEW)))
        .addMethod(
          getWatchDeliveriesMethod(),
          io.grpc.stub.ServerCalls.asyncServerStreamingCall(
            new MethodHandlers<
              com.datafly.bluecore.v1.WatchDeliveriesRequest,
              com.datafly.bluecore.v1.WatchDeliveriesResponse>(
                service, METHODID_WATCH_DELIVERIES)))
        .build();
  }

  private static abstract class DeliveryServiceBaseDescriptorSupplier
      implements io.grpc.protobuf.ProtoFileDescriptorSupplier, io.grpc.protobuf.ProtoServiceDescriptorSupplier {
    DeliveryServiceBaseDescriptorSupplier() {}

    @java.lang.Override
    public com.google.protobuf.Descriptors.FileDescriptor getFileDescriptor() {
      return com.datafly.bluecore.v1.DeliveryProto.getDescriptor();
    }

    @java.lang.Override
    public com.google.protobuf.Descriptors.ServiceDescriptor getServiceDescriptor() {
      return getFileDescriptor().findServiceByName("DeliveryService");
    }
  }

  private static final class DeliveryServiceFileDescriptorSupplier
      extends DeliveryServiceBaseDescriptorSupplier {
    DeliveryServiceFileDescriptorSupplier() {}
  }

  private static final class DeliveryServiceMethodDescriptorSupplier
      extends DeliveryServiceBaseDescriptorSupplier
      implements io.grpc.protobuf.ProtoMethodDescriptorSupplier {
    private final java.lang.String methodName;

    DeliveryServiceMethodDescriptorSupplier(java.lang.String methodName) {
      this.methodName = methodName;
    }

    @java.lang.Override
    public com.google.protobuf.Descriptors.MethodDescriptor getMethodDescriptor() {
      return getServiceDescriptor().findMethodByName(methodName);
    }
  }

  private static volatile io.grpc.ServiceDescriptor serviceDescriptor;

  public static io.grpc.ServiceDescriptor getServiceDescriptor() {
    io.grpc.ServiceDescriptor result = serviceDescriptor;
    if (result == null) {
      synchronized (DeliveryServiceGrpc.class) {
        result = serviceDescriptor;
        if (result == null) {
          serviceDescriptor = result = io.grpc.ServiceDescriptor.newBuilder(SERVICE_NAME)
              .setSchemaDescriptor(new DeliveryServiceFileDescriptorSupplier())
              .addMethod(getDeliverMethod())
              .addMethod(getDeliverBatchMethod())
              .addMethod(getPreviewMethod())
              .addMethod(getWatchDeliveriesMethod())
              .build();
        }
      }
    }
    return result;
  }
}
