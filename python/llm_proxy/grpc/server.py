"""The gRPC server: the Rust core serves it (tonic, on its own thread); calls run on this loop."""

from __future__ import annotations

import asyncio

from .._core import GrpcServer as _RustServer
from ..config import Config
from ..pipeline import Pipeline
from .dispatch import CallDispatcher
from .gen import gateway_pb2
from .servicer import GatewayServicer

SERVICE_NAME: str = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name


def descriptor_set() -> bytes:
    """gateway.proto as an encoded FileDescriptorSet (for reflection), from the stubs.

    The stubs are checked against the proto (scripts/gen_grpc.py --check), so this is too.
    """
    proto: bytes = gateway_pb2.DESCRIPTOR.serialized_pb
    size, varint = len(proto), bytearray()
    while True:
        byte, size = size & 0x7F, size >> 7
        varint.append(byte | (0x80 if size else 0))
        if not size:
            break
    return b"\x0a" + bytes(varint) + proto  # field 1 (`file`), length-delimited


class GrpcServer:
    """A started gRPC door; stop it on the loop that started it."""

    def __init__(self, server: _RustServer, dispatcher: CallDispatcher) -> None:
        self._server = server
        self._dispatcher = dispatcher
        self.port = server.port

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, take no new calls, let calls in flight finish for `grace` s."""
        self._server.set_serving(False)
        self._server.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while not self._server.stopped and loop.time() < deadline:
            await asyncio.sleep(0.02)
        self._server.close()


async def start_grpc(pipeline: Pipeline, config: Config, port: int) -> GrpcServer:
    """Start the gRPC front door on `config.server.host:port` (shared across workers).

    Call it inside the worker's running loop, after the fork: the server's threads start here.
    """
    loop = asyncio.get_running_loop()
    dispatcher = CallDispatcher(loop, GatewayServicer(pipeline, config).handle)
    limit = 2 * config.server.max_body_bytes + 65536
    server = _RustServer(
        config.server.host, port, loop, dispatcher.on_events, descriptor_set(), limit
    )
    return GrpcServer(server, dispatcher)
