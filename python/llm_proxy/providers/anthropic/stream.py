"""Anthropic Messages stream events -> OpenAI chat completion chunks (pure, no I/O)."""

from __future__ import annotations

from typing import Any

import msgspec

from ...wire.sse import DONE_EVENT, event_data
from .response import chat_usage, finish_reason

_encoder = msgspec.json.Encoder()
_object_decoder = msgspec.json.Decoder(dict[str, Any])


class UpstreamStreamError(Exception):
    """An `error` event inside an Anthropic stream (e.g. overloaded_error mid-stream)."""

    def __init__(self, message: str, type: str) -> None:
        super().__init__(message)
        self.message = message
        self.type = type


class StreamTranslator:
    """Anthropic stream events in, OpenAI `chat.completion.chunk` SSE events out."""

    def __init__(self, model: str, created: int, include_usage: bool) -> None:
        self.model = model
        self.created = created
        self.include_usage = include_usage
        self.id: str | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._usage: dict[str, Any] = {}
        self.finish_reason: str | None = None
        self._prefix = b""
        self._suffix = b',"usage":null}\n\n' if include_usage else b"}\n\n"
        self._tool_index: dict[int, int] = {}  # Anthropic block index -> OpenAI tool-call index
        self._tool_args_seen: dict[int, bool] = {}

    def event(self, data: bytes) -> list[bytes]:
        """OpenAI SSE events for one Anthropic event (its data payload, or the raw event)."""
        if data[:1] != b"{" and not data.lstrip().startswith(b"{"):
            payload = event_data(data)
            if payload is None:
                return []
            data = payload
        event = _object_decoder.decode(data)
        try:
            return self._translate(event)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed Anthropic stream event: {exc!r}") from None

    def _translate(self, event: dict[str, Any]) -> list[bytes]:
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event["delta"]
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta["text"]})] if delta["text"] else []
            if delta.get("type") == "input_json_delta":
                return self._tool_arguments(event["index"], delta.get("partial_json") or "")
            return []  # thinking, signature and citations deltas have no chat form
        if kind == "message_start":
            return self._start(event["message"])
        if kind == "content_block_start":
            return self._block_start(event["index"], event["content_block"])
        if kind == "content_block_stop":
            index = event["index"]
            if index in self._tool_index and not self._tool_args_seen[index]:
                return self._tool_arguments(index, "{}")
            return []
        if kind == "message_delta":
            self._add_usage(event.get("usage"))
            self.finish_reason = finish_reason(event.get("delta", {}).get("stop_reason"))
            return [self._chunk({}, self.finish_reason)]
        if kind == "message_stop":
            if not self.include_usage:
                return [DONE_EVENT]
            usage = _encoder.encode(chat_usage(self._usage))
            final = self._prefix + b'],"usage":' + usage + b"}\n\n"
            return [final, DONE_EVENT]
        if kind == "error":
            error = event.get("error") or {}
            raise UpstreamStreamError(
                str(error.get("message") or "stream error"), str(error.get("type") or "api_error")
            )
        return []  # ping, and event types added after this was written

    def _start(self, message: dict[str, Any]) -> list[bytes]:
        self.id = "chatcmpl-" + str(message.get("id", ""))
        self._add_usage(message.get("usage"))
        head = {"id": self.id, "object": "chat.completion.chunk", "created": self.created}
        head["model"] = self.model
        self._prefix = b"data: " + _encoder.encode(head)[:-1] + b',"choices":['
        return [self._chunk({"role": "assistant", "content": ""})]

    def _add_usage(self, usage: dict[str, Any] | None) -> None:
        # message_delta usage is cumulative; fields it leaves null keep message_start's values.
        if usage:
            self._usage.update((k, v) for k, v in usage.items() if v is not None)
            totals = chat_usage(self._usage)
            self.prompt_tokens = totals["prompt_tokens"]
            self.completion_tokens = totals["completion_tokens"]

    def _block_start(self, index: int, block: dict[str, Any]) -> list[bytes]:
        kind = block.get("type")
        if kind == "text":
            return [self._chunk({"content": block["text"]})] if block.get("text") else []
        if kind != "tool_use":
            return []
        tool_index = len(self._tool_index)
        self._tool_index[index] = tool_index
        self._tool_args_seen[index] = False
        call = {
            "index": tool_index,
            "id": block["id"],
            "type": "function",
            "function": {"name": block["name"], "arguments": ""},
        }
        return [self._chunk({"tool_calls": [call]})]

    def _tool_arguments(self, index: int, partial: str) -> list[bytes]:
        if not partial:
            return []
        self._tool_args_seen[index] = True
        call = {"index": self._tool_index[index], "function": {"arguments": partial}}
        return [self._chunk({"tool_calls": [call]})]

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        if not self._prefix:
            raise ValueError("Anthropic stream event before message_start")
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._prefix + _encoder.encode(choice) + b"]" + self._suffix
