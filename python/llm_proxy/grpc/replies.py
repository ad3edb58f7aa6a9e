"""OpenAI-format answers (whole bodies and SSE events) in, protobuf responses out."""

from __future__ import annotations

import base64
from array import array
from typing import TypeVar

import msgspec

from .._core import grpc_chat_chunks
from ..calls import Call
from ..errors import GatewayError
from .gen import gateway_pb2 as pb


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    index: int = 0
    id: str | None = None
    type: str | None = None
    function: _Function | None = None


class _Message(msgspec.Struct):
    role: str | None = None
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None
    refusal: str | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class _ChatChoice(msgspec.Struct):
    index: int = 0
    message: _Message | None = None
    finish_reason: str | None = None


class _ChatCompletion(msgspec.Struct):
    id: str = ""
    model: str = ""
    created: int = 0
    choices: list[_ChatChoice] = []
    usage: _Usage | None = None
    system_fingerprint: str | None = None


class _ChunkChoice(msgspec.Struct):
    index: int = 0
    delta: _Message | None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    id: str = ""
    model: str = ""
    created: int = 0
    choices: list[_ChunkChoice] = []
    usage: _Usage | None = None
    system_fingerprint: str | None = None
    error: msgspec.Raw | None = None


class _TextChoice(msgspec.Struct):
    index: int = 0
    text: str = ""
    finish_reason: str | None = None


class _TextCompletion(msgspec.Struct):
    id: str = ""
    model: str = ""
    created: int = 0
    choices: list[_TextChoice] = []
    usage: _Usage | None = None


class _Embedding(msgspec.Struct):
    index: int = 0
    embedding: list[float] | str = []


class _EmbeddingList(msgspec.Struct):
    model: str = ""
    data: list[_Embedding] = []
    usage: _Usage | None = None


class _ErrorBody(msgspec.Struct):
    message: str | None = None


class _Error(msgspec.Struct):
    error: _ErrorBody | str


_T = TypeVar("_T")
_chat = msgspec.json.Decoder(_ChatCompletion)
_chunk = msgspec.json.Decoder(_Chunk)
_text = msgspec.json.Decoder(_TextCompletion)
_embeddings = msgspec.json.Decoder(_EmbeddingList)
_error = msgspec.json.Decoder(_Error)


def _usage(usage: _Usage | None) -> pb.Usage | None:
    if usage is None:
        return None
    return pb.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def _tool_calls(calls: list[_ToolCall] | None) -> list[pb.ToolCall]:
    if not calls:
        return []
    out = []
    for c in calls:
        fn = c.function or _Function()
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
    data = _decode(_chat, body)
    choices = []
    for c in data.choices:
        m = c.message or _Message()
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
    data = _decode(_text, body)
    return pb.CompletionResponse(
        id=data.id,
        model=data.model,
        created=data.created,
        choices=[
            pb.CompletionChoice(index=c.index, text=c.text, finish_reason=c.finish_reason or "")
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
    data = _decode(_embeddings, body)
    return pb.EmbedResponse(
        model=data.model,
        data=[pb.Embedding(index=e.index, embedding=_vector(e.embedding)) for e in data.data],
        usage=_usage(data.usage),
        request_id=call.request_id,
        cache_status=call.cache_status,
    )


def _data(event: bytes) -> bytes | None:
    """The data of one SSE event (None for comments and keep-alives)."""
    if event.startswith(b"data: ") and event.find(b"\n") == len(event) - 2:
        return event[6:-2]
    lines = [
        line[5:].removeprefix(b" ")
        for line in event.replace(b"\r\n", b"\n").split(b"\n")
        if line.startswith(b"data:")
    ]
    return b"\n".join(lines) if lines else None


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
            data = _data(event)
            if data is None:
                continue
            if data == b"[DONE]":
                continue
            out.append(self._message(_decode(_chunk, data)))
        return out

    def _message(self, chunk: _Chunk) -> pb.StreamChatCompletionResponse:
        if chunk.error is not None:
            raise _stream_error(bytes(chunk.error))
        choices = []
        for c in chunk.choices:
            d = c.delta or _Message()
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
        error = _error.decode(b'{"error":' + raw + b"}").error
        message = error if isinstance(error, str) else error.message
    except (msgspec.DecodeError, msgspec.ValidationError):
        message = None
    return GatewayError(502, f"the upstream failed mid-stream: {message or 'unknown error'}")
