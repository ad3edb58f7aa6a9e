"""OpenAI's Responses API on the gateway, through the official `openai` SDK.

`resp-a` and `resp-b` are deployments on two separate mock upstreams that serve the
Responses API themselves (`responses_api: true`: passthrough, each keeping its own
responses); `gpt-4o-mini` (an OpenAI-compatible upstream without it) and `mock-1` (in
process) are answered by stateless translation to chat completions.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.redis import delete_prefix, key_prefix, redis_url
from tests.support.servers import (
    Gateway,
    MockUpstream,
    free_port,
    standard_config,
    start_gateway,
    start_mock_upstream,
    stop_process,
)

WEATHER_TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def second_upstream() -> Iterator[MockUpstream]:
    upstream = start_mock_upstream()
    yield upstream
    stop_process(upstream.proc)


def responses_config(first: MockUpstream, second: MockUpstream) -> dict[str, Any]:
    config = standard_config(first)
    for name, upstream in (("resp-a", first), ("resp-b", second)):
        config["providers"][name] = {
            "kind": "openai",
            "base_url": upstream.url + "/v1",
            "api_key": "sk-up-SECRET",
            "responses_api": True,
        }
        config["models"][name] = {"provider": name, "model": "gpt-4.1"}
    return config


@pytest.fixture(scope="module")
def gw(
    mock_upstream: MockUpstream,
    second_upstream: MockUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    config = responses_config(mock_upstream, second_upstream)
    tmp: Path = tmp_path_factory.mktemp("responses")
    gateway = start_gateway(config, tmp)
    yield gateway
    gateway.stop()


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="sk-client", max_retries=0, timeout=20)


@pytest.mark.parametrize("model", ["mock-1", "gpt-4o-mini", "resp-a"])
def test_whole_response(gw: Gateway, model: str) -> None:
    response = client(gw).responses.create(
        model=model, instructions="Be brief.", input="Say hello", max_output_tokens=64
    )
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status in ("completed", "incomplete")
    assert response.output_text
    assert response.usage is not None
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0


@pytest.mark.parametrize("model", ["mock-1", "gpt-4o-mini", "resp-a"])
def test_streamed_response_events(gw: Gateway, model: str) -> None:
    events = list(
        client(gw).responses.create(
            model=model, input=[{"role": "user", "content": "Tell a story"}], stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert [e.sequence_number for e in events] == sorted(e.sequence_number for e in events)
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = events[-1]
    assert done.type == "response.completed"
    assert done.response.output_text == text
    assert done.response.usage is not None and done.response.usage.output_tokens > 0


def test_stream_helper_accumulates_the_final_response(gw: Gateway) -> None:
    with client(gw).responses.stream(model="gpt-4o-mini", input="Hello") as stream:
        final = stream.get_final_response()
    assert final.output_text and final.status == "completed"


def test_function_call_and_its_output_through_a_translated_deployment(
    gw: Gateway, mock_upstream: MockUpstream
) -> None:
    c = client(gw)
    first = c.responses.create(
        model="gpt-4o-mini", input="What is the weather in Paris?", tools=[WEATHER_TOOL]
    )
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.arguments == '{"city":"Paris"}'
    streamed = list(
        c.responses.create(
            model="gpt-4o-mini",
            input="What is the weather in Paris?",
            tools=[WEATHER_TOOL],
            stream=True,
        )
    )
    assert "response.function_call_arguments.delta" in [e.type for e in streamed]
    assert streamed[-1].type == "response.completed"
    assert streamed[-1].response.output[-1].arguments == '{"city":"Paris"}'  # type: ignore[union-attr]

    # Stateless: the client sends the history back, with the call's output.
    c.responses.create(
        model="gpt-4o-mini",
        tools=[WEATHER_TOOL],
        input=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": "get_weather",
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"},
        ],
    )
    body = mock_upstream.last()["body"]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "tool"]
    assert body["messages"][1]["tool_calls"][0]["id"] == call.call_id
    assert body["messages"][2] == {"role": "tool", "tool_call_id": call.call_id, "content": "Sunny"}


def test_passthrough_forwards_the_clients_body_but_the_model_name(
    gw: Gateway, mock_upstream: MockUpstream
) -> None:
    client(gw).responses.create(
        model="resp-a",
        input="Hello",
        extra_body={"some_new_field": [1, 2]},
        store=True,
        reasoning={"effort": "low"},
    )
    sent = mock_upstream.last()
    assert sent["path"] == "/v1/responses"
    assert sent["body"] == {
        "model": "gpt-4.1",
        "input": "Hello",
        "store": True,
        "reasoning": {"effort": "low"},
        "some_new_field": [1, 2],
    }


@pytest.mark.parametrize("stream", [False, True])
def test_follow_up_goes_to_the_deployment_holding_the_earlier_response(
    gw: Gateway, second_upstream: MockUpstream, stream: bool
) -> None:
    c = client(gw)
    if stream:
        events = list(c.responses.create(model="resp-b", input="First", stream=True))
        first_id = events[0].response.id  # type: ignore[union-attr]
    else:
        first_id = c.responses.create(model="resp-b", input="First").id
    # The client names resp-a; only resp-b's upstream knows the earlier response.
    follow_up = c.responses.create(model="resp-a", input="Second", previous_response_id=first_id)
    assert follow_up.previous_response_id == first_id  # type: ignore[attr-defined]
    assert second_upstream.last()["body"]["previous_response_id"] == first_id


def test_unknown_previous_response_is_the_upstreams_404(gw: Gateway) -> None:
    with pytest.raises(openai.NotFoundError):
        client(gw).responses.create(model="resp-a", input="x", previous_response_id="resp_none")


def test_follow_up_on_a_stateless_deployment_is_a_clear_400(gw: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(gw).responses.create(
            model="gpt-4o-mini", input="x", previous_response_id="resp_earlier"
        )
    assert caught.value.status_code == 400
    assert "responses_api: true" in caught.value.message
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"{oops", 400, "could not parse"),
        (b'{"input":"x"}', 400, "model"),
        (b'{"model":"gpt-4o-mini"}', 400, "input"),
        (b'{"model":"gpt-4o-mini","input":"x","tools":[{"type":"web_search"}]}', 400, "tools[0]"),
        (b'{"model":"nope","input":"x"}', 404, "nope"),
    ],
)
def test_bad_requests_get_openai_errors(gw: Gateway, body: bytes, status: int, words: str) -> None:
    r = httpx.post(gw.base_url + "/responses", content=body)
    assert r.status_code == status
    assert words in r.json()["error"]["message"]


def test_stored_response_is_retrieved_and_deleted_at_its_deployment(
    gw: Gateway, second_upstream: MockUpstream
) -> None:
    c = client(gw)
    created = c.responses.create(model="resp-b", input="Keep me")
    fetched = c.responses.retrieve(created.id)
    assert fetched.id == created.id and fetched.output_text == created.output_text
    sent = second_upstream.last()
    assert (sent["method"], sent["path"]) == ("GET", f"/v1/responses/{created.id}")
    deleted = c.responses.delete(created.id)  # type: ignore[func-returns-value]
    assert deleted is None  # the SDK returns nothing for a 200
    assert second_upstream.last()["method"] == "DELETE"
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(created.id)  # forgotten by the gateway once deleted


def test_unknown_stored_response_is_a_404(gw: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(gw).responses.retrieve("resp_never_seen")
    assert "not found" in caught.value.message
    r = httpx.post(gw.base_url + "/responses/resp_x")
    assert r.status_code == 405 and r.headers["allow"] == "GET, DELETE"


# -- the shared table: several gateway processes, one Redis ------------------------------------


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from redis_url(tmp_path_factory.mktemp("redis"))


@pytest.mark.parametrize("stream", [False, True])
def test_follow_up_on_another_gateway_reaches_the_holder_through_redis(
    shared_redis: str,
    mock_upstream: MockUpstream,
    second_upstream: MockUpstream,
    tmp_path: Path,
    stream: bool,
) -> None:
    import redis

    prefix = key_prefix()
    config = responses_config(mock_upstream, second_upstream)
    config["responses"] = {"redis_url": shared_redis, "key_prefix": prefix, "ttl_s": 600}
    one = start_gateway(config, tmp_path)
    two = start_gateway(config, tmp_path)
    try:
        if stream:
            events = list(client(one).responses.create(model="resp-b", input="One", stream=True))
            first_id = events[0].response.id  # type: ignore[union-attr]
        else:
            first_id = client(one).responses.create(model="resp-b", input="One").id
        # The other gateway never saw the first response; only resp-b's upstream holds it.
        follow_up = client(two).responses.create(
            model="resp-a", input="Two", previous_response_id=first_id
        )
        assert follow_up.previous_response_id == first_id  # type: ignore[attr-defined]
        assert second_upstream.last()["body"]["previous_response_id"] == first_id

        fetched = client(two).responses.retrieve(first_id)
        assert fetched.id == first_id
        assert second_upstream.last()["path"] == f"/v1/responses/{first_id}"

        r = redis.Redis.from_url(shared_redis, decode_responses=True)
        try:
            assert r.get(prefix + first_id) == "resp-b"
            assert 0 < r.pttl(prefix + first_id) <= 600_000
            client(two).responses.delete(first_id)
            assert r.get(prefix + first_id) is None
        finally:
            r.close()
        with pytest.raises(openai.NotFoundError) as caught:
            client(one).responses.retrieve(first_id)  # the holder's upstream forgot it too
        assert caught.value.status_code == 404
    finally:
        one.stop()
        two.stop()
        delete_prefix(shared_redis, prefix)


def test_follow_ups_still_work_in_process_while_redis_is_down(
    mock_upstream: MockUpstream, second_upstream: MockUpstream, tmp_path: Path
) -> None:
    config = responses_config(mock_upstream, second_upstream)
    config["responses"] = {"redis_url": f"redis://127.0.0.1:{free_port()}/0", "timeout_s": 0.2}
    gateway = start_gateway(config, tmp_path)
    try:
        c = client(gateway)
        first_id = c.responses.create(model="resp-b", input="One").id
        follow_up = c.responses.create(model="resp-a", input="Two", previous_response_id=first_id)
        assert follow_up.previous_response_id == first_id  # type: ignore[attr-defined]
        assert second_upstream.last()["body"]["previous_response_id"] == first_id
    finally:
        gateway.stop()
    log = next(tmp_path.glob("gateway-*.log")).read_text()
    assert log.count("response owners in redis") == 1  # logged once per interval, not per call
