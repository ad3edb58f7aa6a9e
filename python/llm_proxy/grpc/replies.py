"""OpenAI-format answers (whole bodies and SSE events) in, protobuf responses out."""

from __future__ import annotations

import base64
from array import array
from typing import TypeVar

import msgspec

from .._core import grpc_chat_chunks
from ..calls import Call
from ..errors import GatewayError
from ..wire.openai import (
    NULL,
    Completion,
    Function,
    Message,
    ToolCall,
    Usage,
    completion_decoder,
    embeddings_decoder,
    error_decoder,
    error_message,
    usage_decoder,
)
from ..wire.sse import event_data
from .gen import gateway_pb2 as pb

_T = TypeVar("_T")


def _usage(raw: msgspec.Raw | Usage | None) -> pb.Usage | None:
    if raw is None:
        return None
    if isinstance(raw, msgspec.Raw):
        if raw == NULL:
            return None
        usage = _decode(usage_decoder, bytes(raw))
    else:
        usage = raw
    return pb.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def _tool_calls(calls: list[ToolCall] | None) -> list[pb.ToolCall]:
    if not calls:
        return []
    out = []
    for c in calls:
        fn = c.function or Function()
        out.append(
            pb.ToolCall(
                id=c.id or "",
                type=c.type or "function",
                function=pb.FunctionCall(name=fn.name or "", arguments=fn.arguments or ""),
            )
        )
    return out


def _decode(decoder: msgspec.json.Decoder[_T], body: bytes) -> _T:
    try:
        return decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise GatewayError(502, f"the upstream's answer has an unexpected shape: {exc}") from None


def chat_response(body: bytes, call: Call) -> pb.ChatCompletionResponse:
    data = _decode(completion_decoder, body)
    choices = []
    for c in data.choices:
        m = c.message or Message()
        message = pb.ChatMessage(
            role=m.role or "assistant",
            content=m.content,
            tool_calls=_tool_calls(m.tool_calls),
            refusal=m.refusal,
        )
        choices.append(
            pb.ChatChoice(index=c.index, message=message, finish_reason=c.finish_reason or "")
        )
    return pb.ChatCompletionResponse(
        id=data.id,
        model=data.model,
        created=data.created,
        choices=choices,
        usage=_usage(data.usage),
        request_id=call.request_id,
        cache_status=call.cache_status,
        system_fingerprint=data.system_fingerprint,
    )


def completion_response(body: bytes, call: Call) -> pb.CompletionResponse:
    data = _decode(completion_decoder, body)
    return pb.CompletionResponse(
        id=data.id,
        model=data.model,
        created=data.created,
        choices=[
            pb.CompletionChoice(
                index=c.index, text=c.text or "", finish_reason=c.finish_reason or ""
            )
            for c in data.choices
        ],
        usage=_usage(data.usage),
        request_id=call.request_id,
        cache_status=call.cache_status,
    )


def _vector(embedding: list[float] | str) -> list[float] | array[float]:
    if isinstance(embedding, str):  # encoding_format=base64: little-endian float32
        return array("f", base64.b64decode(embedding))
    return embedding


def embed_response(body: bytes, call: Call) -> pb.EmbedResponse:
    data = _decode(embeddings_decoder, body)
    return pb.EmbedResponse(
        model=data.model,
        data=[pb.Embedding(index=e.index, embedding=_vector(e.embedding)) for e in data.data],
        usage=_usage(data.usage),
        request_id=call.request_id,
        cache_status=call.cache_status,
    )


class ChunkRenderer:
    """Turns a call's OpenAI SSE events into stream messages, one per chunk."""

    __slots__ = ("_call", "_first")

    def __init__(self, call: Call) -> None:
        self._call = call
        self._first = True

    def messages(self, events: bytes) -> list[bytes]:
        """`render`, serialized; the Rust translation does it when the events are plain."""
        call = self._call
        fast = grpc_chat_chunks(events, self._first, call.request_id, call.cache_status)
        if fast is None:
            return [message.SerializeToString() for message in self.render(events)]
        if fast:
            self._first = False
        return fast

    def render(self, events: bytes) -> list[pb.StreamChatCompletionResponse]:
        out = []
        for event in (events,) if events.count(b"\n\n") <= 1 else events.split(b"\n\n"):
            data = event_data(event)
            if data is None:
                continue
            if data == b"[DONE]":
                continue
            out.append(self._message(_decode(completion_decoder, data)))
        return out

    def _message(self, chunk: Completion) -> pb.StreamChatCompletionResponse:
        if chunk.error is not None:
            raise _stream_error(bytes(chunk.error))
        choices = []
        for c in chunk.choices:
            d = c.delta or Message()
            calls = [
                pb.ToolCallDelta(
                    index=t.index,
                    id=t.id,
                    type=t.type,
                    function_name=t.function.name if t.function else None,
                    arguments=t.function.arguments if t.function else None,
                )
                for t in d.tool_calls or ()
            ]
            delta = pb.ChoiceDelta(
                role=d.role, content=d.content, tool_calls=calls, refusal=d.refusal
            )
            choices.append(
                pb.StreamChoice(index=c.index, delta=delta, finish_reason=c.finish_reason)
            )
        message = pb.StreamChatCompletionResponse(
            id=chunk.id,
            model=chunk.model,
            created=chunk.created,
            choices=choices,
            usage=_usage(chunk.usage),
            system_fingerprint=chunk.system_fingerprint,
        )
        if self._first:
            self._first = False
            message.request_id = self._call.request_id
            message.cache_status = self._call.cache_status
        return message


def _stream_error(raw: bytes) -> GatewayError:
    try:
        message = error_message(error_decoder.decode(b'{"error":' + raw + b"}"))
    except (msgspec.DecodeError, msgspec.ValidationError):
        message = None
    return GatewayError(502, f"the upstream failed mid-stream: {message or 'unknown error'}")
