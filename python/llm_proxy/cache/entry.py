"""What the cache stores: one answer, whole or as the stream of events the client saw."""

from __future__ import annotations

from typing import Protocol

import msgspec

from ..calls import StreamSummary
from ..wire.openai import NULL, Completion, completion_decoder
from ..wire.sse import data_event, event_data, split_events

_json = msgspec.json.Encoder()


class CacheEntry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A stored answer. `body` is set for a whole answer, `events` for a stream.

    Streams keep their events (without the usage chunk and `[DONE]`) so a replay has the
    original chunking; `usage_event` is added back only when the client asks for usage.
    `text`/`tool_calls_json`/`finish_reason` let a stream answer a whole request, when
    `whole_ok` (one choice, no logprobs).
    """

    created: float
    body: bytes = b""
    events: list[bytes] = []
    usage_event: bytes = b""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    text: str = ""
    tool_calls_json: str = "[]"
    finish_reason: str | None = None
    whole_ok: bool = False

    @property
    def is_stream(self) -> bool:
        return not self.body

    def size(self) -> int:
        """The stored response bytes (what `cache.max_bytes` counts)."""
        if self.body:
            return len(self.body)
        return (
            sum(len(e) for e in self.events)
            + len(self.usage_event)
            + len(self.text)
            + len(self.tool_calls_json)
        )


class CacheBackend(Protocol):
    """Where entries live. Entries are values; a backend may copy or encode them."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def get(self, key: str) -> CacheEntry | None: ...
    async def set_many(self, items: list[tuple[str, CacheEntry, float]]) -> None:
        """Store `(key, entry, ttl_s)` items."""
        ...


class CacheUnavailable(Exception):
    """The backend cannot answer now (down, slow, or backing off after a failure)."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(CacheEntry)


def encode_entry(entry: CacheEntry) -> bytes:
    return _encoder.encode(entry)


def decode_entry(data: bytes) -> CacheEntry:
    return _decoder.decode(data)


# -- building an entry from a finished stream (runs in the writer, off the response path) --


def stream_entry(
    events: list[bytes], summary: StreamSummary, created: float, prompt_tokens: int
) -> CacheEntry | None:
    """The entry for a finished stream, or None when it cannot be stored faithfully."""
    kept: list[bytes] = []
    usage_event = b""
    parts: list[str] = []
    whole_ok = True
    first: Completion | None = None
    for event in (e for blob in events for e in split_events(blob)):
        payload = event_data(event)
        if payload is None:
            kept.append(event)
            continue
        if payload == b"[DONE]":
            continue
        try:
            chunk = completion_decoder.decode(payload)
        except msgspec.DecodeError:
            return None
        if first is None:
            first = chunk
        if not chunk.choices and chunk.usage != NULL:
            usage_event = event
            continue
        for choice in chunk.choices:
            if choice.index != 0 or choice.logprobs != NULL:
                whole_ok = False
            piece = choice.delta.content if choice.delta is not None else choice.text
            if piece:
                parts.append(piece)
        kept.append(event)
    if first is None:
        return None
    if not usage_event:
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": summary.completion_tokens,
            "total_tokens": prompt_tokens + summary.completion_tokens,
        }
        base = {"id": first.id, "object": first.object, "created": first.created}
        usage_event = data_event(
            _json.encode({**base, "model": first.model, "choices": [], "usage": usage})
        )
    return CacheEntry(
        created=created,
        events=kept,
        usage_event=usage_event,
        prompt_tokens=prompt_tokens,
        completion_tokens=summary.completion_tokens,
        text="".join(parts),
        tool_calls_json=summary.tool_calls_json or "[]",
        finish_reason=summary.finish_reason,
        whole_ok=whole_ok,
    )
