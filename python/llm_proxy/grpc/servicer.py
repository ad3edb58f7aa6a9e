"""The Gateway service: protobuf in -> the HTTP door's JSON body -> pipeline -> protobuf out."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..calls import Call, Endpoint, decode_call, new_request_id
from ..config import Config
from ..errors import GatewayError
from ..pipeline import Pipeline
from . import bodies, replies, status
from .gen import gateway_pb2 as pb

log = logging.getLogger("llm_proxy.grpc")

# grpc.aio's ServicerContext (grpc ships no type information).
Context = Any
_R = TypeVar("_R")
_Q = TypeVar("_Q", bound=bodies.Request)


def _headers(context: Context) -> dict[str, str]:
    """Invocation metadata as call headers (gRPC keys are already lowercase)."""
    return {key: value for key, value in context.invocation_metadata() if not key.endswith("-bin")}


def _reply_metadata(call: Call, extra: list[tuple[str, str]]) -> status.Metadata:
    head = (
        ("x-request-id", call.request_id),
        ("x-llm-proxy-cache", call.cache_status),
        ("x-llm-proxy-overhead-ms", f"{call.overhead_ms():.3f}"),
    )
    return (*head, *status.passable(extra)) if extra else head


async def _abort(context: Context, exc: GatewayError, request_id: str) -> None:
    await context.abort(
        status.status_code(exc.status),
        status.details(exc),
        trailing_metadata=status.trailers(exc, request_id),
    )


def _internal(request_id: str) -> GatewayError:
    log.exception("unhandled error in gRPC call %s", request_id)
    return GatewayError(500, f"internal gateway error (request id {request_id})")


class GatewayServicer:
    """Implements llm_proxy.v1.Gateway; holds no state but the shared pipeline."""

    def __init__(self, pipeline: Pipeline, config: Config) -> None:
        self.pipeline = pipeline
        self.max_body = config.server.max_body_bytes
        self._models = pb.ListModelsResponse(
            models=[pb.Model(id=name, owned_by=m.provider) for name, m in config.models.items()]
        )

    def _call(
        self,
        endpoint: Endpoint,
        request: _Q,
        build: Callable[[_Q], bytes],
        context: Context,
        headers: dict[str, str],
        request_id: str,
    ) -> Call:
        body = build(request)
        if len(body) > self.max_body:
            raise GatewayError(413, f"request is larger than {self.max_body} bytes as JSON")
        try:
            call = decode_call(endpoint, body, door="grpc", request_id=request_id, headers=headers)
        except GatewayError as exc:
            raise bodies.blame_json(request, exc) from None
        remaining = context.time_remaining()
        if remaining is not None:
            call.deadline = time.monotonic() + remaining
        return call

    async def _unary(
        self,
        endpoint: Endpoint,
        request: _Q,
        context: Context,
        build: Callable[[_Q], bytes],
        render: Callable[[bytes, Call], _R],
    ) -> _R | None:
        headers = _headers(context)
        request_id = headers.get("x-request-id") or new_request_id()
        try:
            call = self._call(endpoint, request, build, context, headers, request_id)
            reply = await self.pipeline.complete(call)
            response = render(reply.body, call)
        except GatewayError as exc:
            failure = exc
        except Exception:
            failure = _internal(request_id)
        else:
            await context.send_initial_metadata(_reply_metadata(call, reply.headers))
            return response
        await _abort(context, failure, request_id)
        return None

    async def ChatCompletion(
        self, request: pb.ChatCompletionRequest, context: Context
    ) -> pb.ChatCompletionResponse | None:
        return await self._unary("chat", request, context, _chat_whole, replies.chat_response)

    async def Completion(
        self, request: pb.CompletionRequest, context: Context
    ) -> pb.CompletionResponse | None:
        return await self._unary(
            "completions", request, context, bodies.completion_body, replies.completion_response
        )

    async def Embed(self, request: pb.EmbedRequest, context: Context) -> pb.EmbedResponse | None:
        return await self._unary(
            "embeddings", request, context, bodies.embed_body, replies.embed_response
        )

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Context
    ) -> pb.ListModelsResponse:
        return self._models

    async def StreamChatCompletion(
        self, request: pb.StreamChatCompletionRequest, context: Context
    ) -> None:
        headers = _headers(context)
        request_id = headers.get("x-request-id") or new_request_id()
        try:
            call = self._call("chat", request, _chat_stream, context, headers, request_id)
            stream = await self.pipeline.stream(call)
        except GatewayError as exc:
            return await _abort(context, exc, request_id)
        except Exception:
            return await _abort(context, _internal(request_id), request_id)
        failure: GatewayError | None = None
        try:
            await context.send_initial_metadata(_reply_metadata(call, stream.headers))
            renderer = replies.ChunkRenderer(call)
            # A cancelled call (client gone, deadline passed) raises CancelledError here;
            # closing `events` then closes the upstream request.
            async with contextlib.aclosing(stream.__aiter__()) as events:
                async for event in events:
                    for message in renderer.render(event):
                        await context.write(message)
        except GatewayError as exc:
            failure = exc
        except Exception:
            failure = _internal(request_id)
        finally:
            await stream.aclose()  # also when cancelled before the first event
        if failure is not None:
            await _abort(context, failure, request_id)
        return None


def _chat_whole(request: pb.ChatCompletionRequest) -> bytes:
    return bodies.chat_body(request, stream=False)


def _chat_stream(request: pb.StreamChatCompletionRequest) -> bytes:
    return bodies.chat_body(request, stream=True)
