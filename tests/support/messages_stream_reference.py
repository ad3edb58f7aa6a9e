"""The pure-Python reference of `_core.MessagesStream` (the gateway's translator of OpenAI
chat completion chunks to Anthropic's Messages stream events until 2026-12), for parity tests
and the in-process benchmark.

Anthropic's documented sequence: `message_start`, then per content block `content_block_start`,
`content_block_delta`s (`text_delta`, or `input_json_delta` for a tool call's arguments) and
`content_block_stop`, then `message_delta` (stop reason and usage) and `message_stop`; `ping`
events may come anywhere (one follows `message_start` here).
"""

from __future__ import annotations

import msgspec
from llm_proxy.translate.messages_answer import anthropic_usage, message_id, stop_reason
from llm_proxy.translate.responses_stream import Chunk as _Chunk
from llm_proxy.translate.responses_stream import chunk_decoder as _chunk_decoder
from llm_proxy.wire.anthropic import event
from llm_proxy.wire.openai import Usage
from llm_proxy.wire.sse import event_data, split_events

_encoder = msgspec.json.Encoder()
_PING = event(b"ping", b'{"type":"ping"}')
_MESSAGE_STOP = event(b"message_stop", b'{"type":"message_stop"}')
_DONE = b"[DONE]"


class MessagesStream:
    """Translates one stream: feed it each item of OpenAI SSE events, send what it returns."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.started = False
        self.finished = False
        self._open: int | None = None  # the index of the open content block
        self._open_kind = ""  # "text" or "tool"
        self._blocks = 0
        self._tools: dict[int, int] = {}  # OpenAI tool-call index -> content block index
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._text_prefix = b""

    def feed(self, item: bytes) -> bytes:
        """The Anthropic events for one item (one or more complete OpenAI events)."""
        if item.startswith(b"data: ") and item.find(b"\n") == len(item) - 2:
            # The common case, one LF-framed event, without the general splitter (a regex).
            return self._data(item[6:-2])
        return b"".join(
            self._data(data)
            for data in (event_data(raw) for raw in split_events(item))
            if data is not None
        )

    def _data(self, data: bytes) -> bytes:
        if self.finished:
            return b""
        if data == _DONE:
            return self.finish()
        try:
            chunk = _chunk_decoder.decode(data)
        except msgspec.DecodeError:
            raise ValueError("upstream sent a chunk that is not JSON") from None
        choices = chunk.choices
        if len(choices) == 1 and self._open_kind == "text" and self._open is not None:
            # The common chunk: more text for the open text block.
            choice = choices[0]
            delta = choice.delta
            if (
                delta is not None
                and delta.content
                and not delta.tool_calls
                and choice.finish_reason is None
                and chunk.usage is None
            ):
                return self._text_prefix + _encoder.encode(delta.content) + b"}}\n\n"
        out: list[bytes] = []
        self._chunk(chunk, out)
        return out[0] if len(out) == 1 else b"".join(out)

    def finish(self) -> bytes:
        """The closing events (once; after `[DONE]`, or when the stream ended without it)."""
        if self.finished:
            return b""
        out: list[bytes] = []
        if not self.started:
            self._start("", out)
        self._close(out)
        self.finished = True
        usage = _encoder.encode(anthropic_usage(self._usage))
        delta = (
            b'{"type":"message_delta","delta":{"stop_reason":"'
            + stop_reason(self._finish).encode()
            + b'","stop_sequence":null},"usage":'
            + usage
            + b"}"
        )
        out.append(event(b"message_delta", delta))
        out.append(_MESSAGE_STOP)
        return b"".join(out)

    def _start(self, chat_id: str, out: list[bytes]) -> None:
        self.started = True
        message: dict[str, object] = {
            "id": message_id(chat_id),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        start = b'{"type":"message_start","message":' + _encoder.encode(message) + b"}"
        out.append(event(b"message_start", start))
        out.append(_PING)

    def _close(self, out: list[bytes]) -> None:
        if self._open is not None:
            out.append(
                event(
                    b"content_block_stop",
                    b'{"type":"content_block_stop","index":%d}' % self._open,
                )
            )
            self._open = None

    def _begin(self, kind: str, block: bytes, out: list[bytes]) -> int:
        self._close(out)
        index = self._blocks
        self._blocks += 1
        self._open, self._open_kind = index, kind
        out.append(
            event(
                b"content_block_start",
                b'{"type":"content_block_start","index":%d,"content_block":%s}' % (index, block),
            )
        )
        return index

    def _chunk(self, chunk: _Chunk, out: list[bytes]) -> None:
        if not self.started:
            self._start(chunk.id, out)
        if chunk.usage is not None:
            self._usage = chunk.usage
        if not chunk.choices:
            return
        choice = chunk.choices[0]
        if choice.finish_reason is not None:
            self._finish = choice.finish_reason
        delta = choice.delta
        if delta is None:
            return
        text = delta.content or delta.refusal
        if text:
            if self._open is None or self._open_kind != "text":
                begun = self._begin("text", b'{"type":"text","text":""}', out)
                self._text_prefix = (
                    b'event: content_block_delta\ndata: {"type":"content_block_delta",'
                    b'"index":%d,"delta":{"type":"text_delta","text":' % begun
                )
            out.append(self._text_prefix + _encoder.encode(text) + b"}}\n\n")
        for call in delta.tool_calls or ():
            function = call.function
            tool_index = self._tools.get(call.index)
            if tool_index is None:
                block = {
                    "type": "tool_use",
                    "id": call.id or "",
                    "name": (function.name if function else None) or "",
                    "input": {},
                }
                tool_index = self._begin("tool", _encoder.encode(block), out)
                self._tools[call.index] = tool_index
            arguments = function.arguments if function else None
            if arguments:
                payload = (
                    b'{"type":"content_block_delta","index":%d,'
                    b'"delta":{"type":"input_json_delta","partial_json":' % tool_index
                )
                out.append(
                    event(b"content_block_delta", payload + _encoder.encode(arguments) + b"}}")
                )
