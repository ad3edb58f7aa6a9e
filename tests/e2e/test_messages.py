"""Anthropic's Messages API on the gateway, through the official `anthropic` SDK.

Three kinds of deployment answer it: the in-process mock (`mock-1`), an OpenAI-format
upstream (`gpt-4o-mini`: translated both ways) and an Anthropic upstream (`claude`: the
client's body passes through but for the model name).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import msgspec
import pytest
from llm_proxy import _core

from tests.e2e.test_observe import logging_config, record_of
from tests.support.servers import Gateway, MockUpstream, standard_config, start_gateway

MODELS = ["mock-1", "gpt-4o-mini", "claude"]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def gw_log(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, Path]]:
    tmp = tmp_path_factory.mktemp("messages")
    config = logging_config(mock_upstream, tmp)
    config["models"]["reasoner"] = {"provider": "up", "model": "o3-mini"}
    config["models"]["llama"] = {"provider": "up", "model": "llama-3.1-8b-instruct"}
    gw = start_gateway(config, tmp)
    yield gw, tmp
    gw.stop()


@pytest.fixture
def gw(gw_log: tuple[Gateway, Path]) -> Gateway:
    return gw_log[0]


def client(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="sk-client", max_retries=0, timeout=20)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def check_event_sequence(events: list[Any]) -> None:
    """Anthropic's documented stream grammar: message_start, then blocks (start, deltas of
    the block's kind, stop) with consecutive indexes, message_delta, message_stop; pings
    anywhere after message_start. The SDK's helper events (`text`, `input_json`) are left out."""
    events = [e for e in events if e.type not in ("text", "input_json")]
    kinds = [e.type for e in events if e.type != "ping"]
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert events[0].type == "message_start"
    open_block: tuple[int, str] | None = None
    next_index = 0
    for e in [e for e in events if e.type != "ping"][1:-2]:
        if e.type == "content_block_start":
            assert open_block is None
            assert e.index == next_index
            open_block = (e.index, e.content_block.type)
            next_index += 1
        elif e.type == "content_block_delta":
            assert open_block is not None and e.index == open_block[0]
            want = {"text": "text_delta", "tool_use": "input_json_delta"}[open_block[1]]
            assert e.delta.type == want
        elif e.type == "content_block_stop":
            assert open_block is not None and e.index == open_block[0]
            open_block = None
        else:
            raise AssertionError(f"unexpected event {e.type} between the blocks")
    assert open_block is None
    assert next_index >= 1


# -- whole and streamed, every kind of deployment ---------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_whole_message_answers_in_anthropic_shape(gw: Gateway, model: str) -> None:
    message = client(gw).messages.create(
        model=model, max_tokens=64, system="Be brief.", messages=user("Say hello")
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.content[0].type == "text" and message.content[0].text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_stream_follows_anthropics_event_sequence(gw: Gateway, model: str) -> None:
    with client(gw).messages.stream(
        model=model, max_tokens=64, messages=user("Tell me a story")
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
        text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    check_event_sequence(events)
    assert [e.type for e in events].count("message_start") == 1
    assert final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.output_tokens > 0


def test_streamed_and_whole_answers_agree_through_a_translated_upstream(gw: Gateway) -> None:
    c = client(gw)
    whole = c.messages.create(model="gpt-4o-mini", max_tokens=40, messages=user("Same, please"))
    with c.messages.stream(model="gpt-4o-mini", max_tokens=40, messages=user("Same, please")) as s:
        final = s.get_final_message()
    assert final.content[0].text == whole.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == whole.stop_reason
    assert final.usage.input_tokens == whole.usage.input_tokens


def test_async_client_whole_and_streamed(gw: Gateway) -> None:
    async def run() -> None:
        c = anthropic.AsyncAnthropic(base_url=gw.url, api_key="k", max_retries=0, timeout=20)
        whole = await c.messages.create(model="gpt-4o-mini", max_tokens=32, messages=user("Hi"))
        assert whole.content[0].type == "text"
        async with c.messages.stream(model="claude", max_tokens=32, messages=user("Hi")) as s:
            events = [e async for e in s]
            final = await s.get_final_message()
        check_event_sequence(events)
        assert final.content[0].type == "text" and final.content[0].text
        await c.close()

    asyncio.run(run())


# -- tools --------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude"])
def test_tool_call_whole_and_streamed(gw: Gateway, model: str) -> None:
    c = client(gw)
    question = user("What is the weather in Paris?")
    whole = c.messages.create(model=model, max_tokens=64, tools=[WEATHER_TOOL], messages=question)
    assert whole.stop_reason == "tool_use"
    block = whole.content[-1]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.input == {"city": "Paris"}
    with c.messages.stream(
        model=model, max_tokens=64, tools=[WEATHER_TOOL], messages=question
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    check_event_sequence(events)
    assert any(
        e.type == "content_block_delta" and e.delta.type == "input_json_delta" for e in events
    )
    assert final.stop_reason == "tool_use"
    tool = final.content[-1]
    assert tool.type == "tool_use" and tool.input == {"city": "Paris"}

    # The tool's result goes back; the upstream sees it in its own format, and answers.
    follow_up = c.messages.create(
        model=model,
        max_tokens=64,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "auto"},
        messages=[
            *question,
            {"role": "assistant", "content": [b.model_dump() for b in whole.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": block.id, "content": "Sunny, 21 C"}
                ],
            },
        ],
    )
    assert follow_up.content[0].type == "text"


def test_tool_result_reaches_an_openai_upstream_as_a_tool_message(
    gw: Gateway, mock_upstream: MockUpstream
) -> None:
    client(gw).messages.create(
        model="gpt-4o-mini",
        max_tokens=32,
        system=[{"type": "text", "text": "You are terse."}],
        stop_sequences=["END"],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Rain"},
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
    )
    sent = mock_upstream.last()
    assert sent["path"] == "/v1/chat/completions"
    body = sent["body"]
    assert body["stop"] == ["END"] and body["max_tokens"] == 32
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["tools"][0]["function"]["parameters"] == WEATHER_TOOL["input_schema"]
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool", "user"]
    assert body["messages"][2]["tool_calls"][0]["id"] == "toolu_1"
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "Rain"}


def test_images_and_thinking_are_translated_for_an_openai_upstream(
    gw: Gateway, mock_upstream: MockUpstream
) -> None:
    image = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    client(gw).messages.create(
        model="reasoner",
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": image},  # type: ignore[list-item]
                    {"type": "text", "text": "What is this?"},
                ],
            }
        ],
    )
    body = mock_upstream.last()["body"]
    assert body["model"] == "o3-mini" and body["reasoning_effort"] == "low"
    assert body["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "text", "text": "What is this?"},
    ]
    # A model without reasoning gets no reasoning_effort (it would refuse the field).
    client(gw).messages.create(
        model="gpt-4o-mini",
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=user("Think"),
    )
    assert "reasoning_effort" not in mock_upstream.last()["body"]


def test_images_in_a_tool_result_follow_its_tool_message(
    gw: Gateway, mock_upstream: MockUpstream
) -> None:
    png = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    client(gw).messages.create(
        model="gpt-4o-mini",
        max_tokens=32,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "Show me the radar"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_9",
                        "content": [
                            {"type": "text", "text": "Radar attached"},
                            {"type": "image", "source": png},
                        ],
                    }
                ],
            },
        ],
    )
    messages = mock_upstream.last()["body"]["messages"]
    assert messages[2] == {"role": "tool", "tool_call_id": "toolu_9", "content": "Radar attached"}
    url = "data:image/png;base64,iVBORw0KGgo="
    assert messages[3] == {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": url}}],
    }


# -- passthrough to an Anthropic deployment -----------------------------------------------


def test_anthropic_deployment_gets_the_clients_body_but_the_model_name(
    gw: Gateway, mock_upstream: MockUpstream
) -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Long context", "cache_control": {"type": "ephemeral"}}
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Hmm.", "signature": "sig-abc=="},
                {"type": "text", "text": "Noted."},
            ],
        },
        {"role": "user", "content": "Go on"},
    ]
    response = client(gw).messages.with_raw_response.create(
        model="claude",
        max_tokens=48,
        messages=messages,  # type: ignore[arg-type]
        extra_body={"some_new_field": {"kept": True}},
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    )
    assert response.parse().content[0].type == "text"
    sent = mock_upstream.last()
    assert sent["path"] == "/v1/messages"
    assert sent["body"] == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 48,
        "messages": messages,
        "some_new_field": {"kept": True},
    }
    assert sent["headers"]["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert sent["headers"]["x-api-key"] == "ant-SECRET"


def test_upstream_anthropic_errors_pass_through_with_their_type(gw: Gateway) -> None:
    with pytest.raises(anthropic.RateLimitError) as caught:
        client(gw).messages.create(model="claude429", max_tokens=8, messages=user("x"))
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Mock rate_limit_error."},
    }
    assert caught.value.response.headers["retry-after"] == "1"


# -- count_tokens -------------------------------------------------------------------------


def test_count_tokens_is_exact_and_offline_for_openai_models(gw: Gateway) -> None:
    c = client(gw)
    raw = c.messages.with_raw_response.count_tokens(
        model="gpt-4o-mini", system="Be brief.", messages=user("How many tokens is this?")
    )
    assert raw.headers["x-llm-proxy-token-count"] == "exact"

    # OpenAI's chat accounting: 3 per message, its role and content, 3 to prime the reply (the Rust
    # tokenizer is held to tiktoken's counts by tests/rust).
    def count(text: str) -> int:
        return _core.count_tokens(text, "o200k_base")

    system = 3 + count("system") + count("Be brief.")
    want = system + 3 + count("user") + count("How many tokens is this?") + 3
    assert raw.parse().input_tokens == want
    with_tools = c.messages.with_raw_response.count_tokens(
        model="gpt-4o-mini", tools=[WEATHER_TOOL], messages=user("How many tokens is this?")
    )
    assert with_tools.headers["x-llm-proxy-token-count"] == "estimate"
    assert with_tools.parse().input_tokens > want


def test_count_tokens_for_other_models_is_an_estimate(gw: Gateway) -> None:
    raw = client(gw).messages.with_raw_response.count_tokens(
        model="llama", messages=user("How many tokens is this?")
    )
    assert raw.headers["x-llm-proxy-token-count"] == "estimate"
    assert raw.parse().input_tokens > 0


def test_count_tokens_comes_from_the_upstream_for_anthropic_models(
    gw: Gateway, mock_upstream: MockUpstream
) -> None:
    raw = client(gw).messages.with_raw_response.count_tokens(
        model="claude", messages=user("Count me")
    )
    assert raw.headers["x-llm-proxy-token-count"] == "upstream"
    assert raw.parse().input_tokens > 0
    sent = mock_upstream.last()
    assert sent["path"] == "/v1/messages/count_tokens"
    assert sent["body"]["model"] == "claude-sonnet-4-5"


# -- errors in Anthropic's shape ----------------------------------------------------------


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body["type"] == "error", body
    return dict(body["error"])


@pytest.mark.parametrize(
    ("body", "status", "kind", "words"),
    [
        (b"{not json", 400, "invalid_request_error", "could not parse"),
        (b"[1]", 400, "invalid_request_error", "JSON object"),
        (b'{"model":"gpt-4o-mini"}', 400, "invalid_request_error", "messages"),
        (
            b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}',
            400,
            "invalid_request_error",
            "max_tokens",
        ),
        (
            b'{"model":"gpt-4o-mini","max_tokens":5,"messages":[{"role":"system","content":"x"}]}',
            400,
            "invalid_request_error",
            "role",
        ),
        (
            b'{"model":"nope","max_tokens":5,"messages":[{"role":"user","content":"x"}]}',
            404,
            "not_found_error",
            "nope",
        ),
    ],
)
def test_bad_requests_get_anthropic_errors(
    gw: Gateway, body: bytes, status: int, kind: str, words: str
) -> None:
    r = httpx.post(
        gw.url + "/v1/messages", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == status
    error = error_of(r)
    assert error["type"] == kind and words in error["message"]


def test_server_tool_on_a_translated_deployment_is_a_clear_400(gw: Gateway) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(gw).messages.create(
            model="gpt-4o-mini",
            max_tokens=8,
            tools=[{"type": "web_search_20250305", "name": "web_search"}],  # type: ignore[list-item]
            messages=user("x"),
        )
    assert "only available on Anthropic models" in str(caught.value)


def test_wrong_method_and_oversize_body_get_anthropic_errors(gw: Gateway) -> None:
    r = httpx.get(gw.url + "/v1/messages")
    assert r.status_code == 405 and error_of(r)["type"] == "invalid_request_error"
    big = b'{"model":"mock-1","max_tokens":5,"messages":[{"role":"user","content":"%s"}]}' % (
        b"x" * 70000
    )
    r = httpx.post(gw.url + "/v1/messages", content=big)
    assert r.status_code == 413 and error_of(r)["type"] == "request_too_large"


def test_upstream_failure_mid_stream_is_an_anthropic_error_event(gw: Gateway) -> None:
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client(gw).messages.stream(model="upbroken", max_tokens=64, messages=user("x")) as s,
    ):
        list(s)
    assert "upstream" in str(caught.value)


def test_upstream_down_is_a_502_api_error(gw: Gateway) -> None:
    with pytest.raises(anthropic.APIStatusError) as caught:
        client(gw).messages.create(model="gone", max_tokens=8, messages=user("x"))
    assert caught.value.status_code == 502
    assert msgspec.json.decode(caught.value.response.content)["error"]["type"] == "api_error"


# -- the log ------------------------------------------------------------------------------


def test_messages_calls_are_logged_with_their_endpoint(gw_log: tuple[Gateway, Path]) -> None:
    gw, tmp = gw_log
    raw = client(gw).messages.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=16, messages=user("Log me")
    )
    record = record_of(tmp / "log.db", raw.headers["x-request-id"])
    assert record["endpoint"] == "messages" and record["door"] == "http"
    assert record["status"] == 200 and record["prompt_tokens"] > 0


# -- the cache ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cached_gw(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("messages-cache")
    config = standard_config(mock_upstream)
    config["cache"] = {"enabled": True}
    gw = start_gateway(config, tmp)
    yield gw
    gw.stop()


def test_translated_answers_are_cached_and_replayed_in_anthropic_shape(
    cached_gw: Gateway,
) -> None:
    c = client(cached_gw)
    question = user("Cache this answer, please")
    first = c.messages.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=40, messages=question
    )
    again = c.messages.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=40, messages=question
    )
    assert first.headers["x-llm-proxy-cache"] == "miss"
    assert again.headers["x-llm-proxy-cache"] == "hit"
    assert again.parse().content == first.parse().content
    # A stream of the same request is replayed from the entry, as Anthropic's events.
    with c.messages.with_streaming_response.create(
        model="gpt-4o-mini", max_tokens=40, messages=question, stream=True
    ) as response:
        assert response.headers["x-llm-proxy-cache"] == "hit"
    with c.messages.stream(model="gpt-4o-mini", max_tokens=40, messages=question) as stream:
        events = list(stream)
        final = stream.get_final_message()
    check_event_sequence(events)
    assert final.content[0].text == first.parse().content[0].text  # type: ignore[union-attr]


def test_passthrough_answers_bypass_the_cache(cached_gw: Gateway) -> None:
    c = client(cached_gw)
    for _ in range(2):
        raw = c.messages.with_raw_response.create(
            model="claude", max_tokens=40, messages=user("Not cached")
        )
        assert raw.headers["x-llm-proxy-cache"] == "bypass"


# -- the stream's lifecycle ---------------------------------------------------------------


def test_client_leaving_mid_stream_closes_the_upstream_and_is_logged_499(
    gw_log: tuple[Gateway, Path], mock_upstream: MockUpstream
) -> None:
    gw, tmp = gw_log
    before = mock_upstream.stats()["streams_aborted"]
    body = {"model": "updrip", "max_tokens": 500, "messages": user("Long story"), "stream": True}
    with (
        httpx.Client(timeout=10) as http,
        http.stream("POST", gw.url + "/v1/messages", json=body) as resp,
    ):
        request_id = resp.headers["x-request-id"]
        lines = resp.iter_lines()
        assert next(line for line in lines if line.startswith("event:")) == "event: message_start"
    # ~2 s of stream were left: the gateway drops the upstream now, and records the client's exit.
    deadline = time.monotonic() + 3
    while mock_upstream.stats()["streams_aborted"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mock_upstream.stats()["streams_aborted"] > before
    assert record_of(tmp / "log.db", request_id)["status"] == 499
