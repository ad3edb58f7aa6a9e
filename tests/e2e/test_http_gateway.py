"""The HTTP front door through the official openai SDK, against the mock upstream."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.support.servers import Gateway, MockUpstream

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say something about gateways."},
]


@pytest.fixture()
def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0)


def test_chat_completion_returns_the_upstream_answer(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    again = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert first.choices[0].message.content
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.usage is not None and first.usage.total_tokens > 0


def test_every_response_carries_request_id_and_overhead(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-request-id": "req-abc-123"}
    )
    assert raw.headers["x-request-id"] == "req-abc-123"
    assert float(raw.headers["x-llm-proxy-overhead-ms"]) >= 0
    fresh = client.chat.completions.with_raw_response.create(model="mock-1", messages=MESSAGES)
    assert len(fresh.headers["x-request-id"]) >= 16


def test_async_client_chat(gateway: Gateway) -> None:
    async def go() -> list[str | None]:
        client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="k", max_retries=0)
        answers = await asyncio.gather(
            *(client.chat.completions.create(model="mock-1", messages=MESSAGES) for _ in range(8))
        )
        await client.close()
        return [a.choices[0].message.content for a in answers]

    texts = asyncio.run(go())
    assert len(set(texts)) == 1 and texts[0]


@pytest.mark.parametrize("model", ["gpt-4o-mini", "mock-1", "claude", "azure-gpt"])
def test_stream_reassembles_exactly_the_whole_answer(client: openai.OpenAI, model: str) -> None:
    whole = client.chat.completions.create(model=model, messages=MESSAGES)
    stream = client.chat.completions.create(
        model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    parts, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                parts.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert "".join(parts) == whole.choices[0].message.content
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


def test_stream_response_headers(gateway: Gateway) -> None:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", gateway.base_url + "/chat/completions", json=body) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["cache-control"] == "no-cache"
        assert resp.headers["x-accel-buffering"] == "no"
        text = resp.read().decode()
    assert text.rstrip().endswith("data: [DONE]")


def test_legacy_completions_and_embeddings(client: openai.OpenAI) -> None:
    done = client.completions.create(model="gpt-4o-mini", prompt="Once upon a time")
    assert done.choices[0].text
    emb = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0
    mock = client.embeddings.create(model="mock-1", input="hello")
    assert mock.usage.prompt_tokens == 1


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"gpt-4o-mini", "claude", "mock-1", "fast"} <= ids
    assert client.models.retrieve("claude").owned_by == "claude"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_unknown_fields_are_forwarded_and_alias_rewrites_model(
    client: openai.OpenAI, mock_upstream: MockUpstream
) -> None:
    client.chat.completions.create(
        model="fast",
        messages=MESSAGES,
        seed=7,
        response_format={"type": "json_object"},
        extra_body={"vendor_knob": {"x": [1, 2]}},
    )
    last = mock_upstream.last()
    assert last["path"] == "/v1/chat/completions"
    assert last["body"]["model"] == "gpt-4o-mini-2024-07-18"
    assert last["body"]["seed"] == 7
    assert last["body"]["response_format"] == {"type": "json_object"}
    assert last["body"]["vendor_knob"] == {"x": [1, 2]}
    assert last["headers"]["authorization"] == "Bearer sk-up-SECRET"


def test_client_bytes_forwarded_untouched_without_alias(
    gateway: Gateway, mock_upstream: MockUpstream
) -> None:
    raw = b'{"model":"gpt-4o-mini",  "messages":[{"role":"user","content":"hi"}], "z_extra":1.50}'
    resp = httpx.post(
        gateway.base_url + "/chat/completions",
        content=raw,
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 200
    assert mock_upstream.last()["body"] == {
        "model": "gpt-4o-mini",
        "z_extra": 1.5,
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_azure_url_shape_and_api_key_header(
    client: openai.OpenAI, mock_upstream: MockUpstream
) -> None:
    client.chat.completions.create(model="azure-gpt", messages=MESSAGES)
    last = mock_upstream.last()
    assert last["path"] == "/openai/deployments/my-deployment/chat/completions"
    assert "api-version=2024-10-21" in last["query"]
    assert last["headers"]["api-key"] == "az-SECRET"
    assert "authorization" not in last["headers"]


def test_anthropic_translation_whole(client: openai.OpenAI, mock_upstream: MockUpstream) -> None:
    answer = client.chat.completions.create(model="claude", messages=MESSAGES, stop=["END"])
    assert answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == "claude"
    last = mock_upstream.last()
    assert last["path"] == "/v1/messages"
    assert last["headers"]["x-api-key"] == "ant-SECRET"
    assert last["body"]["system"] in (
        "You are terse.",
        [{"type": "text", "text": "You are terse."}],
    )
    assert last["body"]["max_tokens"] == 4096
    assert last["body"]["stop_sequences"] == ["END"]
    assert last["body"]["model"] == "claude-sonnet-4-5"


def test_anthropic_tool_calls_translate(client: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "w",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    whole = client.chat.completions.create(model="claude", messages=msgs, tools=tools)
    assert whole.choices[0].finish_reason == "tool_calls"
    call = whole.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    args = ""
    for chunk in client.chat.completions.create(
        model="claude", messages=msgs, tools=tools, stream=True
    ):
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or []:
                args += tc.function.arguments or ""
    assert args == call.function.arguments


# -- errors ------------------------------------------------------------------------------


def test_unknown_model_is_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert err.value.code == "model_not_found"
    assert "no-such-model" in err.value.message


def test_missing_messages_is_400_naming_the_param(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=None)  # type: ignore[arg-type]
    assert err.value.param == "messages"


def test_upstream_429_passes_through_with_rate_limit_headers(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="up429", messages=MESSAGES)
    assert err.value.status_code == 429
    assert err.value.response.headers.get("retry-after")


def test_upstream_400_passes_through(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="up400", messages=MESSAGES)


def test_anthropic_errors_become_openai_error_objects(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="claude429", messages=MESSAGES)
    assert isinstance(err.value.body, dict) and err.value.body.get("message")


def test_upstream_5xx_is_502_naming_the_status(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="up500", messages=MESSAGES)
    assert err.value.status_code == 502
    assert "500" in err.value.message


def test_unreachable_upstream_is_502(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="gone", messages=MESSAGES)
    assert err.value.status_code == 502
    assert "unreachable" in err.value.message


def test_upstream_timeout_is_504(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="upslow", messages=MESSAGES)
    assert err.value.status_code == 504


def test_upstream_garbage_is_502(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="upgarbage", messages=MESSAGES)
    assert err.value.status_code == 502


@pytest.mark.parametrize("model", ["upbroken", "upgarbage"])
def test_stream_failing_midway_ends_with_an_error_event(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.APIError) as err:
        for _ in client.chat.completions.create(model=model, messages=MESSAGES, stream=True):
            pass
    assert "upstream" in str(err.value.message)


def test_stream_failing_before_its_first_event_is_an_http_error(gateway: Gateway) -> None:
    """No event reached the client yet: the failure is the response's status, as for a whole
    answer (the SDK raises at `create`), not a 200 with an error event."""
    client = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="upcut", messages=MESSAGES, stream=True)
    assert err.value.status_code == 502
    assert "upstream" in err.value.message
    assert err.value.response.headers["x-request-id"]
    body = err.value.response.json()
    assert body["error"]["type"] and "Traceback" not in err.value.response.text


def test_stream_failing_after_its_first_event_ends_with_an_error_event(
    client: openai.OpenAI,
) -> None:
    stream = client.chat.completions.create(model="upbroken", messages=MESSAGES, stream=True)
    assert stream.response.status_code == 200
    got = []
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            got.append(chunk)
    assert got, "the events before the failure reach the client"
    assert "upstream" in str(err.value.message)


BAD_INPUTS = [
    ("truncated json", b'{"model": "gpt-4o-mini", "messages": [', "application/json", 400),
    ("not an object", b"[1, 2]", "application/json", 400),
    ("model wrong type", b'{"model": 5, "messages": []}', "application/json", 400),
    ("messages wrong type", b'{"model": "gpt-4o-mini", "messages": "hi"}', "application/json", 400),
    ("empty messages", b'{"model": "gpt-4o-mini", "messages": []}', "application/json", 400),
    ("invalid utf-8", b'{"model": "gpt-4o-mini\xff", "messages": []}', "application/json", 400),
    ("empty body", b"", "application/json", 400),
    ("wrong content type", b"model=x", "application/x-www-form-urlencoded", 415),
    (
        "huge body",
        b'{"model": "gpt-4o-mini", "messages": [], "pad": "' + b"x" * 70000 + b'"}',
        "application/json",
        413,
    ),
]


@pytest.mark.parametrize(
    ("name", "body", "ctype", "status"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_input_gets_its_4xx_error_object(
    gateway: Gateway, name: str, body: bytes, ctype: str, status: int
) -> None:
    resp = httpx.post(
        gateway.base_url + "/chat/completions", content=body, headers={"content-type": ctype}
    )
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["message"] and error["type"]
    assert "Traceback" not in resp.text
    ok = httpx.post(
        gateway.base_url + "/chat/completions", json={"model": "mock-1", "messages": MESSAGES}
    )
    assert ok.status_code == 200


def test_wrong_method_is_405(gateway: Gateway) -> None:
    resp = httpx.get(gateway.base_url + "/chat/completions")
    assert resp.status_code == 405
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert resp.headers["allow"] == "POST"


def test_health_and_ready(gateway: Gateway) -> None:
    assert httpx.get(gateway.url + "/health").json() == {"status": "ok"}
    assert httpx.get(gateway.url + "/ready").status_code == 200


def test_secrets_never_in_error_messages(client: openai.OpenAI) -> None:
    for model in ("up500", "gone", "claude429"):
        with pytest.raises(openai.APIError) as err:
            client.chat.completions.create(model=model, messages=MESSAGES)
        text = str(err.value.body) + str(err.value.message)
        assert "SECRET" not in text
