"""What every mock endpoint shares: reply shapes, JSON codecs and the deterministic answer."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .. import mocktext

Headers = list[tuple[str, str]]
JSON_HEADERS: Headers = [("content-type", "application/json")]
SSE_HEADERS: Headers = [
    ("content-type", "text/event-stream; charset=utf-8"),
    ("cache-control", "no-cache"),
    ("transfer-encoding", "chunked"),
]

encode = msgspec.json.Encoder().encode
_canonical = msgspec.json.Encoder(order="sorted").encode
decode = msgspec.json.decode


@dataclass(slots=True)
class Whole:
    """A response sent in one piece."""

    status: int
    body: bytes
    headers: Headers = field(default_factory=lambda: list(JSON_HEADERS))


@dataclass(slots=True)
class Stream:
    """A 200 SSE response; `events` yields complete events, produced as they are sent."""

    events: Iterator[bytes]
    bad_event: bytes = b"data: {not json\n\n"
    headers: Headers = field(default_factory=lambda: list(SSE_HEADERS))


Reply = Whole | Stream


@dataclass(slots=True)
class Options:
    """Per-request controls that shape the answer (the rest are applied by the server)."""

    chunks: int = 8
    malformed: bool = False


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    input: dict[str, Any]
    arguments: str


@dataclass(slots=True)
class Answer:
    text: str
    finish: str  # "stop", "length", "stop_sequence" or "tool"
    stop_sequence: str | None = None
    tool: ToolCall | None = None


def seed_of(*parts: object) -> bytes:
    """Seed from the semantic parts of a request: key order and whitespace do not matter."""
    return _canonical(parts)


def short_hash(seed: bytes) -> str:
    return hashlib.blake2b(seed, digest_size=12).hexdigest()


def approx_tokens(obj: object) -> int:
    """About four bytes a token; the gateway counts exact tokens itself."""
    return max(1, len(encode(obj)) // 4) if obj is not None else 0


def answer(
    seed: bytes,
    max_tokens: int | None,
    stop: object = None,
    tool: tuple[str, dict[str, Any]] | None = None,
    user_text: str = "",
) -> Answer:
    """The reply to a request: text (maybe capped or stopped) or a tool call."""
    if tool is not None:
        name, schema = tool
        args = _tool_input(schema, user_text)
        call = ToolCall("call_mock_" + short_hash(seed), name, args, encode(args).decode())
        return Answer("", "tool", tool=call)
    text = mocktext.reply_text(seed, max_tokens)
    finish = "stop"
    if max_tokens is not None and len(text) < len(mocktext.reply_text(seed)):
        finish = "length"
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    for s in stops:
        if isinstance(s, str) and s and s in text:
            return Answer(text[: text.index(s)], "stop_sequence", stop_sequence=s)
    return Answer(text, finish)


_PLACE = re.compile(r"\b(?:in|at|for)\s+([A-Z][\w-]*(?:\s+[A-Z][\w-]*)*)")


def _tool_input(schema: dict[str, Any], user_text: str) -> dict[str, Any]:
    place = _PLACE.search(user_text)
    where = place.group(1) if place else "San Francisco"
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict) or not props:
        return {"location": where}
    out: dict[str, Any] = {}
    for name, spec in props.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        if isinstance(spec, dict) and spec.get("enum"):
            out[name] = spec["enum"][0]
        elif kind in ("number", "integer"):
            out[name] = 1
        elif kind == "boolean":
            out[name] = True
        elif kind in ("string", None):
            out[name] = where
    return out


def text_of(content: object) -> str:
    """The plain text of a message's content: a string or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    return ""


def int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
