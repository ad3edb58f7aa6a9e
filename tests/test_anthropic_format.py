"""OpenAI chat completions <-> Anthropic Messages translation, checked against both SDKs."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec
import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.message_create_params import MessageCreateParams
from llm_proxy.providers.anthropic.errors import error_to_openai
from llm_proxy.providers.anthropic.request import TranslationError, chat_to_messages
from llm_proxy.providers.anthropic.response import messages_to_chat
from llm_proxy.providers.anthropic.stream import StreamTranslator, UpstreamStreamError
from llm_proxy.wire.sse import event_data as data_of
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

MODEL = "claude-sonnet-4-5"
_create_params = pydantic.TypeAdapter(MessageCreateParams)
_stream_event = pydantic.TypeAdapter(RawMessageStreamEvent)


def _materialized(value: Any) -> Any:
    # The SDK's TypedDicts validate Iterable fields lazily; walking them forces validation.
    if isinstance(value, dict):
        return {k: _materialized(v) for k, v in value.items()}
    if isinstance(value, list | tuple | Iterator):
        return [_materialized(v) for v in value]
    return value


# The API still takes these on older models, but anthropic>=1.0 dropped them from its types.
_SAMPLING = ("temperature", "top_p", "top_k")


def translate(body: dict[str, Any], default_max_tokens: int = 1024) -> dict[str, Any]:
    """The translated request, checked to be exactly a MessageCreateParams (no unknown keys)."""
    out = chat_to_messages(body, MODEL, default_max_tokens)
    typed = {k: v for k, v in out.items() if k not in _SAMPLING}
    assert _materialized(_create_params.validate_python(typed)) == typed
    return out


def chat(*messages: dict[str, Any], **params: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": list(messages), **params}


USER = {"role": "user", "content": "Hello"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


# ---------------------------------------------------------------- requests


def test_system_and_developer_messages_become_top_level_system() -> None:
    out = translate(
        chat(
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            USER,
        )
    )
    assert out["system"] == "Be brief.\n\nAnswer in French."
    assert out["messages"] == [{"role": "user", "content": "Hello"}]
    assert out["model"] == MODEL


def test_system_with_cache_control_stays_a_list_of_blocks() -> None:
    part = {"type": "text", "text": "Long context", "cache_control": {"type": "ephemeral"}}
    out = translate(chat({"role": "system", "content": [part]}, USER))
    assert out["system"] == [part]


def test_no_system_key_without_system_messages() -> None:
    assert "system" not in translate(chat(USER))


def test_multi_turn_keeps_order_and_merges_consecutive_same_role_messages() -> None:
    out = translate(
        chat(
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "text", "text": "two"}]},
            {"role": "assistant", "content": "three"},
            {"role": "system", "content": "late system note"},
            {"role": "assistant", "content": "four"},
            {"role": "user", "content": "five"},
        )
    )
    assert out["system"] == "late system note"
    assert out["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "three"}, {"type": "text", "text": "four"}],
        },
        {"role": "user", "content": "five"},
    ]


def test_trailing_assistant_prefill_loses_trailing_whitespace() -> None:
    out = translate(chat(USER, {"role": "assistant", "content": "The answer is "}))
    assert out["messages"][-1] == {"role": "assistant", "content": "The answer is"}


def test_image_data_url_becomes_base64_source_and_http_url_becomes_url_source() -> None:
    out = translate(
        chat(
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare these"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"},
                    },
                ],
            }
        )
    )
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "Compare these"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    "url", ["data:image/bmp;base64,Qk0=", "data:image/png,notbase64", "ftp://example.com/a.png"]
)
def test_untranslatable_image_names_the_content_part(url: str) -> None:
    body = chat({"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]})
    with pytest.raises(TranslationError) as caught:
        chat_to_messages(body, MODEL, 100)
    assert caught.value.param == "messages[0].content[0].image_url"


def test_inline_pdf_file_becomes_document_block() -> None:
    part = {
        "type": "file",
        "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"},
    }
    out = translate(chat({"role": "user", "content": [part]}))
    assert out["messages"][0]["content"] == [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
        }
    ]


def test_unsupported_content_part_is_a_translation_error() -> None:
    part = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    with pytest.raises(TranslationError, match="input_audio") as caught:
        chat_to_messages(chat({"role": "user", "content": [part]}), MODEL, 100)
    assert caught.value.param == "messages[0].content[0]"


def test_tool_calls_and_tool_results_round_trip_to_tool_use_and_tool_result() -> None:
    out = translate(
        chat(
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C, cloudy"},
            {
                "role": "tool",
                "tool_call_id": "call_2",
                "content": [{"type": "text", "text": "25C"}],
            },
            {"role": "user", "content": "Thanks. Which is warmer?"},
            tools=[WEATHER_TOOL],
        )
    )
    assert out["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "call_2",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C, cloudy"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_2",
                    "content": [{"type": "text", "text": "25C"}],
                },
                {"type": "text", "text": "Thanks. Which is warmer?"},
            ],
        },
    ]
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather for a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
        }
    ]
    assert "tool_choice" not in out


def test_assistant_text_and_tool_calls_share_one_message() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": ""}}
    out = translate(
        chat(USER, {"role": "assistant", "content": "Let me check.", "tool_calls": [call]})
    )
    assert out["messages"][1]["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "c", "name": "f", "input": {}},
    ]


def test_invalid_tool_call_arguments_name_the_tool_call() -> None:
    call = {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
    body = chat(USER, {"role": "assistant", "tool_calls": [call]})
    with pytest.raises(TranslationError, match="call_9") as caught:
        chat_to_messages(body, MODEL, 100)
    assert caught.value.param == "messages[1].tool_calls[0].function.arguments"


def test_tool_message_without_tool_call_id_is_rejected() -> None:
    with pytest.raises(TranslationError) as caught:
        chat_to_messages(chat(USER, {"role": "tool", "content": "x"}), MODEL, 100)
    assert caught.value.param == "messages[1].tool_call_id"


def test_tool_without_parameters_gets_an_empty_object_schema() -> None:
    tool = {"type": "function", "function": {"name": "now"}}
    out = translate(chat(USER, tools=[tool]))
    assert out["tools"] == [{"name": "now", "input_schema": {"type": "object", "properties": {}}}]


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather"},
        ),
    ],
)
def test_tool_choice_maps_to_anthropic_tool_choice(tool_choice: Any, expected: Any) -> None:
    out = translate(chat(USER, tools=[WEATHER_TOOL], tool_choice=tool_choice))
    assert out["tool_choice"] == expected


def test_parallel_tool_calls_false_disables_parallel_tool_use() -> None:
    out = translate(chat(USER, tools=[WEATHER_TOOL], parallel_tool_calls=False))
    assert out["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    out = translate(
        chat(USER, tools=[WEATHER_TOOL], tool_choice="required", parallel_tool_calls=False)
    )
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


def test_tool_choice_without_tools_is_rejected_unless_none() -> None:
    assert "tool_choice" not in translate(chat(USER, tool_choice="none"))
    with pytest.raises(TranslationError) as caught:
        chat_to_messages(chat(USER, tool_choice="required"), MODEL, 100)
    assert caught.value.param == "tool_choice"


def test_non_function_tool_is_rejected() -> None:
    with pytest.raises(TranslationError) as caught:
        chat_to_messages(chat(USER, tools=[{"type": "custom", "custom": {}}]), MODEL, 100)
    assert caught.value.param == "tools[0]"


@pytest.mark.parametrize(("stop", "expected"), [("END", ["END"]), (["a", "b"], ["a", "b"])])
def test_stop_becomes_stop_sequences(stop: Any, expected: list[str]) -> None:
    assert translate(chat(USER, stop=stop))["stop_sequences"] == expected


def test_max_tokens_defaults_and_max_completion_tokens_wins() -> None:
    assert translate(chat(USER), default_max_tokens=4096)["max_tokens"] == 4096
    assert translate(chat(USER, max_tokens=50))["max_tokens"] == 50
    assert translate(chat(USER, max_tokens=50, max_completion_tokens=70))["max_tokens"] == 70
    with pytest.raises(TranslationError) as caught:
        chat_to_messages(chat(USER, max_tokens=0), MODEL, 100)
    assert caught.value.param == "max_tokens"


def test_sampling_stream_and_user_pass_through_and_openai_only_fields_drop() -> None:
    out = translate(
        chat(
            USER,
            temperature=0.2,
            top_p=0.9,
            stream=True,
            stream_options={"include_usage": True},
            user="user-42",
            n=1,
            presence_penalty=0.5,
            frequency_penalty=0.5,
            logprobs=True,
            top_logprobs=2,
            seed=7,
            logit_bias={"50256": -100},
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
            metadata={"team": "a"},
        )
    )
    assert out == {
        "model": MODEL,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hello"}],
        "temperature": 0.2,
        "top_p": 0.9,
        "stream": True,
        "metadata": {"user_id": "user-42"},
    }


def test_sampling_params_can_be_dropped_for_models_that_reject_them() -> None:
    body = chat(USER, temperature=0.7, top_p=0.9, top_k=40)
    assert chat_to_messages(body, MODEL, 100)["top_k"] == 40
    out = chat_to_messages(body, MODEL, 100, sampling=False)
    assert not set(_SAMPLING) & out.keys()


def test_more_than_one_choice_is_rejected_naming_n() -> None:
    with pytest.raises(TranslationError, match="n must be 1") as caught:
        chat_to_messages(chat(USER, n=2), MODEL, 100)
    assert caught.value.param == "n"
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role"),
        ({"messages": [USER], "functions": [{"name": "f"}]}, "functions"),
        ({"messages": [USER], "stop": 5}, "stop"),
    ],
)
def test_untranslatable_requests_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as caught:
        chat_to_messages(body, MODEL, 100)
    assert caught.value.param == param


# ---------------------------------------------------------------- whole responses

TOOL_RESPONSE: dict[str, Any] = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "text", "text": "I'll check the weather."},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"city": "San Francisco", "unit": "celsius"},
        },
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 120,
        "output_tokens": 45,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 2000,
    },
}


def test_response_becomes_a_valid_chat_completion() -> None:
    Message.model_validate(TOOL_RESPONSE)
    out = messages_to_chat(TOOL_RESPONSE, "my-claude", 1_700_000_000)
    completion = ChatCompletion.model_validate(out)
    assert completion.id == "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL"
    assert completion.model == "my-claude"
    assert completion.created == 1_700_000_000
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I'll check the weather."
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.id == "toolu_01A09q90qw90lq917835lq9"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert call.function.arguments == '{"city":"San Francisco","unit":"celsius"}'  # type: ignore[union-attr]


def test_usage_counts_cached_input_as_prompt_tokens() -> None:
    usage = messages_to_chat(TOOL_RESPONSE, "m", 0)["usage"]
    assert usage == {
        "prompt_tokens": 2120,
        "completion_tokens": 45,
        "total_tokens": 2165,
        "prompt_tokens_details": {"cached_tokens": 2000},
    }
    thinking = {
        "input_tokens": 10,
        "output_tokens": 30,
        "output_tokens_details": {"thinking_tokens": 20},
    }
    assert messages_to_chat({**TOOL_RESPONSE, "usage": thinking}, "m", 0)["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 30,
        "total_tokens": 40,
        "completion_tokens_details": {"reasoning_tokens": 20},
    }
    plain = {**TOOL_RESPONSE, "usage": {"input_tokens": 10, "output_tokens": 3}}
    assert messages_to_chat(plain, "m", 0)["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 3,
        "total_tokens": 13,
    }


def test_tool_only_response_has_null_content() -> None:
    resp = {**TOOL_RESPONSE, "content": TOOL_RESPONSE["content"][1:]}
    message = messages_to_chat(resp, "m", 0)["choices"][0]["message"]
    assert message["content"] is None
    assert len(message["tool_calls"]) == 1


def test_text_blocks_are_joined_and_thinking_is_left_out() -> None:
    resp = {
        **TOOL_RESPONSE,
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Hello, "},
            {"type": "text", "text": "world."},
        ],
        "stop_reason": "end_turn",
    }
    out = messages_to_chat(resp, "m", 0)
    ChatCompletion.model_validate(out)
    assert out["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello, world.",
        "refusal": None,
    }


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("pause_turn", "stop"),
        ("refusal", "content_filter"),
        (None, "stop"),
    ],
)
def test_stop_reason_maps_to_finish_reason(stop_reason: str | None, finish_reason: str) -> None:
    out = messages_to_chat({**TOOL_RESPONSE, "stop_reason": stop_reason}, "m", 0)
    assert out["choices"][0]["finish_reason"] == finish_reason


# ---------------------------------------------------------------- streams

# A recorded-shape Anthropic stream: text, a tool call whose arguments arrive in pieces (with the
# spacing Anthropic actually sends), and a tool call with no arguments at all.
_STREAM_EVENTS: list[tuple[str, dict[str, Any]]] = [
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5-20250929",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 472,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 128,
                    "output_tokens": 2,
                },
            },
        },
    ),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    ("ping", {"type": "ping"}),
    *[
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}},
        )
        for t in ["Okay", ", let's check", " the weather for San Francisco, CA:"]
    ],
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "name": "get_weather",
                "input": {},
            },
        },
    ),
    *[
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": p},
            },
        )
        for p in ["", '{"location":', ' "San Fra', 'ncisco, CA"', ', "unit": "fah', 'renheit"}']
    ],
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_02Ab3cDeFgHiJkLmNoPqRsTu",
                "name": "get_time",
                "input": {},
            },
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": ""},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 2}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 89},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
]
RECORDED_STREAM = b"".join(
    b"event: " + name.encode() + b"\r\ndata: " + json.dumps(data).encode() + b"\r\n\r\n"
    for name, data in _STREAM_EVENTS
)


def raw_events(stream: bytes) -> list[bytes]:
    return [e + b"\r\n\r\n" for e in stream.split(b"\r\n\r\n") if e]


def whole_message(stream: bytes) -> dict[str, Any]:
    """The stream folded into one Message by the anthropic SDK's own accumulator."""
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for event in raw_events(stream):
        payload = data_of(event)
        assert payload is not None
        if b'"ping"' in payload:
            continue
        parsed = _stream_event.validate_json(payload)
        snapshot = accumulate_event(event=parsed, current_snapshot=snapshot, json_bufs=json_bufs)
    assert snapshot is not None
    return snapshot.model_dump(mode="json", exclude_none=True)


def openai_chunks(out: list[bytes]) -> list[dict[str, Any]]:
    assert out[-1] == b"data: [DONE]\n\n"
    chunks = []
    for event in out[:-1]:
        assert event.startswith(b"data: ") and event.endswith(b"\n\n")
        chunks.append(msgspec.json.decode(event[6:-2]))
    return chunks


def translate_stream(stream: bytes, include_usage: bool) -> tuple[StreamTranslator, list[bytes]]:
    translator = StreamTranslator("my-claude", 1_700_000_000, include_usage)
    out: list[bytes] = []
    for event in raw_events(stream):
        payload = data_of(event)
        assert payload is not None
        out.extend(translator.event(payload))
    return translator, out


def function_calls(tool_calls: Sequence[Any] | None) -> list[tuple[str, str, Any]]:
    """(id, name, decoded arguments) of each call: streamed argument text may differ in spacing."""
    return [(c.id, c.function.name, json.loads(c.function.arguments)) for c in tool_calls or []]


def test_recorded_stream_chunks_add_up_to_the_whole_response() -> None:
    translator, out = translate_stream(RECORDED_STREAM, include_usage=True)
    chunks = openai_chunks(out)
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    streamed = state.get_final_completion()
    whole = ChatCompletion.model_validate(
        messages_to_chat(whole_message(RECORDED_STREAM), "my-claude", 1_700_000_000)
    )

    assert streamed.id == whole.id == "chatcmpl-msg_014p7gG3wDgGV9EUtLvnow3U"
    assert streamed.model == whole.model == "my-claude"
    s, w = streamed.choices[0], whole.choices[0]
    assert s.message.content == w.message.content
    assert s.message.content == "Okay, let's check the weather for San Francisco, CA:"
    assert s.finish_reason == w.finish_reason == "tool_calls"
    s_calls, w_calls = function_calls(s.message.tool_calls), function_calls(w.message.tool_calls)
    assert s_calls == w_calls
    assert s_calls == [
        (
            "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "get_weather",
            {"location": "San Francisco, CA", "unit": "fahrenheit"},
        ),
        ("toolu_02Ab3cDeFgHiJkLmNoPqRsTu", "get_time", {}),
    ]
    assert streamed.usage == whole.usage
    assert whole.usage is not None and whole.usage.prompt_tokens == 600
    assert (translator.prompt_tokens, translator.completion_tokens) == (600, 89)
    assert translator.finish_reason == "tool_calls"


def test_stream_chunks_share_id_and_carry_role_first_and_usage_last() -> None:
    _, out = translate_stream(RECORDED_STREAM, include_usage=True)
    chunks = openai_chunks(out)
    assert {c["id"] for c in chunks} == {"chatcmpl-msg_014p7gG3wDgGV9EUtLvnow3U"}
    assert {(c["object"], c["created"], c["model"]) for c in chunks} == {
        ("chat.completion.chunk", 1_700_000_000, "my-claude")
    }
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "tool_calls",
    }
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 600,
        "completion_tokens": 89,
        "total_tokens": 689,
        "prompt_tokens_details": {"cached_tokens": 128},
    }
    assert all(c["usage"] is None for c in chunks[:-1])
    tool_starts = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks[:-1]
        if "id" in c["choices"][0]["delta"].get("tool_calls", [{}])[0]
    ]
    assert [(t["index"], t["function"]) for t in tool_starts] == [
        (0, {"name": "get_weather", "arguments": ""}),
        (1, {"name": "get_time", "arguments": ""}),
    ]


def test_stream_without_include_usage_has_no_usage_chunk() -> None:
    translator, out = translate_stream(RECORDED_STREAM, include_usage=False)
    chunks = openai_chunks(out)
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
        assert "usage" not in chunk
        assert len(chunk["choices"]) == 1
    assert translator.completion_tokens == 89


def test_translator_accepts_raw_events_and_skips_ping() -> None:
    translator = StreamTranslator("m", 0, False)
    start, ping = raw_events(RECORDED_STREAM)[0], raw_events(RECORDED_STREAM)[2]
    assert b"event: ping" in ping
    assert len(translator.event(start)) == 1
    assert translator.event(ping) == []


def test_error_event_raises_upstream_stream_error() -> None:
    translator = StreamTranslator("m", 0, True)
    translator.event(raw_events(RECORDED_STREAM)[0])
    error = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    with pytest.raises(UpstreamStreamError) as caught:
        translator.event(error)
    assert (caught.value.message, caught.value.type) == ("Overloaded", "overloaded_error")


def test_event_before_message_start_is_a_value_error() -> None:
    delta = b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}'
    with pytest.raises(ValueError, match="message_start"):
        StreamTranslator("m", 0, False).event(delta)


def test_malformed_event_is_a_value_error() -> None:
    translator = StreamTranslator("m", 0, False)
    translator.event(raw_events(RECORDED_STREAM)[0])
    with pytest.raises(ValueError):
        translator.event(b'{"type":"content_block_delta","index":0}')
    with pytest.raises(ValueError):
        translator.event(b"{not json")


@pytest.mark.parametrize(
    ("event", "data"),
    [
        (b'event: ping\ndata: {"type":"ping"}\n\n', b'{"type":"ping"}'),
        (b'event: ping\r\ndata:{"type":"ping"}\r\n\r\n', b'{"type":"ping"}'),
        (b": comment\ndata: a\ndata: b\n\n", b"a\nb"),
        (b"event: ping\n\n", None),
    ],
)
def test_data_of_extracts_the_payload(event: bytes, data: bytes | None) -> None:
    assert data_of(event) == data


# ---------------------------------------------------------------- errors


def anthropic_error(kind: str, message: str = "boom") -> bytes:
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


@pytest.mark.parametrize(
    ("status", "kind", "new_status", "new_type", "code"),
    [
        (400, "invalid_request_error", 400, "invalid_request_error", None),
        (401, "authentication_error", 401, "authentication_error", "invalid_api_key"),
        (403, "permission_error", 403, "permission_error", None),
        (404, "not_found_error", 404, "not_found_error", None),
        (413, "request_too_large", 413, "invalid_request_error", "request_too_large"),
        (429, "rate_limit_error", 429, "rate_limit_error", "rate_limit_exceeded"),
        (500, "api_error", 502, "api_error", None),
        (529, "overloaded_error", 503, "service_unavailable", "overloaded"),
    ],
)
def test_anthropic_errors_become_openai_errors(
    status: int, kind: str, new_status: int, new_type: str, code: str | None
) -> None:
    got_status, body = error_to_openai(status, anthropic_error(kind, "max_tokens: too large"))
    assert got_status == new_status
    assert msgspec.json.decode(body) == {
        "error": {"message": "max_tokens: too large", "type": new_type, "param": None, "code": code}
    }


def test_non_anthropic_error_body_mentions_the_status() -> None:
    status, body = error_to_openai(502, b"<html>Bad Gateway</html>")
    error = msgspec.json.decode(body)["error"]
    assert status == 502
    assert error["message"] == "upstream answered 502: <html>Bad Gateway</html>"
    assert error["type"] == "api_error"
    status, body = error_to_openai(529, b"")
    assert status == 503
    assert msgspec.json.decode(body)["error"]["message"] == "upstream answered 529"
