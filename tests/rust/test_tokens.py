"""Token counts against Python tiktoken built from the same rank files as the Rust core."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llm_proxy import _core

from tests.support.reference import python_encoding, reference_chat_tokens

REAL_TEXTS = [
    "Hello, world! How are you today?",
    "def fib(n: int) -> int:\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    'fn main() {\n\tprintln!("{}", 1 + 2);\n}\r\n',
    "Emoji: 😀👍🏽👨‍👩‍👧‍👦 🇯🇵 and flags",
    "日本語のテキストと中文文本\uff0c还有한국어 텍스트.",
    "a" + " " * 200 + "b",
    "\n\n\n   \t\t  \r\n",
    "<|endoftext|> is just text here, as is <|endofprompt|> and <|fim_prefix|>",
    "It's they're we'll I'd YOU'RE 12345678901234567890 3.14159",
    "Ünïcödé çömbïnïng: e\u0301 a\u0308 \u200b zero-width",
    '{"role":"user","content":"JSON \\"escaped\\" text"}',
]


@pytest.mark.parametrize("text", REAL_TEXTS)
def test_real_text_counts_equal_tiktoken(text: str, encoding_name: str) -> None:
    expected = len(python_encoding(encoding_name).encode_ordinary(text))
    assert _core.count_tokens(text, encoding_name) == expected


@settings(deadline=None, max_examples=150)
@given(st.text(max_size=200))
def test_generated_text_counts_equal_tiktoken(text: str) -> None:
    for name in ("o200k_base", "cl100k_base"):
        assert _core.count_tokens(text, name) == len(python_encoding(name).encode_ordinary(text))


@settings(deadline=None, max_examples=60)
@given(
    st.lists(
        st.sampled_from(["foo", " ", "  ", "\n", "123", "é", "😀", "<|", "|>", "'s", "ABC"]),
        max_size=60,
    )
)
def test_token_boundary_heavy_text_counts_equal_tiktoken(pieces: list[str]) -> None:
    text = "".join(pieces)
    for name in ("o200k_base", "cl100k_base"):
        assert _core.count_tokens(text, name) == len(python_encoding(name).encode_ordinary(text))


def test_long_text_counts_equal_tiktoken() -> None:
    text = " ".join(REAL_TEXTS) * 400
    assert len(text.encode()) > 64 * 1024
    assert _core.count_tokens(text) == len(python_encoding("o200k_base").encode_ordinary(text))


def test_default_encoding_is_o200k_base() -> None:
    text = "hello there"
    assert _core.count_tokens(text) == _core.count_tokens(text, "o200k_base")


def test_unknown_encoding_raises_value_error_listing_known_ones() -> None:
    with pytest.raises(ValueError, match="known encodings: o200k_base, cl100k_base"):
        _core.count_tokens("x", "p50k_base")


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-4.5-preview", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("o1-preview", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("openai/gpt-4o", "o200k_base"),
        ("ft:gpt-4o-mini:acme::abc123", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("azure/gpt-35-turbo", "cl100k_base"),
        ("text-embedding-3-large", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
        ("claude-sonnet-4", "o200k_base"),
        ("", "o200k_base"),
    ],
)
def test_models_map_to_the_encoding_openai_uses(model: str, encoding: str) -> None:
    assert _core.encoding_for_model(model) == encoding


short_text = st.text(max_size=30)
parts = st.lists(
    st.one_of(
        st.fixed_dictionaries({"type": st.just("text"), "text": short_text}),
        st.fixed_dictionaries(
            {"type": st.just("image_url"), "image_url": st.just({"url": "https://x/y.png"})}
        ),
    ),
    max_size=3,
)
tool_calls = st.lists(
    st.fixed_dictionaries(
        {
            "id": short_text,
            "type": st.just("function"),
            "function": st.fixed_dictionaries({"name": short_text, "arguments": short_text}),
        }
    ),
    max_size=2,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant", "tool", "developer"])},
        optional={
            "content": st.none() | short_text | parts,
            "name": short_text,
            "tool_calls": tool_calls,
            "tool_call_id": short_text,
            "refusal": st.none() | short_text,
        },
    ),
    max_size=5,
)


@settings(deadline=None, max_examples=100)
@given(messages, st.sampled_from(["gpt-4o", "gpt-4", "gpt-3.5-turbo", "o3-mini"]))
def test_chat_tokens_equal_the_python_recipe(msgs: list[dict[str, Any]], model: str) -> None:
    expected = reference_chat_tokens(msgs, _core.encoding_for_model(model))
    assert _core.count_chat_tokens(json.dumps(msgs).encode(), model) == expected


def test_chat_tokens_of_the_cookbook_example() -> None:
    # The cookbook's example conversation: 129 prompt tokens for gpt-4 and gpt-4o alike.
    example = [
        {
            "role": "system",
            "content": "You are a helpful, pattern-following assistant that translates "
            "corporate jargon into plain English.",
        },
        {
            "role": "system",
            "name": "example_user",
            "content": "New synergies will help drive top-line growth.",
        },
        {
            "role": "system",
            "name": "example_assistant",
            "content": "Things working well together will increase revenue.",
        },
        {
            "role": "system",
            "name": "example_user",
            "content": "Let's circle back when we have more bandwidth to touch base on "
            "opportunities for increased leverage.",
        },
        {
            "role": "system",
            "name": "example_assistant",
            "content": "Let's talk later when we're less busy about how to do better.",
        },
        {
            "role": "user",
            "content": "This late pivot means we don't have time to boil the ocean for the "
            "client deliverable.",
        },
    ]
    body = json.dumps(example).encode()
    assert _core.count_chat_tokens(body, "gpt-4") == 129
    assert _core.count_chat_tokens(body, "gpt-4o") == 124


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'[{"role": }]', "invalid JSON at byte 10: expected value"),
        (b'[\n {"a":1},\n x]', "invalid JSON at byte 13: expected value"),
        (b'{"role":"user"}', "messages must be a JSON array of message objects, got an object"),
        (b'[{"role":"user"}, "hi"]', "messages[1] must be a JSON object, got a string"),
    ],
)
def test_bad_messages_raise_value_error_with_the_place(body: bytes, message: str) -> None:
    with pytest.raises(ValueError) as got:
        _core.count_chat_tokens(body, "gpt-4o")
    assert str(got.value) == message
