"""bluecore-sidecar: a gRPC sidecar that delivers Datafly Signal events to Bluecore."""

__version__ = "0.1.0"
