"""_core.MessagesStream against its pure-Python reference: the same Anthropic events for any
chat chunk stream, however the relay groups the events into items."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llm_proxy import _core

from tests.support.messages_stream_reference import MessagesStream as Reference


def chunk(delta: dict[str, Any] | None, finish: str | None = None, usage: Any = None) -> bytes:
    body: dict[str, Any] = {"id": "chatcmpl-AbC123", "object": "chat.completion.chunk"}
    body["choices"] = [] if delta is None else [{"index": 0, "delta": delta}]
    if finish is not None:
        body["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    if usage is not None:
        body["usage"] = usage
    return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"


def events(raw: bytes) -> list[tuple[str, Any]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if block:
            head, data = block.split("\n", 1)
            out.append((head.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def translate(translator: Any, items: list[bytes]) -> list[tuple[str, Any]]:
    out = b"".join(translator.feed(item) for item in items) + translator.finish()
    return events(out)


USAGE = {"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37}
TEXT = [
    chunk({"role": "assistant", "content": ""}),
    *(chunk({"content": p}) for p in ["Bonjour", " à", ' "tous"', " 👋\n", "\t日本語\\"]),
    chunk({}, "stop"),
    chunk(None, usage={**USAGE, "prompt_tokens_details": {"cached_tokens": 10}}),
    b"data: [DONE]\n\n",
]
TOOLS = [
    chunk({"role": "assistant", "content": "Checking."}),
    chunk(
        {"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "w", "arguments": ""}}]}
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
    chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "t"}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
    chunk({}, "tool_calls"),
    chunk(None, usage=USAGE),
    b"data: [DONE]\n\n",
]
REFUSAL = [chunk({"refusal": "I can't."}), chunk({}, "content_filter"), b"data: [DONE]\n\n"]
STREAMS = {"text": TEXT, "tools": TOOLS, "refusal": REFUSAL, "cut short": TEXT[:3]}


@pytest.mark.parametrize("name", list(STREAMS))
def test_same_events_as_the_reference(name: str) -> None:
    items = STREAMS[name]
    got = translate(_core.MessagesStream("claude-x"), items)
    assert got == translate(Reference("claude-x"), items)
    assert got[0][0] == "message_start" and got[-1][0] == "message_stop"


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(list(STREAMS)),
    cuts=st.lists(st.integers(min_value=0, max_value=20), max_size=8),
    crlf=st.booleans(),
)
def test_items_grouped_any_way_translate_alike(name: str, cuts: list[int], crlf: bool) -> None:
    events_ = STREAMS[name]
    if crlf:
        events_ = [e.replace(b"\n", b"\r\n") for e in events_]
    # The relay hands over whole events, several per item when one upstream read held them.
    bounds = sorted({0, len(events_), *(c % (len(events_) + 1) for c in cuts)})
    items = [b"".join(events_[a:b]) for a, b in itertools.pairwise(bounds)]
    expected = translate(Reference("m"), STREAMS[name])
    assert translate(_core.MessagesStream("m"), items) == expected


@pytest.mark.parametrize("bad", [b"data: {not json\n\n", b'data: {"choices": 5}\n\n'])
def test_a_chunk_that_is_not_a_chat_chunk_is_a_value_error(bad: bytes) -> None:
    translator = _core.MessagesStream("m")
    with pytest.raises(ValueError, match="not JSON"):
        translator.feed(bad)
    with pytest.raises(ValueError):
        Reference("m").feed(bad)


def test_finish_is_once_and_nothing_follows_done() -> None:
    translator = _core.MessagesStream("m")
    assert not translator.started
    translator.feed(TEXT[1])
    assert translator.started and not translator.finished
    closing = translator.feed(b"data: [DONE]\n\n")
    assert [name for name, _ in events(closing)][-2:] == ["message_delta", "message_stop"]
    assert translator.finished
    assert translator.feed(TEXT[2]) == b"" and translator.finish() == b""
