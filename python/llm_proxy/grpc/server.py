"""The gRPC server: the Gateway service, health and reflection, on the current event loop."""

from __future__ import annotations

import grpc  # type: ignore[import-untyped]
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import reflection  # type: ignore[import-untyped]

from ..config import Config
from ..pipeline import Pipeline
from .gen import gateway_pb2, gateway_pb2_grpc
from .servicer import GatewayServicer

SERVICE_NAME: str = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name


class GrpcServer:
    """A started grpc.aio server; stop it on the loop that started it."""

    def __init__(self, server: grpc.aio.Server, health: health.aio.HealthServicer, port: int):
        self._server = server
        self._health = health
        self.port = port

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, then let calls in flight finish for up to `grace` seconds."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)


async def start_grpc(pipeline: Pipeline, config: Config, port: int) -> GrpcServer:
    """Start the gRPC front door on `config.server.host:port` (shared across workers).

    Call it inside the worker's running loop: grpc.aio objects belong to the loop that made
    them and must never be created before a fork.
    """
    limit = 2 * config.server.max_body_bytes + 65536
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", -1),
        ]
    )
    servicer = GatewayServicer(pipeline, config)
    gateway_pb2_grpc.add_GatewayServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{config.server.host}:{port}"
    bound = server.add_insecure_port(address)
    if not bound:
        raise RuntimeError(f"gRPC could not listen on {address}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    return GrpcServer(server, checker, bound)
