"""SseRelay against recorded OpenAI and Anthropic streams, split every which way."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llm_proxy import _core

from tests.support.reference import reference_events, reference_summary


def openai_chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> str:
    body = {
        "id": "chatcmpl-AbC123",
        "object": "chat.completion.chunk",
        "created": 1732800000,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_50cad350e4",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }
    return "data: " + json.dumps(body, ensure_ascii=False) + "\n\n"


OPENAI_TEXT = (
    openai_chunk({"role": "assistant", "content": "", "refusal": None})
    + "".join(
        openai_chunk({"content": piece})
        for piece in ["Bonjour", " à", " tous", " 👋", " — 日本", "語!"]
    )
    + ": keep-alive\n\n"
    + openai_chunk({}, "stop")
    + "data: "
    + json.dumps(
        {
            "id": "chatcmpl-AbC123",
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29},
        }
    )
    + "\n\n"
    + "data: [DONE]\n\n"
)

OPENAI_TOOLS = (
    openai_chunk({"role": "assistant", "content": None})
    + openai_chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }
    )
    + "".join(
        openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        for piece in ['{"lo', 'cation"', ': "Zürich"}']
    )
    + openai_chunk(
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": "{}"},
                }
            ]
        }
    )
    + openai_chunk({}, "tool_calls")
    + "data: [DONE]\n\n"
)


def anthropic_event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


ANTHROPIC = (
    anthropic_event(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_01",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude-sonnet-4-20250514",
                "stop_reason": None,
                "usage": {"input_tokens": 472, "cache_read_input_tokens": 8, "output_tokens": 2},
            },
        },
    )
    + anthropic_event(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    + anthropic_event("ping", {"type": "ping"})
    + "".join(
        anthropic_event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            },
        )
        for piece in ["Okay, ", "checking the weather in ", "Zürich 🌦"]
    )
    + anthropic_event("content_block_stop", {"type": "content_block_stop", "index": 0})
    + anthropic_event(
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_01",
                "name": "get_weather",
                "input": {},
            },
        },
    )
    + "".join(
        anthropic_event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": piece},
            },
        )
        for piece in ["", '{"city": ', '"Zürich"}']
    )
    + anthropic_event("content_block_stop", {"type": "content_block_stop", "index": 1})
    + anthropic_event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 89},
        },
    )
    + anthropic_event("message_stop", {"type": "message_stop"})
)

STREAMS = {
    "openai-text": ("openai", OPENAI_TEXT),
    "openai-tools": ("openai", OPENAI_TOOLS),
    "anthropic": ("anthropic", ANTHROPIC),
}
LINE_ENDINGS = {"lf": "\n", "crlf": "\r\n", "cr": "\r"}


def recorded(name: str, eol: str) -> tuple[str, bytes]:
    dialect, text = STREAMS[name]
    return dialect, text.replace("\n", LINE_ENDINGS[eol]).encode()


def summary_dict(s: _core.StreamSummary) -> dict[str, Any]:
    return {
        "text": s.text,
        "tool_calls": json.loads(s.tool_calls_json),
        "finish_reason": s.finish_reason,
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "events": s.events,
        "done": s.done,
    }


def relay_in_pieces(
    dialect: str, stream: bytes, cuts: list[int], **kwargs: Any
) -> tuple[list[bytes], _core.StreamSummary]:
    relay = _core.SseRelay(dialect, **kwargs)
    events: list[bytes] = []
    bounds = [0, *sorted(set(cuts)), len(stream)]
    for a, b in itertools.pairwise(bounds):
        events.extend(relay.feed(stream[a:b]))
    return events, relay.finish()


@pytest.mark.parametrize("eol", LINE_ENDINGS)
@pytest.mark.parametrize("name", STREAMS)
def test_whole_stream_matches_the_python_reference(name: str, eol: str) -> None:
    dialect, stream = recorded(name, eol)
    events, summary = relay_in_pieces(dialect, stream, [])
    assert events == reference_events(stream)
    assert b"".join(events) == re.sub(rb": keep-alive(\r\n|\r|\n){2}", b"", stream)
    assert summary_dict(summary) == reference_summary(dialect, events)
    assert summary.error is None
    assert summary.usage_counted is (name == "openai-tools")


@settings(deadline=None, max_examples=40)
@given(
    st.sampled_from(sorted(STREAMS)),
    st.sampled_from(sorted(LINE_ENDINGS)),
    st.lists(st.integers(min_value=0, max_value=5000), max_size=40),
)
def test_any_split_gives_the_same_events_and_summary(name: str, eol: str, cuts: list[int]) -> None:
    dialect, stream = recorded(name, eol)
    whole_events, whole = relay_in_pieces(dialect, stream, [])
    events, summary = relay_in_pieces(dialect, stream, [c % (len(stream) + 1) for c in cuts])
    assert events == whole_events
    assert repr(summary) == repr(whole)


@pytest.mark.parametrize("eol", LINE_ENDINGS)
def test_byte_at_a_time_feeding_gives_the_same_events(eol: str) -> None:
    dialect, stream = recorded("anthropic", eol)
    events, summary = relay_in_pieces(dialect, stream, list(range(len(stream))))
    assert events == reference_events(stream)
    assert summary.text == "Okay, checking the weather in Zürich 🌦"
    assert summary.done


def test_tool_calls_are_accumulated_in_openai_shape() -> None:
    _, summary = relay_in_pieces(*recorded("openai-tools", "lf"), [100, 200])
    assert json.loads(summary.tool_calls_json) == [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"location": "Zürich"}'},
        },
        {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]
    assert summary.finish_reason == "tool_calls"


def test_anthropic_summary_is_in_openai_terms() -> None:
    _, summary = relay_in_pieces(*recorded("anthropic", "crlf"), [7])
    assert summary.finish_reason == "tool_calls"
    assert (summary.prompt_tokens, summary.completion_tokens, summary.usage_counted) == (
        480,
        89,
        False,
    )
    assert json.loads(summary.tool_calls_json)[0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Zürich"}',
    }


def test_missing_usage_is_counted_with_the_models_tokenizer() -> None:
    stream = openai_chunk({"content": "hello world"}).encode() + b"data: [DONE]\n\n"
    _, summary = relay_in_pieces("openai", stream, [], model="gpt-4")
    assert summary.usage_counted
    assert (summary.prompt_tokens, summary.completion_tokens) == (
        0,
        _core.count_tokens("hello world", "cl100k_base"),
    )


def test_keep_comments_returns_keep_alives() -> None:
    dialect, stream = recorded("openai-text", "crlf")
    events, _ = relay_in_pieces(dialect, stream, [3, 99], keep_comments=True)
    assert b": keep-alive\r\n\r\n" in events
    assert b"".join(events) == stream


def test_split_inside_utf8_char_and_between_cr_and_lf() -> None:
    content = 'data: {"choices":[{"index":0,"delta":{"content":"é😀"}}]}'
    stream = (content + "\r\n\r\ndata: [DONE]\r\n\r\n").encode()
    cuts = [stream.index("😀".encode()) + 2, stream.index(b"\r\n\r\n") + 3]
    events, summary = relay_in_pieces("openai", stream, cuts)
    assert events == [stream[: stream.index(b"data: [DONE]")], b"data: [DONE]\r\n\r\n"]
    assert summary.text == "é😀"


@pytest.mark.parametrize(
    ("stream", "error"),
    [
        (
            b"data: {oops}\n\ndata: [DONE]\n\n",
            "invalid JSON in the data of event 1 at byte 1: key must be a string",
        ),
        (
            b'data: {"choices":[{"delta":{"content":"\xff"}}]}\n\n',
            "invalid UTF-8 in the data of event 1",
        ),
        (
            b'data: {"error":{"message":"Rate limit","type":"rate_limit_error"}}\n\n',
            "upstream error: rate_limit_error: Rate limit",
        ),
        (
            b'data: {"choices":[]}\n\ndata: {"choi',
            "stream ended mid-event (12 bytes without the closing blank line)",
        ),
    ],
)
def test_garbage_is_reported_in_the_summary_not_raised(stream: bytes, error: str) -> None:
    events, summary = relay_in_pieces("openai", stream, [5, 17])
    assert summary.error == error
    assert all(isinstance(e, bytes) for e in events)


def test_anthropic_error_event_is_reported() -> None:
    stream = anthropic_event(
        "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    events, summary = relay_in_pieces("anthropic", stream.encode(), [10])
    assert events == [stream.encode()]
    assert summary.error == "upstream error: overloaded_error: Overloaded"
    assert not summary.done


def test_oversize_event_raises_sse_error_and_the_relay_recovers() -> None:
    relay = _core.SseRelay("openai", max_event_bytes=200)
    assert relay.feed(b'data: {"choices":[]}\n\n') == [b'data: {"choices":[]}\n\n']
    with pytest.raises(_core.SseError, match=r"larger than max_event_bytes \(200 bytes\)"):
        for _ in range(10):
            relay.feed(b"data: " + b"x" * 100)
    assert relay.feed(b"x" * 1000) == []  # still skipping the oversize event
    assert relay.feed(b"\n\ndata: [DONE]\n\n") == [b"data: [DONE]\n\n"]
    summary = relay.finish()
    assert summary.done
    assert summary.error == "upstream event larger than max_event_bytes (200 bytes)"


def test_sse_error_is_a_value_error_and_feed_after_finish_raises_it() -> None:
    assert issubclass(_core.SseError, ValueError)
    relay = _core.SseRelay()
    first = relay.finish()
    with pytest.raises(_core.SseError, match="after finish"):
        relay.feed(b"data: [DONE]\n\n")
    assert repr(relay.finish()) == repr(first)


def test_unknown_dialect_raises_value_error() -> None:
    with pytest.raises(ValueError, match="known dialects: openai, anthropic"):
        _core.SseRelay("cohere")


@settings(deadline=None, max_examples=80)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=8))
def test_random_bytes_never_crash_the_relay(data: bytes, cuts: list[int]) -> None:
    for dialect in ("openai", "anthropic"):
        relay = _core.SseRelay(dialect, max_event_bytes=64)
        bounds = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
        for a, b in itertools.pairwise(bounds):
            try:
                for event in relay.feed(data[a:b]):
                    assert event in data
            except _core.SseError:
                pass
        summary = relay.finish()
        assert isinstance(summary.events, int)


def test_summary_repr_shows_the_fields() -> None:
    _, summary = relay_in_pieces(*recorded("openai-text", "lf"), [])
    text = repr(summary)
    assert text.startswith('StreamSummary(text="Bonjour à tous 👋 — 日本語!"')
    assert 'finish_reason="stop"' in text and "done=True" in text and "error=None" in text
