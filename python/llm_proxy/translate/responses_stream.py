"""OpenAI chat completion chunks -> the Responses API's stream events (pure, no I/O).

`response.created`, `response.in_progress`; per output item `response.output_item.added`,
then for a message `response.content_part.added`, `response.output_text.delta`s,
`response.output_text.done`, `response.content_part.done`, or for a function call
`response.function_call_arguments.delta`s and `.done`; `response.output_item.done`; and
`response.completed` with the whole response and its usage. Every event has its
`sequence_number`.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ..wire.openai import ToolCall, Usage
from ..wire.sse import event_data, split_events
from .responses import response_id, response_object, responses_usage

_encoder = msgspec.json.Encoder()
_DONE = b"[DONE]"


class _Delta(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None


class Chunk(msgspec.Struct):
    """The parts of a chat chunk the translation reads (a slimmer decode than Completion)."""

    id: str = ""
    choices: list[_Choice] = []
    usage: Usage | None = None


chunk_decoder = msgspec.json.Decoder(Chunk)


class ResponsesEvents:
    """Translates one stream: feed it each item of chat SSE events, send what it returns."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.finished = False
        self._seq = 0
        self._response: dict[str, Any] | None = None
        self._output: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None  # the output item being streamed
        self._text: list[str] = []
        self._tools: dict[int, dict[str, Any]] = {}
        self._finish: str | None = None
        self._usage: Any = None
        self._delta_prefix = b""

    def _event(self, kind: str, data: dict[str, Any], out: list[bytes]) -> None:
        payload = _encoder.encode({"type": kind, "sequence_number": self._seq, **data})
        self._seq += 1
        out.append(b"event: " + kind.encode() + b"\ndata: " + payload + b"\n\n")

    def feed(self, item: bytes) -> bytes:
        if item.startswith(b"data: ") and item.find(b"\n") == len(item) - 2:
            return self._data(item[6:-2])  # one LF-framed event: no general splitter
        return b"".join(
            self._data(data)
            for data in (event_data(raw) for raw in split_events(item))
            if data is not None
        )

    def _data(self, data: bytes) -> bytes:
        if data == _DONE:
            return self.finish()
        try:
            chunk = chunk_decoder.decode(data)
        except msgspec.DecodeError:
            raise ValueError("upstream sent a chunk that is not JSON") from None
        choices = chunk.choices
        item = self._open
        if len(choices) == 1 and item is not None and item["type"] == "message":
            # The common chunk: more text for the open message.
            choice = choices[0]
            delta = choice.delta
            if (
                delta is not None
                and delta.content
                and not delta.tool_calls
                and choice.finish_reason is None
                and chunk.usage is None
            ):
                self._text.append(delta.content)
                self._seq += 1
                return (
                    self._delta_prefix
                    + b"%d" % (self._seq - 1)
                    + b',"delta":'
                    + _encoder.encode(delta.content)
                    + b"}\n\n"
                )
        out: list[bytes] = []
        self._chunk(chunk, out)
        return b"".join(out)

    def _start(self, chat_id: str, out: list[bytes]) -> None:
        rid = response_id(chat_id or f"gw{time.time_ns():x}")
        self._response = response_object(rid, self.model, int(time.time()), [], "in_progress")
        self._event("response.created", {"response": self._response}, out)
        self._event("response.in_progress", {"response": self._response}, out)

    def _close(self, out: list[bytes]) -> None:
        item = self._open
        if item is None:
            return
        self._open = None
        index = len(self._output)
        if item["type"] == "message":
            text = "".join(self._text)
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            self._event("response.output_text.done", {**where, "text": text, "logprobs": []}, out)
            part = {"type": "output_text", "text": text, "annotations": []}
            self._event("response.content_part.done", {**where, "part": part}, out)
            item = {**item, "status": "completed", "content": [part]}
        else:
            where = {"item_id": item["id"], "output_index": index}
            arguments = item["arguments"]
            self._event(
                "response.function_call_arguments.done", {**where, "arguments": arguments}, out
            )
            item = {**item, "status": "completed"}
        self._event("response.output_item.done", {"output_index": index, "item": item}, out)
        self._output.append(item)

    def _begin(self, item: dict[str, Any], out: list[bytes]) -> None:
        self._close(out)
        self._open = item
        self._event(
            "response.output_item.added", {"output_index": len(self._output), "item": item}, out
        )

    def _chunk(self, chunk: Any, out: list[bytes]) -> None:
        if self._response is None:
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
        assert self._response is not None
        if delta.content:
            item = self._open
            if item is None or item["type"] != "message":
                item = {
                    "type": "message",
                    "id": f"msg_{self._response['id'][5:]}_{len(self._output)}",
                    "status": "in_progress",
                    "role": "assistant",
                    "content": [],
                }
                self._begin(item, out)
                self._text = []
                part = {"type": "output_text", "text": "", "annotations": []}
                where = {"item_id": item["id"], "output_index": len(self._output)}
                self._event(
                    "response.content_part.added", {**where, "content_index": 0, "part": part}, out
                )
                self._delta_prefix = (
                    b"event: response.output_text.delta\n"
                    b'data: {"type":"response.output_text.delta",'
                    b'"item_id":'
                    + _encoder.encode(item["id"])
                    + b',"output_index":%d,"content_index":0,"logprobs":[],"sequence_number":'
                    % len(self._output)
                )
            self._text.append(delta.content)
            out.append(
                self._delta_prefix
                + b"%d" % self._seq
                + b',"delta":'
                + _encoder.encode(delta.content)
                + b"}\n\n"
            )
            self._seq += 1
        for call in delta.tool_calls or ():
            function = call.function
            item = self._tools.get(call.index)
            if item is None:
                item = {
                    "type": "function_call",
                    "id": "fc_" + (call.id or str(call.index)),
                    "call_id": call.id or "",
                    "name": (function.name if function else None) or "",
                    "arguments": "",
                    "status": "in_progress",
                }
                self._tools[call.index] = item
                self._begin(item, out)
            arguments = function.arguments if function else None
            if arguments:
                item["arguments"] += arguments
                where = {"item_id": item["id"], "output_index": len(self._output)}
                self._event(
                    "response.function_call_arguments.delta", {**where, "delta": arguments}, out
                )

    def finish(self) -> bytes:
        if self.finished:
            return b""
        out: list[bytes] = []
        if self._response is None:
            self._start("", out)
        self._close(out)
        self.finished = True
        assert self._response is not None
        status = "incomplete" if self._finish == "length" else "completed"
        response = {**self._response, "status": status, "output": self._output}
        if status == "incomplete":
            response["incomplete_details"] = {"reason": "max_output_tokens"}
        response["usage"] = responses_usage(self._usage)
        self._event(f"response.{status}", {"response": response}, out)
        return b"".join(out)
