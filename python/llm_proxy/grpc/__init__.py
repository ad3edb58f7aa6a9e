"""The gRPC front door (llm_proxy.v1.Gateway), run on each worker's own event loop."""

from .server import GrpcServer, start_grpc

__all__ = ["GrpcServer", "start_grpc"]
