"""Answering from an entry: replay a stream, or turn a whole answer into a stream and back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from ..calls import Call, SimpleSummary, StreamSummary, Usage
from ..wire.openai import NULL, Function, Message, completion_decoder
from ..wire.sse import DONE_EVENT, data_event, event_data
from .entry import CacheEntry

_json = msgspec.json.Encoder()


class ReplayStream:
    """A stored answer sent as SSE events; an EventStream like any provider's.

    The events are the stored ones, unchanged and in order, handed over in one write: there
    is nothing to wait for between them, and one write per event would cost more than the
    whole lookup.
    """

    def __init__(self, events: list[bytes], entry: CacheEntry) -> None:
        self._events = events
        self._entry = entry
        self._done = False
        self.headers: list[tuple[str, str]] = []

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"".join(self._events)
        self._done = True

    def summary(self) -> StreamSummary | None:
        e = self._entry
        return SimpleSummary(
            text=e.text,
            tool_calls_json=e.tool_calls_json,
            finish_reason=e.finish_reason,
            prompt_tokens=e.prompt_tokens,
            completion_tokens=e.completion_tokens,
            done=self._done,
        )

    async def aclose(self) -> None:
        return None


def replay_events(entry: CacheEntry, call: Call) -> list[bytes] | None:
    """The events a streamed request gets from `entry`, or None if it cannot be answered."""
    if entry.is_stream:
        if call.include_usage:
            return [*entry.events, entry.usage_event, DONE_EVENT]
        return [*entry.events, DONE_EVENT]
    return _synthesize_events(entry.body, call)


def whole_body(entry: CacheEntry, call: Call) -> bytes | None:
    """The whole answer a non-streamed request gets from `entry`, or None."""
    if not entry.is_stream:
        return entry.body
    if not entry.whole_ok or not entry.events:
        return None
    return _assemble_whole(entry, call)


def entry_usage(entry: CacheEntry) -> Usage:
    p, c = entry.prompt_tokens, entry.completion_tokens
    return Usage(p, c, p + c)


# -- whole -> stream ------------------------------------------------------------------------


def _event(obj: dict[str, Any]) -> bytes:
    return data_event(_json.encode(obj))


def _synthesize_events(body: bytes, call: Call) -> list[bytes] | None:
    try:
        whole = completion_decoder.decode(body)
    except msgspec.DecodeError:
        return None
    if any(c.logprobs != NULL for c in whole.choices):
        return None
    chat = call.endpoint == "chat"
    base: dict[str, Any] = {
        "id": whole.id,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": whole.created,
        "model": whole.model,
    }
    if whole.system_fingerprint is not None:
        base["system_fingerprint"] = whole.system_fingerprint
    events: list[bytes] = []
    for choice in whole.choices:
        i = choice.index
        if not chat:
            events.append(_event({**base, "choices": [_text_choice(i, choice.text or "", None)]}))
            events.append(_event({**base, "choices": [_text_choice(i, "", choice.finish_reason)]}))
            continue
        msg = choice.message or Message()
        role = msg.role or "assistant"
        events.append(_event({**base, "choices": [_delta(i, {"role": role, "content": ""})]}))
        if msg.content:
            events.append(_event({**base, "choices": [_delta(i, {"content": msg.content})]}))
        if msg.refusal:
            events.append(_event({**base, "choices": [_delta(i, {"refusal": msg.refusal})]}))
        if msg.tool_calls:
            calls = [
                {
                    "index": n,
                    "id": tc.id,
                    "type": tc.type or "function",
                    "function": msgspec.structs.asdict(tc.function or Function()),
                }
                for n, tc in enumerate(msg.tool_calls)
            ]
            events.append(_event({**base, "choices": [_delta(i, {"tool_calls": calls})]}))
        events.append(_event({**base, "choices": [_delta(i, {}, choice.finish_reason)]}))
    if call.include_usage and whole.usage != NULL:
        events.append(
            b"data: "
            + _json.encode({**base, "choices": []})[:-1]
            + b',"usage":'
            + bytes(whole.usage)
            + b"}\n\n"
        )
    events.append(DONE_EVENT)
    return events


def _delta(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


def _text_choice(index: int, text: str, finish: str | None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}


# -- stream -> whole ------------------------------------------------------------------------


def _assemble_whole(entry: CacheEntry, call: Call) -> bytes | None:
    payload = next((p for e in entry.events if (p := event_data(e)) is not None), None)
    if payload is None:
        return None
    head = completion_decoder.decode(payload)
    usage = {
        "prompt_tokens": entry.prompt_tokens,
        "completion_tokens": entry.completion_tokens,
        "total_tokens": entry.prompt_tokens + entry.completion_tokens,
    }
    body: dict[str, Any] = {"id": head.id, "created": head.created, "model": head.model}
    if call.endpoint == "chat":
        tool_calls = msgspec.json.decode(entry.tool_calls_json.encode() or b"[]")
        message: dict[str, Any] = {
            "role": "assistant",
            "content": entry.text if entry.text or not tool_calls else None,
            "refusal": None,
        }
        if tool_calls:
            message["tool_calls"] = tool_calls
        body["object"] = "chat.completion"
        body["choices"] = [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": entry.finish_reason,
            }
        ]
    else:
        body["object"] = "text_completion"
        body["choices"] = [
            {"index": 0, "text": entry.text, "logprobs": None, "finish_reason": entry.finish_reason}
        ]
    if head.system_fingerprint is not None:
        body["system_fingerprint"] = head.system_fingerprint
    body["usage"] = usage
    return _json.encode(body)
