package com.datafly.bluecore.v1;

import static io.grpc.MethodDescriptor.generateFullMethodName;

/**
 * <pre>
 * DeadLetterService lets operators inspect, replay and purge the events the
 * durable queue gave up on (dead letters). It is served on the same port as
 * DeliveryService, only when the sidecar has a durable queue; without one
 * every RPC answers FAILED_PRECONDITION.
 * </pre>
 */
@io.grpc.stub.annotations.GrpcGenerated
public final class DeadLetterServiceGrpc {

  private DeadLetterServiceGrpc() {}

  public static final java.lang.String SERVICE_NAME = "datafly.bluecore.v1.DeadLetterService";

  // Static method descriptors that strictly reflect the proto.
  private static volatile io.grpc.MethodDescriptor<com.datafly.bluecore.v1.ListDeadLettersRequest,
      com.datafly.bluecore.v1.ListDeadLettersResponse> getListDeadLettersMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "ListDeadLetters",
      requestType = com.datafly.bluecore.v1.ListDeadLettersRequest.class,
      responseType = com.datafly.bluecore.v1.ListDeadLettersResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<com.datafly.bluecore.v1.ListDeadLettersRequest,
      com.datafly.bluecore.v1.ListDeadLettersResponse> getListDeadLettersMethod() {
    io.grpc.MethodDescriptor<com.datafly.bluecore.v1.ListDeadLettersRequest, com.datafly.bluecore.v1.ListDeadLettersResponse> getListDeadLettersMethod;
    if ((getListDeadLettersMethod = DeadLetterServiceGrpc.getListDeadLettersMethod) == null) {
      synchronized (DeadLetterServiceGrpc.class) {
        if ((getListDeadLettersMethod = DeadLetterServiceGrpc.getListDeadLettersMethod) == null) {
          DeadLetterServiceGrpc.getListDeadLettersMethod = getListDeadLettersMethod =
              io.grpc.MethodDescriptor.<com.datafly.bluecore.v1.ListDeadLettersRequest, com.datafly.bluecore.v1.ListDeadLettersResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "ListDeadLetters"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  com.datafly.bluecore.v1.ListDeadLettersRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  com.datafly.bluecore.v1.ListDeadLettersResponse.getDefaultInstance()))
              .setSchemaDescriptor(new DeadLetterServiceMethodDescriptorSupplier("ListDeadLetters"))
              .build();
        }
      }
    }
    return getListDeadLettersMethod;
  }

  private static volatile io.grpc.MethodDescriptor<com.datafly.bluecore.v1.GetDeadLetterRequest,
      com.datafly.bluecore.v1.GetDeadLetterResponse> getGetDeadLetterMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "GetDeadLetter",
      requestType = com.datafly.bluecore.v1.GetDeadLetterRequest.class,
      responseType = com.datafly.bluecore.v1.GetDeadLetterResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<com.datafly.bluecore.v1.GetDeadLetterRequest,
      com.datafly.bluecore.v1.GetDeadLetterResponse> getGetDeadLetterMethod() {
    io.grpc.MethodDescriptor<com.datafly.bluecore.v1.GetDeadLetterRequest, com.datafly.bluecore.v1.GetDeadLetterResponse> getGetDeadLetterMethod;
    if ((getGetDeadLetterMethod = DeadLetterServiceGrpc.getGetDeadLetterMethod) == null) {
      synchronized (DeadLetterServiceGrpc.class) {
        if ((getGetDeadLetterMethod = DeadLetterServiceGrpc.getGetDeadLetterMethod) == null) {
          DeadLetterServiceGrpc.getGetDeadLetterMethod = getGetDeadLetterMethod =
              io.grpc.MethodDescriptor.<com.datafly.bluecore.v1.GetDeadLetterRequest, com.datafly.bluecore.v1.GetDeadLetterResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "GetDeadLetter"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  com.datafly.bluecore.v1.GetDeadLetterRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  com.datafly.bluecore.v1.GetDeadLetterResponse.getDefaultInstance()))
              .setSchemaDescriptor(new DeadLetterServiceMethodDescriptorSupplier("GetDeadLetter"))
              .build();
        }
      }
    }
    return getGetDeadLetterMethod;
  }

  private static volatile io.grpc.MethodDescriptor<com.datafly.bluecore.v1.ReplayDeadLettersRequest,
      com.datafly.bluecore.v1.ReplayDeadLettersResponse> getReplayDeadLettersMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "ReplayDeadLetters",
      requestType = com.datafly.bluecore.v1.ReplayDeadLettersRequest.class,
      responseType = com.datafly.bluecore.v1.ReplayDeadLettersResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<com.datafly.bluecore.v1.ReplayDeadLettersRequest,
      com.datafly.bluecore.v1.ReplayDeadLettersResponse> getReplayDeadLettersMethod() {
    io.grpc.MethodDescriptor<com.datafly.bluecore.v1.ReplayDeadLettersRequest, com.datafly.bluecore.v1.ReplayDeadLettersResponse> getReplayDeadLettersMethod;
    if ((getReplayDeadLettersMethod = DeadLetterServiceGrpc.getReplayDeadLettersMethod) == null) {
      synchronized (DeadLetterServiceGrpc.class) {
        if ((getReplayDeadLettersMethod = DeadLetterServiceGrpc.getReplayDeadLettersMethod) == null) {
          DeadLetterServiceGrpc.getReplayDeadLettersMethod = getReplayDeadLettersMethod =
              io.grpc.MethodDescriptor.<com.datafly.bluecore.v1.ReplayDeadLettersRequest, com.datafly.bluecore.v1.ReplayDeadLettersResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "ReplayDeadLetters"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  com.datafly.bluecore.v1.ReplayDeadLettersRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  com.datafly.bluecore.v1.ReplayDeadLettersResponse.getDefaultInstance()))
              .setSchemaDescriptor(new DeadLetterServiceMethodDescriptorSupplier("ReplayDeadLetters"))
              .build();
        }
      }
    }
    return getReplayDeadLettersMethod;
  }

  private static volatile io.grpc.MethodDescriptor<com.datafly.bluecore.v1.PurgeDeadLettersRequest,
      com.datafly.bluecore.v1.PurgeDeadLettersResponse> getPurgeDeadLettersMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "PurgeDeadLetters",
      requestType = com.datafly.bluecore.v1.PurgeDeadLettersRequest.class,
      responseType = com.datafly.bluecore.v1.PurgeDeadLettersResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<com.datafly.bluecore.v1.PurgeDeadLettersRequest,
      com.datafly.bluecore.v1.PurgeDeadLettersResponse> getPurgeDeadLettersMethod() {
    io.grpc.MethodDescriptor<com.datafly.bluecore.v1.PurgeDeadLettersRequest, com.datafly.bluecore.v1.PurgeDeadLettersResponse> getPurgeDeadLettersMethod;
    if ((getPurgeDeadLettersMethod = DeadLetterServiceGrpc.getPurgeDeadLettersMethod) == null) {
      synchronized (DeadLetterServiceGrpc.class) {
        if ((getPurgeDeadLettersMethod = DeadLetterServiceGrpc.getPurgeDeadLettersMethod) == null) {
          DeadLetterServiceGrpc.getPurgeDeadLettersMethod = getPurgeDeadLettersMethod =
              io.grpc.MethodDescriptor.<com.datafly.bluecore.v1.PurgeDeadLettersRequest, com.datafly.bluecore.v1.PurgeDeadLettersResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "PurgeDeadLetters"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  com.datafly.bluecore.v1.PurgeDeadLettersRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  com.datafly.bluecore.v1.PurgeDeadLettersResponse.getDefaultInstance()))
              .setSchemaDescriptor(new DeadLetterServiceMethodDescriptorSupplier("PurgeDeadLetters"))
              .build();
        }
      }
    }
    return getPurgeDeadLettersMethod;
  }

  /**
   * Creates a new async stub that supports all call types for the service
   */
  public static DeadLetterServiceStub newStub(io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<DeadLetterServiceStub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<DeadLetterServiceStub>() {
        @java.lang.Override
        public DeadLetterServiceStub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new DeadLetterServiceStub(channel, callOptions);
        }
      };
    return DeadLetterServiceStub.newStub(factory, channel);
  }

  /**
   * Creates a new blocking-style stub that supports all types of calls on the service
   */
  public static DeadLetterServiceBlockingV2Stub newBlockingV2Stub(
      io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<DeadLetterServiceBlockingV2Stub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<DeadLetterServiceBlockingV2Stub>() {
        @java.lang.Override
        public DeadLetterServiceBlockingV2Stub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new DeadLetterServiceBlockingV2Stub(channel, callOptions);
        }
      };
    return DeadLetterServiceBlockingV2Stub.newStub(factory, channel);
  }

  /**
   * Creates a new blocking-style stub that supports unary and streaming output calls on the service
   */
  public static DeadLetterServiceBlockingStub newBlockingStub(
      io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<DeadLetterServiceBlockingStub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<DeadLetterServiceBlockingStub>() {
        @java.lang.Override
        public DeadLetterServiceBlockingStub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new DeadLetterServiceBlockingStub(channel, callOptions);
        }
      };
    return DeadLetterServiceBlockingStub.newStub(factory, channel);
  }

  /**
   * Creates a new ListenableFuture-style stub that supports unary calls on the service
   */
  public static DeadLetterServiceFutureStub newFutureStub(
      io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<DeadLetterServiceFutureStub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<DeadLetterServiceFutureStub>() {
        @java.lang.Override
        public DeadLetterServiceFutureStub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new DeadLetterServiceFutureStub(channel, callOptions);
        }
      };
    return DeadLetterServiceFutureStub.newStub(factory, channel);
  }

  /**
   * <pre>
   * DeadLetterService lets operators inspect, replay and purge the events the
   * durable queue gave up on (dead letters). It is served on the same port as
   * DeliveryService, only when the sidecar has a durable queue; without one
   * every RPC answers FAILED_PRECONDITION.
   * </pre>
   */
  public interface AsyncService {

    /**
     * <pre>
     * ListDeadLetters returns dead letters matching a filter, oldest first,
     * one page at a time. The events themselves are left out (see
     * GetDeadLetter). Safe to repeat.
     * </pre>
     */
    default void listDeadLetters(com.datafly.bluecore.v1.ListDeadLettersRequest request,
        io.grpc.stub.StreamObserver<com.datafly.bluecore.v1.ListDeadLettersResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getListDeadLettersMethod(), responseObserver);
    }

    /**
     * <pre>
     * GetDeadLetter returns one dead letter with its event. Safe to repeat.
     * Errors: NOT_FOUND when no dead letter has the id.
     * </pre>
     */
    default void getDeadLetter(com.datafly.bluecore.v1.GetDeadLetterRequest request,
        io.grpc.stub.StreamObserver<com.datafly.bluecore.v1.GetDeadLetterResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getGetDeadLetterMethod(), responseObserver);
    }

    /**
     * <pre>
     * ReplayDeadLetters puts the selected dead letters back into the queue,
     * due now, with their attempt count reset; they are mapped again with the
     * current mapping and settings when they are sent. A dead letter whose
     * message id has since been delivered or queued again is left where it is
     * and counted in `skipped_duplicates`. Errors: INVALID_ARGUMENT when
     * neither ids, a filter nor `all` select anything.
     * </pre>
     */
    default void replayDeadLetters(com.datafly.bluecore.v1.ReplayDeadLettersRequest request,
        io.grpc.stub.StreamObserver<com.datafly.bluecore.v1.ReplayDeadLettersResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getReplayDeadLettersMethod(), responseObserver);
    }

    /**
     * <pre>
     * PurgeDeadLetters deletes the selected dead letters for good. Repeating
     * it deletes nothing more. Errors: INVALID_ARGUMENT when neither ids, a
     * filter nor `all` select anything.
     * </pre>
     */
    default void purgeDeadLetters(com.datafly.bluecore.v1.PurgeDeadLettersRequest request,
        io.grpc.stub.StreamObserver<com.datafly.bluecore.v1.PurgeDeadLettersResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getPurgeDeadLettersMethod(), responseObserver);
    }
  }

  /**
   * Base class for the server implementation of the service DeadLetterService.
   * <pre>
   * DeadLetterService lets operators inspect, replay and purge the events the
   * durable queue gave up on (dead letters). It is served on the same port as
   * DeliveryService, only when the sidecar has a durable queue; without one
   * every RPC answers FAILED_PRECONDITION.
   * </pre>
   */
  public static abstract class DeadLetterServiceImplBase
      implements io.grpc.BindableService, AsyncService {

    @java.lang.Override public final io.grpc.ServerServiceDefinition bindService() {
      return DeadLetterServiceGrpc.bindService(this);
    }
  }

  /**
   * A stub to allow clients to do asynchronous rpc calls to service DeadLetterService.
   * <pre>
   * DeadLetterService lets operators inspect, replay and purge the events the
   * durable queue gave up on (dead letters). It is served on the same port as
   * DeliveryService, only when the sidecar has a durable queue; without one
   * every RPC answers FAILED_PRECONDITION.
   * </pre>
   */
  public static final class DeadLetterServiceStub
      extends io.grpc.stub.AbstractAsyncStub<DeadLetterServiceStub> {
    private DeadLetterServiceStub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected DeadLetterServiceStub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new DeadLetterServiceStub(channel, callOptions);
    }

    /**
     * <pre>
     * ListDeadLetters returns dead letters matching a filter, oldest first,
     * one page at a time. The events themselves are left out (see
     * GetDeadLetter). Safe to repeat.
     * </pre>
     */
    public void listDeadLetters(com.datafly.bluecore.v1.ListDeadLettersRequest request,
        io.grpc.stub.StreamObserver<com.datafly.bluecore.v1.ListDeadLettersResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getListDeadLettersMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * GetDeadLetter returns one dead letter with its event. Safe to repeat.
     * Errors: NOT_FOUND when no dead letter has the id.
     * </pre>
     */
    public void getDeadLetter(com.datafly.bluecore.v1.GetDeadLetterRequest request,
        io.grpc.stub.StreamObserver<com.datafly.bluecore.v1.GetDeadLetterResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getGetDeadLetterMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * ReplayDeadLetters puts the selected dead letters back into the queue,
     * due now, with their attempt count reset; they are mapped again with the
     * current mapping and settings when they are sent. A dead letter whose
     * message id has since been delivered or queued again is left where it is
     * and counted in `skipped_duplicates`. Errors: INVALID_ARGUMENT when
     * neither ids, a filter nor `all` select anything.
     * </pre>
     */
    public void replayDeadLetters(com.datafly.bluecore.v1.ReplayDeadLettersRequest request,
        io.grpc.stub.StreamObserver<com.datafly.bluecore.v1.ReplayDeadLettersResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getReplayDeadLettersMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * PurgeDeadLetters deletes the selected dead letters for good. Repeating
     * it deletes nothing more. Errors: INVALID_ARGUMENT when neither ids, a
     * filter nor `all` select anything.
     * </pre>
     */
    public void purgeDeadLetters(com.datafly.bluecore.v1.PurgeDeadLettersRequest request,
        io.grpc.stub.StreamObserver<com.datafly.bluecore.v1.PurgeDeadLettersResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getPurgeDeadLettersMethod(), getCallOptions()), request, responseObserver);
    }
  }

  /**
   * A stub to allow clients to do synchronous rpc calls to service DeadLetterService.
   * <pre>
   * DeadLetterService lets operators inspect, replay and purge the events the
   * durable queue gave up on (dead letters). It is served on the same port as
   * DeliveryService, only when the sidecar has a durable queue; without one
   * every RPC answers FAILED_PRECONDITION.
   * </pre>
   */
  public static final class DeadLetterServiceBlockingV2Stub
      extends io.grpc.stub.AbstractBlockingStub<DeadLetterServiceBlockingV2Stub> {
    private DeadLetterServiceBlockingV2Stub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected DeadLetterServiceBlockingV2Stub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new DeadLetterServiceBlockingV2Stub(channel, callOptions);
    }

    /**
     * <pre>
     * ListDeadLetters returns dead letters matching a filter, oldest first,
     * one page at a time. The events themselves are left out (see
     * GetDeadLetter). Safe to repeat.
     * </pre>
     */
    public com.datafly.bluecore.v1.ListDeadLettersResponse listDeadLetters(com.datafly.bluecore.v1.ListDeadLettersRequest request) throws io.grpc.StatusException {
      return io.grpc.stub.ClientCalls.blockingV2UnaryCall(
          getChannel(), getListDeadLettersMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * GetDeadLetter returns one dead letter with its event. Safe to repeat.
     * Errors: NOT_FOUND when no dead letter has the id.
     * </pre>
     */
    public com.datafly.bluecore.v1.GetDeadLetterResponse getDeadLetter(com.datafly.bluecore.v1.GetDeadLetterRequest request) throws io.grpc.StatusException {
      return io.grpc.stub.ClientCalls.blockingV2UnaryCall(
          getChannel(), getGetDeadLetterMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * ReplayDeadLetters puts the selected dead letters back into the queue,
     * due now, with their attempt count reset; they are mapped again with the
     * current mapping and settings when they are sent. A dead letter whose
     * message id has since been delivered or queued again is left where it is
     * and counted in `skipped_duplicates`. Errors: INVALID_ARGUMENT when
     * neither ids, a filter nor `all` select anything.
     * </pre>
     */
    public com.datafly.bluecore.v1.ReplayDeadLettersResponse replayDeadLetters(com.datafly.bluecore.v1.ReplayDeadLettersRequest request) throws io.grpc.StatusException {
      return io.grpc.stub.ClientCalls.blockingV2UnaryCall(
          getChannel(), getReplayDeadLettersMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * PurgeDeadLetters deletes the selected dead letters for good. Repeating
     * it deletes nothing more. Errors: INVALID_ARGUMENT when neither ids, a
     * filter nor `all` select anything.
     * </pre>
     */
    public com.datafly.bluecore.v1.PurgeDeadLettersResponse purgeDeadLetters(com.datafly.bluecore.v1.PurgeDeadLettersRequest request) throws io.grpc.StatusException {
      return io.grpc.stub.ClientCalls.blockingV2UnaryCall(
          getChannel(), getPurgeDeadLettersMethod(), getCallOptions(), request);
    }
  }

  /**
   * A stub to allow clients to do limited synchronous rpc calls to service DeadLetterService.
   * <pre>
   * DeadLetterService lets operators inspect, replay and purge the events the
   * durable queue gave up on (dead letters). It is served on the same port as
   * DeliveryService, only when the sidecar has a durable queue; without one
   * every RPC answers FAILED_PRECONDITION.
   * </pre>
   */
  public static final class DeadLetterServiceBlockingStub
      extends io.grpc.stub.AbstractBlockingStub<DeadLetterServiceBlockingStub> {
    private DeadLetterServiceBlockingStub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected DeadLetterServiceBlockingStub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new DeadLetterServiceBlockingStub(channel, callOptions);
    }

    /**
     * <pre>
     * ListDeadLetters returns dead letters matching a filter, oldest first,
     * one page at a time. The events themselves are left out (see
     * GetDeadLetter). Safe to repeat.
     * </pre>
     */
    public com.datafly.bluecore.v1.ListDeadLettersResponse listDeadLetters(com.datafly.bluecore.v1.ListDeadLettersRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getListDeadLettersMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * GetDeadLetter returns one dead letter with its event. Safe to repeat.
     * Errors: NOT_FOUND when no dead letter has the id.
     * </pre>
     */
    public com.datafly.bluecore.v1.GetDeadLetterResponse getDeadLetter(com.datafly.bluecore.v1.GetDeadLetterRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getGetDeadLetterMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * ReplayDeadLetters puts the selected dead letters back into the queue,
     * due now, with their attempt count reset; they are mapped again with the
     * current mapping and settings when they are sent. A dead letter whose
     * message id has since been delivered or queued again is left where it is
     * and counted in `skipped_duplicates`. Errors: INVALID_ARGUMENT when
     * neither ids, a filter nor `all` select anything.
     * </pre>
     */
    public com.datafly.bluecore.v1.ReplayDeadLettersResponse replayDeadLetters(com.datafly.bluecore.v1.ReplayDeadLettersRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getReplayDeadLettersMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * PurgeDeadLetters deletes the selected dead letters for good. Repeating
     * it deletes nothing more. Errors: INVALID_ARGUMENT when neither ids, a
     * filter nor `all` select anything.
     * </pre>
     */
    public com.datafly.bluecore.v1.PurgeDeadLettersResponse purgeDeadLetters(com.datafly.bluecore.v1.PurgeDeadLettersRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getPurgeDeadLettersMethod(), getCallOptions(), request);
    }
  }

  /**
   * A stub to allow clients to do ListenableFuture-style rpc calls to service DeadLetterService.
   * <pre>
   * DeadLetterService lets operators inspect, replay and purge the events the
   * durable queue gave up on (dead letters). It is served on the same port as
   * DeliveryService, only when the sidecar has a durable queue; without one
   * every RPC answers FAILED_PRECONDITION.
   * </pre>
   */
  public static final class DeadLetterServiceFutureStub
      extends io.grpc.stub.AbstractFutureStub<DeadLetterServiceFutureStub> {
    private DeadLetterServiceFutureStub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected DeadLetterServiceFutureStub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new DeadLetterServiceFutureStub(channel, callOptions);
    }

    /**
     * <pre>
     * ListDeadLetters returns dead letters matching a filter, oldest first,
     * one page at a time. The events themselves are left out (see
     * GetDeadLetter). Safe to repeat.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<com.datafly.bluecore.v1.ListDeadLettersResponse> listDeadLetters(
        com.datafly.bluecore.v1.ListDeadLettersRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getListDeadLettersMethod(), getCallOptions()), request);
    }

    /**
     * <pre>
     * GetDeadLetter returns one dead letter with its event. Safe to repeat.
     * Errors: NOT_FOUND when no dead letter has the id.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<com.datafly.bluecore.v1.GetDeadLetterResponse> getDeadLetter(
        com.datafly.bluecore.v1.GetDeadLetterRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getGetDeadLetterMethod(), getCallOptions()), request);
    }

    /**
     * <pre>
     * ReplayDeadLetters puts the selected dead letters back into the queue,
     * due now, with their attempt count reset; they are mapped again with the
     * current mapping and settings when they are sent. A dead letter whose
     * message id has since been delivered or queued again is left where it is
     * and counted in `skipped_duplicates`. Errors: INVALID_ARGUMENT when
     * neither ids, a filter nor `all` select anything.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<com.datafly.bluecore.v1.ReplayDeadLettersResponse> replayDeadLetters(
        com.datafly.bluecore.v1.ReplayDeadLettersRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getReplayDeadLettersMethod(), getCallOptions()), request);
    }

    /**
     * <pre>
     * PurgeDeadLetters deletes the selected dead letters for good. Repeating
     * it deletes nothing more. Errors: INVALID_ARGUMENT when neither ids, a
     * filter nor `all` select anything.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<com.datafly.bluecore.v1.PurgeDeadLettersResponse> purgeDeadLetters(
        com.datafly.bluecore.v1.PurgeDeadLettersRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getPurgeDeadLettersMethod(), getCallOptions()), request);
    }
  }

  private static final int METHODID_LIST_DEAD_LETTERS = 0;
  private static final int METHODID_GET_DEAD_LETTER = 1;
  private static final int METHODID_REPLAY_DEAD_LETTERS = 2;
  private static final int METHODID_PURGE_DEAD_LETTERS = 3;

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
        case METHODID_LIST_DEAD_LETTERS:
          serviceImpl.listDeadLetters((com.datafly.bluecore.v1.ListDeadLettersRequest) request,
              (io.grpc.stub.StreamObserver<com.datafly.bluecore.v1.ListDeadLettersResponse>) responseObserver);
          break;
        case METHODID_GET_DEAD_LETTER:
          serviceImpl.getDeadLetter((com.datafly.bluecore.v1.GetDeadLetterRequest) request,
              (io.grpc.stub.StreamObserver<com.datafly.bluecore.v1.GetDeadLetterResponse>) responseObserver);
          break;
        case METHODID_REPLAY_DEAD_LETTERS:
          serviceImpl.replayDeadLetters((com.datafly.bluecore.v1.ReplayDeadLettersRequest) request,
              (io.grpc.stub.StreamObserver<com.datafly.bluecore.v1.ReplayDeadLettersResponse>) responseObserver);
          break;
        case METHODID_PURGE_DEAD_LETTERS:
          serviceImpl.purgeDeadLetters((com.datafly.bluecore.v1.PurgeDeadLettersRequest) request,
              (io.grpc.stub.StreamObserver<com.datafly.bluecore.v1.PurgeDeadLettersResponse>) responseObserver);
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
          getListDeadLettersMethod(),
          io.grpc.stub.ServerCalls.asyncUnaryCall(
            new MethodHandlers<
              com.datafly.bluecore.v1.ListDeadLettersRequest,
              com.datafly.bluecore.v1.ListDeadLettersResponse>(
                service, METHODID_LIST_DEAD_LETTERS)))
        .addMethod(
          getGetDeadLetterMethod(),
          io.grpc.stub.ServerCalls.asyncUnaryCall(
            new MethodHandlers<
              com.datafly.bluecore.v1.GetDeadLetterRequest,
              com.datafly.bluecore.v1.GetDeadLetterResponse>(
                service, METHODID_GET_DEAD_LETTER)))
        .addMethod(
          getReplayDeadLettersMethod(),
          io.grpc.stub.ServerCalls.asyncUnaryCall(
            new MethodHandlers<
              com.datafly.bluecore.v1.ReplayDeadLettersRequest,
              com.datafly.bluecore.v1.ReplayDeadLettersResponse>(
                service, METHODID_REPLAY_DEAD_LETTERS)))
        .addMethod(
          getPurgeDeadLettersMethod(),
          io.grpc.stub.ServerCalls.asyncUnaryCall(
            new MethodHandlers<
              com.datafly.bluecore.v1.PurgeDeadLettersRequest,
              com.datafly.bluecore.v1.PurgeDeadLettersResponse>(
                service, METHODID_PURGE_DEAD_LETTERS)))
        .build();
  }

  private static abstract class DeadLetterServiceBaseDescriptorSupplier
      implements io.grpc.protobuf.ProtoFileDescriptorSupplier, io.grpc.protobuf.ProtoServiceDescriptorSupplier {
    DeadLetterServiceBaseDescriptorSupplier() {}

    @java.lang.Override
    public com.google.protobuf.Descriptors.FileDescriptor getFileDescriptor() {
      return com.datafly.bluecore.v1.DeliveryProto.getDescriptor();
    }

    @java.lang.Override
    public com.google.protobuf.Descriptors.ServiceDescriptor getServiceDescriptor() {
      return getFileDescriptor().findServiceByName("DeadLetterService");
    }
  }

  private static final class DeadLetterServiceFileDescriptorSupplier
      extends DeadLetterServiceBaseDescriptorSupplier {
    DeadLetterServiceFileDescriptorSupplier() {}
  }

  private static final class DeadLetterServiceMethodDescriptorSupplier
      extends DeadLetterServiceBaseDescriptorSupplier
      implements io.grpc.protobuf.ProtoMethodDescriptorSupplier {
    private final java.lang.String methodName;

    DeadLetterServiceMethodDescriptorSupplier(java.lang.String methodName) {
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
      synchronized (DeadLetterServiceGrpc.class) {
        result = serviceDescriptor;
        if (result == null) {
          serviceDescriptor = result = io.grpc.ServiceDescriptor.newBuilder(SERVICE_NAME)
              .setSchemaDescriptor(new DeadLetterServiceFileDescriptorSupplier())
              .addMethod(getListDeadLettersMethod())
              .addMethod(getGetDeadLetterMethod())
              .addMethod(getReplayDeadLettersMethod())
              .addMethod(getPurgeDeadLettersMethod())
              .build();
        }
      }
    }
    return result;
  }
}
