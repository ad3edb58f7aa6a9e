"""The mock upstream speaks each provider's wire format and obeys its fault controls."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from llm_proxy import mocktext
from llm_proxy.testing import start_mock_upstream as start_in_process

from tests.support.servers import MockUpstream, start_mock_upstream, stop_process

pytestmark = pytest.mark.timeout(60)

MESSAGES: list[Any] = [{"role": "user", "content": "Tell me something nice."}]
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ANTHROPIC_HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockUpstream]:
    server = start_mock_upstream()
    yield server
    stop_process(server.proc)


@pytest.fixture
def oai(upstream: MockUpstream) -> openai.OpenAI:
    return openai.OpenAI(base_url=upstream.url + "/v1", api_key="sk-test", max_retries=0)


@pytest.fixture
def claude(upstream: MockUpstream) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=upstream.url, api_key="ant-test", max_retries=0)


def _wait_for(predicate: Any, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


# -- mocktext ------------------------------------------------------------------------------


def test_reply_text_is_deterministic_and_capped() -> None:
    text = mocktext.reply_text(b"seed")
    assert text == mocktext.reply_text(b"seed")
    assert 20 <= len(text.split()) <= 60
    assert mocktext.reply_text(b"seed", 5) == " ".join(text.split()[:5])
    assert mocktext.reply_text(b"seed", 1000) == text


@pytest.mark.parametrize("n", [1, 3, 8, 40, 1000])
def test_split_chunks_concatenates_back_to_the_text(n: int) -> None:
    text = mocktext.reply_text(b"chunks")
    pieces = mocktext.split_chunks(text, n)
    assert "".join(pieces) == text
    assert all(pieces)
    assert len(pieces) == min(n, len(text))
    assert mocktext.split_chunks("", 4) == []


def test_embedding_is_a_deterministic_unit_vector() -> None:
    vector = mocktext.embedding(b"x", 16)
    assert vector == mocktext.embedding(b"x", 16)
    assert len(vector) == 16
    assert abs(sum(v * v for v in vector) - 1.0) < 1e-4


# -- OpenAI --------------------------------------------------------------------------------


def test_chat_whole_is_deterministic_and_echoes_the_model(oai: openai.OpenAI) -> None:
    first = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    again = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, user="other")
    assert first.id.startswith("chatcmpl-mock-")
    assert first.model == "gpt-4o-mini"
    assert first.choices[0].message.content
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].finish_reason == "stop"
    assert first.usage is not None and first.usage.total_tokens > first.usage.prompt_tokens > 0


def test_chat_max_tokens_caps_the_answer_with_length(oai: openai.OpenAI) -> None:
    answer = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=3)
    assert len((answer.choices[0].message.content or "").split()) == 3
    assert answer.choices[0].finish_reason == "length"


def test_chat_stream_matches_whole_and_ends_with_usage(oai: openai.OpenAI) -> None:
    whole = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert len(chunks) == 1 + 8 + 1 + 1


def test_chat_tool_call_whole_and_streamed_agree(oai: openai.OpenAI) -> None:
    msgs: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    whole = oai.chat.completions.create(model="m", messages=msgs, tools=[WEATHER_TOOL])
    assert whole.choices[0].finish_reason == "tool_calls"
    call = whole.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    args, finish = "", None
    for chunk in oai.chat.completions.create(
        model="m",
        messages=msgs,
        tools=[WEATHER_TOOL],
        stream=True,
    ):
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or []:
                args += (tc.function.arguments or "") if tc.function else ""
            finish = choice.finish_reason or finish
    assert args == call.function.arguments  # type: ignore[union-attr]
    assert finish == "tool_calls"


def test_legacy_completions_whole_and_streamed(oai: openai.OpenAI) -> None:
    whole = oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once upon")
    assert whole.object == "text_completion" and whole.choices[0].text
    streamed = "".join(
        c.choices[0].text
        for c in oai.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Once upon", stream=True
        )
        if c.choices
    )
    assert streamed == whole.choices[0].text


def test_embeddings_float_and_base64(oai: openai.OpenAI, upstream: MockUpstream) -> None:
    # The SDK asks for base64 and decodes it; the raw float form must agree.
    sdk = oai.embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
    assert [d.index for d in sdk.data] == [0, 1] and len(sdk.data[0].embedding) == 8
    assert sdk.usage.prompt_tokens == 3
    raw = httpx.post(
        upstream.url + "/v1/embeddings",
        json={"model": "text-embedding-3-small", "input": "a b", "dimensions": 4},
    ).json()
    assert len(raw["data"][0]["embedding"]) == 4
    floats = httpx.post(
        upstream.url + "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "a b"}
    ).json()
    assert floats["data"][0]["embedding"] == pytest.approx(sdk.data[0].embedding, abs=1e-6)


def test_models_list_and_retrieve(oai: openai.OpenAI) -> None:
    ids = {m.id for m in oai.models.list()}
    assert "gpt-4o-mini" in ids
    assert oai.models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("nope")


def test_azure_deployment_path_needs_api_key(upstream: MockUpstream) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=upstream.url, api_key="az-key", api_version="2024-10-21", max_retries=0
    )
    answer = client.chat.completions.create(model="my-deployment", messages=MESSAGES)
    assert answer.model == "my-deployment" and answer.choices[0].message.content
    last = httpx.get(upstream.url + "/_mock/last").json()
    assert last["path"] == "/openai/deployments/my-deployment/chat/completions"
    assert "api-version=2024-10-21" in last["query"]
    assert last["headers"]["api-key"] == "az-key"
    resp = httpx.post(
        upstream.url + "/openai/deployments/d/chat/completions?api-version=2024-10-21",
        json={"messages": MESSAGES},
    )
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "401"


def test_last_request_shows_forwarded_fields_and_headers(
    oai: openai.OpenAI, upstream: MockUpstream
) -> None:
    oai.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_body={"vendor_knob": {"x": [1, 2]}}
    )
    last = httpx.get(upstream.url + "/_mock/last").json()
    assert last["method"] == "POST" and last["path"] == "/v1/chat/completions"
    assert last["headers"]["authorization"] == "Bearer sk-test"
    assert last["body"]["vendor_knob"] == {"x": [1, 2]}
    assert last["body"]["messages"] == MESSAGES


# -- Anthropic -----------------------------------------------------------------------------


def test_anthropic_whole_and_stream_agree(claude: anthropic.Anthropic) -> None:
    kwargs: dict[str, Any] = {
        "model": "claude-mock-1",
        "max_tokens": 1024,
        "system": "Be brief.",
        "messages": MESSAGES,
    }
    whole = claude.messages.create(**kwargs)
    assert whole.id.startswith("msg_mock") and whole.model == "claude-mock-1"
    assert whole.stop_reason == "end_turn" and whole.usage.output_tokens > 0
    text = whole.content[0].text
    with claude.messages.stream(**kwargs) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert final.content[0].text == text  # type: ignore[union-attr]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_anthropic_max_tokens_and_stop_sequence(claude: anthropic.Anthropic) -> None:
    capped = claude.messages.create(model="c", max_tokens=2, messages=MESSAGES)
    assert capped.stop_reason == "max_tokens"
    assert len(capped.content[0].text.split()) == 2  # type: ignore[union-attr]
    full = claude.messages.create(model="c", max_tokens=500, messages=MESSAGES)
    word = full.content[0].text.split()[3]  # type: ignore[union-attr]
    stopped = claude.messages.create(
        model="c", max_tokens=500, messages=MESSAGES, stop_sequences=[word]
    )
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == word


def test_anthropic_tool_use_whole_and_streamed(claude: anthropic.Anthropic) -> None:
    tools: list[Any] = [
        {
            "name": "get_weather",
            "description": "w",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    msgs: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    whole = claude.messages.create(model="c", max_tokens=100, messages=msgs, tools=tools)
    assert whole.stop_reason == "tool_use"
    block = whole.content[0]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.input == {"city": "Paris"}
    with claude.messages.stream(model="c", max_tokens=100, messages=msgs, tools=tools) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[0].input == {"city": "Paris"}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("headers", "body", "status", "kind"),
    [
        ({"anthropic-version": "2023-06-01"}, {}, 401, "authentication_error"),
        ({"x-api-key": "k"}, {}, 400, "invalid_request_error"),
        (ANTHROPIC_HEADERS, {"model": "c", "messages": MESSAGES}, 400, "invalid_request_error"),
        (
            ANTHROPIC_HEADERS,
            {"model": "c", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
            400,
            "invalid_request_error",
        ),
        (ANTHROPIC_HEADERS, {"model": "c", "max_tokens": 5, "messages": []}, 400, None),
    ],
    ids=["no-key", "no-version", "no-max-tokens", "system-role", "no-messages"],
)
def test_anthropic_rejects_bad_requests_in_its_error_shape(
    upstream: MockUpstream,
    headers: dict[str, str],
    body: dict[str, Any],
    status: int,
    kind: str | None,
) -> None:
    resp = httpx.post(upstream.url + "/v1/messages", json=body, headers=headers)
    assert resp.status_code == status
    payload = resp.json()
    assert payload["type"] == "error" and payload["error"]["message"]
    assert payload["error"]["type"] == (kind or "invalid_request_error")


# -- fault controls ------------------------------------------------------------------------


def test_status_429_has_openai_error_and_rate_limit_headers(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as err:
        oai.chat.completions.create(
            model="m", messages=MESSAGES, extra_headers={"x-mock-status": "429"}
        )
    assert err.value.code == "rate_limit_exceeded"
    assert err.value.response.headers["retry-after"] == "1"
    assert err.value.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_status_529_is_anthropic_overloaded(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.APIStatusError) as err:
        claude.messages.create(
            model="c", max_tokens=5, messages=MESSAGES, extra_headers={"x-mock-status": "529"}
        )
    assert err.value.status_code == 529
    assert err.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


def test_delay_holds_the_answer(upstream: MockUpstream) -> None:
    started = time.perf_counter()
    resp = httpx.post(
        upstream.url + "/v1/chat/completions",
        json={"model": "m", "messages": MESSAGES},
        headers={"x-mock-delay-ms": "300"},
    )
    assert resp.status_code == 200
    assert time.perf_counter() - started >= 0.3


def test_hang_is_counted_while_its_connection_is_open(upstream: MockUpstream) -> None:
    with pytest.raises(httpx.ReadTimeout), httpx.Client(timeout=0.5) as http:
        http.post(
            upstream.url + "/v1/chat/completions",
            json={"model": "m", "messages": MESSAGES},
            headers={"x-mock-hang": "1"},
        )
    # The client has closed its connection: the hang is no longer open.
    assert _wait_for(lambda: httpx.get(upstream.url + "/_mock/stats").json()["hangs_open"] == 0)


def test_hang_shows_in_stats(upstream: MockUpstream) -> None:
    with socket.create_connection(("127.0.0.1", upstream.port)) as sock:
        body = json.dumps({"model": "m", "messages": MESSAGES}).encode()
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-mock-hang: 1\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        assert _wait_for(lambda: httpx.get(upstream.url + "/_mock/stats").json()["hangs_open"] == 1)
    assert _wait_for(lambda: httpx.get(upstream.url + "/_mock/stats").json()["hangs_open"] == 0)


def test_disconnect_after_cuts_the_stream_without_done(upstream: MockUpstream) -> None:
    events: list[str] = []
    with pytest.raises(httpx.HTTPError), httpx.Client(timeout=5) as http:
        body = {"model": "m", "messages": MESSAGES, "stream": True}
        headers = {"x-mock-disconnect-after": "3"}
        with http.stream(
            "POST", upstream.url + "/v1/chat/completions", json=body, headers=headers
        ) as resp:
            events.extend(line for line in resp.iter_lines() if line.startswith("data:"))
    assert len(events) == 3
    assert "data: [DONE]" not in events


def test_malformed_whole_and_streamed(upstream: MockUpstream) -> None:
    url = upstream.url + "/v1/chat/completions"
    bad = {"x-mock-malformed": "1"}
    whole = httpx.post(url, json={"model": "m", "messages": MESSAGES}, headers=bad)
    assert whole.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        whole.json()
    stream = httpx.post(url, json={"model": "m", "messages": MESSAGES, "stream": True}, headers=bad)
    assert "data: {not json\n\n" in stream.text


def test_chunks_and_chunk_delay_shape_the_stream(upstream: MockUpstream) -> None:
    started = time.perf_counter()
    resp = httpx.post(
        upstream.url + "/v1/chat/completions",
        json={"model": "m", "messages": MESSAGES, "stream": True},
        headers={"x-mock-chunks": "20", "x-mock-chunk-delay-ms": "10"},
    )
    events = [line for line in resp.text.split("\n") if line.startswith("data:")]
    assert len(events) == 1 + 20 + 1 + 1
    assert time.perf_counter() - started >= 0.2


def test_client_leaving_mid_stream_counts_as_aborted(upstream: MockUpstream) -> None:
    httpx.post(upstream.url + "/_mock/reset")
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    headers = {"x-mock-chunks": "40", "x-mock-chunk-delay-ms": "50"}
    with (
        httpx.Client(timeout=5) as http,
        http.stream(
            "POST", upstream.url + "/v1/chat/completions", json=body, headers=headers
        ) as resp,
    ):
        lines = resp.iter_lines()  # kept: dropping the iterator would close the response
        assert next(line for line in lines if line.startswith("data:"))
        assert httpx.get(upstream.url + "/_mock/stats").json()["active_streams"] == 1
    assert _wait_for(
        lambda: httpx.get(upstream.url + "/_mock/stats").json()["streams_aborted"] == 1
    )
    stats = httpx.get(upstream.url + "/_mock/stats").json()
    assert stats["active_streams"] == 0 and stats["streams_completed"] == 0
    assert stats["requests"] == 1


# -- HTTP/1.1 ------------------------------------------------------------------------------


def _read_responses(sock: socket.socket, count: int) -> list[bytes]:
    data, bodies = b"", list[bytes]()
    while len(bodies) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        while b"\r\n\r\n" in data:
            head, rest = data.split(b"\r\n\r\n", 1)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(rest) < length:
                break
            bodies.append(rest[:length])
            data = rest[length:]
    return bodies


def test_pipelined_requests_are_answered_in_order_then_close(upstream: MockUpstream) -> None:
    requests = b"".join(
        b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n%s\r\n%s"
        % (len(body), b"connection: close\r\n" if i == 2 else b"", body)
        for i, body in enumerate(
            json.dumps({"model": "e", "input": f"text {i}"}).encode() for i in range(3)
        )
    )
    slow = b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-mock-delay-ms: 100\r\n\r\n"
    with socket.create_connection(("127.0.0.1", upstream.port), timeout=5) as sock:
        sock.sendall(slow + requests)
        bodies = _read_responses(sock, 4)
        assert sock.recv(100) == b""  # closed after the `connection: close` request
    assert json.loads(bodies[0])["object"] == "list"
    expected = [mocktext.embedding(f"text {i}e".encode()) for i in range(3)]
    assert [json.loads(b)["data"][0]["embedding"] for b in bodies[1:]] == expected


def test_server_wide_delay_from_the_command_line() -> None:
    server = start_mock_upstream("--delay-ms", "200")
    try:
        started = time.perf_counter()
        assert httpx.get(server.url + "/v1/models").status_code == 200
        assert time.perf_counter() - started >= 0.2
    finally:
        stop_process(server.proc)
    assert server.proc.returncode == 0


def test_in_process_server_counts_requests() -> None:
    async def scenario() -> None:
        mock = await start_in_process(delay_ms=0)
        try:
            async with httpx.AsyncClient(base_url=mock.url) as http:
                resp = await http.post(
                    "/v1/chat/completions", json={"model": "m", "messages": MESSAGES}
                )
                assert resp.status_code == 200
            assert mock.stats.requests == 1
        finally:
            await mock.close()

    asyncio.run(scenario())
