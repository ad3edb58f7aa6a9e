"""The gRPC front door (llm_proxy.v1.Gateway): served by the Rust core on its own thread, each
call answered on the worker's event loop."""

from .server import GrpcServer, start_grpc

__all__ = ["GrpcServer", "start_grpc"]
