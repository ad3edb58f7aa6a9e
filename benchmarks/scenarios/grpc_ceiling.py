"""The ceiling for the gRPC front door: grpc.aio on uvloop answering a fixed reply.

Same service, same messages and the same server options as the gateway, but the handler does
no work: it returns a prebuilt `ChatCompletionResponse` (optionally after sending the same
initial metadata the gateway sends). `grpc_bench --ceiling` drives it with the same
load generator, so the difference to the gateway is what our code and the pipeline cost.

    python -m benchmarks.scenarios.grpc_ceiling --port 50051 [--metadata] [--rust]

`--rust` serves the same fixed reply from the Rust core's server (`_core.GrpcServer`): each call
crosses the hand-off to the loop and a do-nothing coroutine answers it, which is the floor of
the gateway's gRPC door.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from llm_proxy.grpc.gen import gateway_pb2 as pb
from llm_proxy.grpc.gen import gateway_pb2_grpc as pb_grpc

REPLY = pb.ChatCompletionResponse(
    id="chatcmpl-mock",
    model="gpt-4o-mini",
    created=1700000000,
    choices=[
        pb.ChatChoice(
            index=0,
            message=pb.ChatMessage(role="assistant", content="Hamlet, in two sentences."),
            finish_reason="stop",
        )
    ],
    usage=pb.Usage(prompt_tokens=25, completion_tokens=8, total_tokens=33),
    request_id="0" * 32,
    cache_status="miss",
)
METADATA = (
    ("x-request-id", "0" * 32),
    ("x-llm-proxy-cache", "miss"),
    ("x-llm-proxy-overhead-ms", "0.000"),
)
# The gateway's server options (llm_proxy.grpc.server), less the message size limits.
OPTIONS = [("grpc.so_reuseport", 1)]


class Fixed(pb_grpc.GatewayServicer):  # type: ignore[misc]
    def __init__(self, metadata: bool) -> None:
        self.metadata = metadata

    async def ChatCompletion(self, request: Any, context: Any) -> Any:
        if self.metadata:
            await context.send_initial_metadata(METADATA)
        return REPLY

    async def ListModels(self, request: Any, context: Any) -> Any:
        return pb.ListModelsResponse(models=[pb.Model(id="gpt-4o-mini", owned_by="up")])


async def serve(port: int, metadata: bool, options: list[tuple[str, Any]]) -> None:
    import grpc
    from grpc_health.v1 import health, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    server = grpc.aio.server(options=[*OPTIONS, *options])
    pb_grpc.add_GatewayServicer_to_server(Fixed(metadata), server)
    # Health and reflection too, as the gateway registers them: grpc.aio waits on one
    # request-call future per registered method.
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    names = ("llm_proxy.v1.Gateway", health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    await stopped.wait()
    await server.stop(0)


async def serve_rust(port: int, metadata: bool) -> None:
    from llm_proxy._core import GrpcCall, GrpcServer
    from llm_proxy.grpc.dispatch import CallDispatcher
    from llm_proxy.grpc.server import descriptor_set

    reply = REPLY.SerializeToString()
    pairs = list(METADATA) if metadata else []

    async def answer(call: GrpcCall) -> None:
        call.answer(reply, pairs)

    loop = asyncio.get_running_loop()
    dispatcher = CallDispatcher(loop, answer)
    server = GrpcServer("127.0.0.1", port, loop, dispatcher.on_events, descriptor_set(), 1 << 22)
    print("ready", flush=True)
    stopped = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    await stopped.wait()
    server.close()


def main() -> None:
    import uvloop

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--metadata", action="store_true", help="send initial metadata too")
    parser.add_argument(
        "--option", action="append", default=[], help="a server channel option, KEY=INT"
    )
    parser.add_argument("--rust", action="store_true", help="serve from the Rust core")
    args = parser.parse_args()
    if args.rust:
        uvloop.run(serve_rust(args.port, args.metadata))
        return
    options = [(k, int(v)) for k, v in (o.split("=", 1) for o in args.option)]
    uvloop.run(serve(args.port, args.metadata, options))


if __name__ == "__main__":
    main()
