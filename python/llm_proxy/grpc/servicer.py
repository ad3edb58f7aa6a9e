"""The Gateway service: protobuf in -> the HTTP door's JSON body -> pipeline -> protobuf out.

Each call comes from the Rust server as a `GrpcCall` (the request message as bytes, its
metadata and deadline) and is answered through it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from .._core import GrpcCall, grpc_chat_body, grpc_chat_response
from ..calls import Call, Endpoint, decode_call, new_request_id
from ..config import Config
from ..errors import GatewayError, bad_request
from ..pipeline import Pipeline
from . import bodies, replies, status
from .dispatch import TAKEN, CallGone, deliver
from .gen import gateway_pb2 as pb

log = logging.getLogger("llm_proxy.grpc")

_Q = TypeVar("_Q", bound=bodies.Request)


def _reply_metadata(call: Call, extra: list[tuple[str, str]]) -> status.Metadata:
    head = [
        ("x-request-id", call.request_id),
        ("x-llm-proxy-cache", call.cache_status),
        ("x-llm-proxy-overhead-ms", f"{call.overhead_ms():.3f}"),
    ]
    if extra:
        head.extend(status.passable(extra))
    return head


async def _abort(grpc_call: GrpcCall, exc: GatewayError, request_id: str) -> None:
    code, details = status.status_code(exc.status), status.details(exc)
    trailers = status.trailers(exc, request_id)
    with contextlib.suppress(CallGone):
        await deliver(functools.partial(grpc_call.fail, code, details, trailers))


def _internal(request_id: str) -> GatewayError:
    log.exception("unhandled error in gRPC call %s", request_id)
    return GatewayError(500, f"internal gateway error (request id {request_id})")


def _parse(message_type: Any, data: bytes) -> Any:
    try:
        return message_type.FromString(data)
    except DecodeError:
        name = message_type.DESCRIPTOR.full_name
        raise bad_request(f"the request is not a valid {name} message") from None


class GatewayServicer:
    """Implements llm_proxy.v1.Gateway; holds no state but the shared pipeline."""

    def __init__(self, pipeline: Pipeline, config: Config) -> None:
        self.pipeline = pipeline
        self.max_body = config.server.max_body_bytes
        self._models = pb.ListModelsResponse(
            models=[pb.Model(id=name, owned_by=m.provider) for name, m in config.models.items()]
        ).SerializeToString()
        self._methods: dict[str, Callable[[GrpcCall], Awaitable[None]]] = {
            "ChatCompletion": self._chat,
            "StreamChatCompletion": self._stream,
            "Completion": self._completion,
            "Embed": self._embed,
            "ListModels": self._list_models,
        }

    async def handle(self, grpc_call: GrpcCall) -> None:
        """Answers one call (the Rust server only hands over the five methods)."""
        await self._methods[grpc_call.method](grpc_call)

    def _call(
        self,
        endpoint: Endpoint,
        message_type: Any,
        build: Callable[[_Q], bytes],
        grpc_call: GrpcCall,
        headers: dict[str, str],
        request_id: str,
        body: bytes | None = None,
    ) -> Call:
        """`body`: the JSON body when the Rust translation made it (None: build it here)."""
        request = None
        if body is None:
            request = _parse(message_type, grpc_call.message)
            body = build(request)
        if len(body) > self.max_body:
            raise GatewayError(413, f"request is larger than {self.max_body} bytes as JSON")
        try:
            call = decode_call(endpoint, body, door="grpc", request_id=request_id, headers=headers)
        except GatewayError as exc:
            if request is None:
                request = _parse(message_type, grpc_call.message)
            raise bodies.blame_json(request, exc) from None
        remaining = grpc_call.timeout
        if remaining is not None:
            call.deadline = time.monotonic() + remaining
        return call

    async def _unary(
        self,
        grpc_call: GrpcCall,
        endpoint: Endpoint,
        message_type: Any,
        build: Callable[[_Q], bytes],
        render: Callable[[bytes, Call], Any],
        fast: bool = False,
    ) -> None:
        headers = grpc_call.metadata
        request_id = headers.get("x-request-id") or new_request_id()
        try:
            body = grpc_chat_body(grpc_call.message, False) if fast else None
            call = self._call(endpoint, message_type, build, grpc_call, headers, request_id, body)
            reply = await self.pipeline.complete(call)
            response = (
                grpc_chat_response(reply.body, call.request_id, call.cache_status) if fast else None
            ) or render(reply.body, call).SerializeToString()
        except GatewayError as exc:
            failure = exc
        except Exception:
            failure = _internal(request_id)
        else:
            grpc_call.answer(response, _reply_metadata(call, reply.headers))
            return
        await _abort(grpc_call, failure, request_id)

    async def _chat(self, grpc_call: GrpcCall) -> None:
        await self._unary(
            grpc_call,
            "chat",
            pb.ChatCompletionRequest,
            _chat_whole,
            replies.chat_response,
            fast=True,
        )

    async def _completion(self, grpc_call: GrpcCall) -> None:
        await self._unary(
            grpc_call,
            "completions",
            pb.CompletionRequest,
            bodies.completion_body,
            replies.completion_response,
        )

    async def _embed(self, grpc_call: GrpcCall) -> None:
        await self._unary(
            grpc_call, "embeddings", pb.EmbedRequest, bodies.embed_body, replies.embed_response
        )

    async def _list_models(self, grpc_call: GrpcCall) -> None:
        grpc_call.answer(self._models, [])

    async def _stream(self, grpc_call: GrpcCall) -> None:
        headers = grpc_call.metadata
        request_id = headers.get("x-request-id") or new_request_id()
        try:
            call = self._call(
                "chat",
                pb.StreamChatCompletionRequest,
                _chat_stream,
                grpc_call,
                headers,
                request_id,
                grpc_chat_body(grpc_call.message, True),
            )
            stream = await self.pipeline.stream(call)
        except GatewayError as exc:
            return await _abort(grpc_call, exc, request_id)
        except Exception:
            return await _abort(grpc_call, _internal(request_id), request_id)
        failure: GatewayError | None = None
        try:
            renderer = replies.ChunkRenderer(call)
            send = grpc_call.send
            started = False
            # A cancelled call (client gone, deadline passed) raises CancelledError here;
            # closing `events` then closes the upstream request.
            async with contextlib.aclosing(stream.__aiter__()) as events:
                async for event in events:
                    for data in renderer.messages(event):
                        if not started:
                            # The headers go with the first message: one hand-over, one write.
                            metadata = _reply_metadata(call, stream.headers)
                            await deliver(functools.partial(grpc_call.start, metadata, data))
                            started = True
                        elif send(data) != TAKEN:
                            await deliver(functools.partial(send, data))
            if not started:
                await deliver(
                    functools.partial(grpc_call.start, _reply_metadata(call, stream.headers))
                )
        except CallGone:
            return None
        except GatewayError as exc:
            failure = exc
        except Exception:
            failure = _internal(request_id)
        finally:
            await stream.aclose()  # also when cancelled before the first event
        if failure is not None:
            await _abort(grpc_call, failure, request_id)
        else:
            grpc_call.finish()
        return None


def _chat_whole(request: pb.ChatCompletionRequest) -> bytes:
    return bodies.chat_body(request, stream=False)


def _chat_stream(request: pb.StreamChatCompletionRequest) -> bytes:
    return bodies.chat_body(request, stream=True)
