"""The gRPC front door, through real channels to a gateway subprocess (`--grpc-port`)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_requests import Client
from hypothesis import given, settings
from hypothesis import strategies as st
from llm_proxy.grpc.gen import gateway_pb2 as pb
from llm_proxy.grpc.gen import gateway_pb2_grpc as pb_grpc

from tests.support.servers import (
    Gateway,
    MockUpstream,
    add_mock_model,
    standard_config,
    start_gateway,
)

SERVICE = "llm_proxy.v1.Gateway"


def grpc_config(upstream: MockUpstream) -> dict[str, Any]:
    config = standard_config(upstream)
    for status in (401, 403):
        config["providers"][f"up{status}"] = {
            "kind": "openai",
            "base_url": upstream.url + "/v1",
            "headers": {"x-mock-status": str(status)},
        }
        config["models"][f"up{status}"] = {"provider": f"up{status}", "model": "gpt-4o-mini"}
    return config


@pytest.fixture(scope="module")
def gw(mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_gateway(grpc_config(mock_upstream), tmp_path_factory.mktemp("grpc"), grpc=True)
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def channel(gw: Gateway) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{gw.grpc_port}") as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.GatewayStub:
    return pb_grpc.GatewayStub(channel)


def user(text: str) -> pb.ChatMessage:
    return pb.ChatMessage(role="user", content=text)


def chat(model: str = "gpt-4o-mini", text: str = "Tell me about gateways", **kw: Any) -> Any:
    return pb.ChatCompletionRequest(model=model, messages=[user(text)], **kw)


def stream_req(model: str = "gpt-4o-mini", text: str = "Tell me about gateways", **kw: Any) -> Any:
    return pb.StreamChatCompletionRequest(model=model, messages=[user(text)], **kw)


def http_post(gw: Gateway, path: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = httpx.post(gw.base_url + path, json=body, timeout=10)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def http_stream(gw: Gateway, body: dict[str, Any]) -> tuple[str, list[str]]:
    """The text and finish reasons of a streamed HTTP answer."""
    parts, finish = [], []
    with httpx.stream("POST", gw.base_url + "/chat/completions", json=body, timeout=10) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for choice in json.loads(line[6:]).get("choices", []):
                    parts.append(choice.get("delta", {}).get("content") or "")
                    if choice.get("finish_reason"):
                        finish.append(choice["finish_reason"])
    return "".join(parts), finish


def rpc_error(fn: Any, *args: Any, **kw: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        result = fn(*args, **kw)
        if isinstance(result, grpc.Call):  # a stream: read it to the end
            list(result)
    return info.value


# -- answers -------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude", "mock-1", "azure-gpt"])
def test_chat_completion_answers_what_http_answers(
    gw: Gateway, stub: pb_grpc.GatewayStub, model: str
) -> None:
    reply = stub.ChatCompletion(chat(model, max_tokens=12, temperature=0.5), timeout=10)
    http = http_post(
        gw,
        "/chat/completions",
        {
            "model": model,
            "messages": [{"role": "user", "content": "Tell me about gateways"}],
            "max_tokens": 12,
            "temperature": 0.5,
        },
    )
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == http["choices"][0]["message"]["content"]
    assert reply.choices[0].finish_reason == http["choices"][0]["finish_reason"]
    assert reply.usage.prompt_tokens == http["usage"]["prompt_tokens"]
    assert reply.usage.completion_tokens == http["usage"]["completion_tokens"]
    assert reply.model == http["model"]
    assert reply.cache_status == "off"
    assert len(reply.request_id) == 32


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude", "mock-1"])
def test_stream_reassembles_exactly_the_http_stream_text(
    gw: Gateway, stub: pb_grpc.GatewayStub, model: str
) -> None:
    messages = list(stub.StreamChatCompletion(stream_req(model, max_tokens=30), timeout=10))
    text = "".join(c.delta.content for m in messages for c in m.choices)
    http_text, http_finish = http_stream(
        gw,
        {
            "model": model,
            "messages": [{"role": "user", "content": "Tell me about gateways"}],
            "max_tokens": 30,
            "stream": True,
        },
    )
    assert text and text == http_text
    assert messages[0].request_id and messages[0].cache_status == "off"
    assert all(not m.request_id for m in messages[1:])
    finish = [c.finish_reason for m in messages for c in m.choices if c.HasField("finish_reason")]
    assert finish == http_finish and len(finish) == 1
    assert messages[-1].HasField("usage") and messages[-1].usage.completion_tokens > 0
    assert not any(m.HasField("usage") for m in messages[:-1])


WEATHER_TOOL = pb.Tool(
    function=pb.FunctionDefinition(
        name="get_weather",
        description="Weather in a city",
        parameters='{"type":"object","properties":{"city":{"type":"string"}}}',
    )
)


def test_tool_calls_come_back_typed_whole_and_streamed(
    stub: pb_grpc.GatewayStub, mock_upstream: MockUpstream
) -> None:
    text = "What is the weather in Paris?"
    reply = stub.ChatCompletion(chat(text=text, tools=[WEATHER_TOOL]), timeout=10)
    sent = mock_upstream.last()["body"]
    assert sent["tools"][0]["function"]["parameters"]["properties"]["city"] == {"type": "string"}
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)

    pieces = [
        t
        for m in stub.StreamChatCompletion(stream_req(text=text, tools=[WEATHER_TOOL]), timeout=10)
        for c in m.choices
        for t in c.delta.tool_calls
    ]
    assert pieces[0].id == call.id and pieces[0].function_name == "get_weather"
    assert "".join(p.arguments for p in pieces) == call.function.arguments


def test_completion_answers_what_http_answers(gw: Gateway, stub: pb_grpc.GatewayStub) -> None:
    reply = stub.Completion(
        pb.CompletionRequest(model="gpt-4o-mini", prompt=["Once upon"], max_tokens=8), timeout=10
    )
    http = http_post(
        gw, "/completions", {"model": "gpt-4o-mini", "prompt": "Once upon", "max_tokens": 8}
    )
    assert reply.choices[0].text == http["choices"][0]["text"]
    assert reply.usage.total_tokens == http["usage"]["total_tokens"]


@pytest.mark.parametrize("model", ["text-embedding-3-small", "mock-1"])
def test_embed_returns_one_vector_per_input_as_http_does(
    gw: Gateway, stub: pb_grpc.GatewayStub, model: str
) -> None:
    reply = stub.Embed(pb.EmbedRequest(model=model, input=["alpha", "beta gamma"]), timeout=10)
    http = http_post(gw, "/embeddings", {"model": model, "input": ["alpha", "beta gamma"]})
    assert [e.index for e in reply.data] == [0, 1]
    for ours, theirs in zip(reply.data, http["data"], strict=True):
        assert list(ours.embedding) == pytest.approx(theirs["embedding"], rel=1e-6)
    assert reply.usage.prompt_tokens == http["usage"]["prompt_tokens"]


def test_list_models_names_every_configured_model(gw: Gateway, stub: pb_grpc.GatewayStub) -> None:
    reply = stub.ListModels(pb.ListModelsRequest(), timeout=10)
    http = httpx.get(gw.base_url + "/models", timeout=10).json()
    assert [(m.id, m.owned_by) for m in reply.models] == [
        (m["id"], m["owned_by"]) for m in http["data"]
    ]


def test_extra_json_reaches_the_upstream_and_typed_fields_win(
    stub: pb_grpc.GatewayStub, mock_upstream: MockUpstream
) -> None:
    extra = {"user": "svc-42", "logit_bias": {"50256": -100}, "max_tokens": 999, "stream": True}
    stub.ChatCompletion(chat(max_tokens=7, extra_json=json.dumps(extra)), timeout=10)
    body = mock_upstream.last()["body"]
    assert body["user"] == "svc-42" and body["logit_bias"] == {"50256": -100}
    assert body["max_tokens"] == 7
    assert "stream" not in body
    assert body["messages"] == [{"role": "user", "content": "Tell me about gateways"}]


def test_stream_asks_the_upstream_for_usage(
    stub: pb_grpc.GatewayStub, mock_upstream: MockUpstream
) -> None:
    list(stub.StreamChatCompletion(stream_req(max_tokens=5), timeout=10))
    body = mock_upstream.last()["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_typed_message_fields_become_openai_fields(
    stub: pb_grpc.GatewayStub, mock_upstream: MockUpstream
) -> None:
    request = pb.ChatCompletionRequest(
        model="gpt-4o-mini",
        messages=[
            pb.ChatMessage(role="system", content="Be brief."),
            pb.ChatMessage(
                role="user",
                name="ana",
                content_parts=[
                    pb.ContentPart(text="What is this?"),
                    pb.ContentPart(image_url=pb.ImageUrl(url="https://x/y.png", detail="low")),
                ],
            ),
            pb.ChatMessage(
                role="assistant",
                tool_calls=[
                    pb.ToolCall(id="call_1", function=pb.FunctionCall(name="look", arguments="{}"))
                ],
            ),
            pb.ChatMessage(role="tool", tool_call_id="call_1", content="a cat"),
        ],
        stop=["\n\n"],
        seed=7,
        n=1,
        top_p=0.9,
        tools=[WEATHER_TOOL],
        tool_choice=pb.ToolChoice(function_name="get_weather"),
        response_format=pb.ResponseFormat(
            type="json_schema", json_schema='{"name":"x","schema":{"type":"object"}}'
        ),
    )
    stub.ChatCompletion(request, timeout=10)
    body = mock_upstream.last()["body"]
    assert body["messages"][1] == {
        "role": "user",
        "name": "ana",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
        ],
    }
    assert body["messages"][2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{}"}}
        ],
    }
    assert body["messages"][3] == {"role": "tool", "content": "a cat", "tool_call_id": "call_1"}
    assert (body["stop"], body["seed"], body["n"], body["top_p"]) == (["\n\n"], 7, 1, 0.9)
    assert "temperature" not in body
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "object"}},
    }


# -- metadata ------------------------------------------------------------------------------


def test_request_id_is_echoed_in_initial_metadata(stub: pb_grpc.GatewayStub) -> None:
    reply, call = stub.ChatCompletion.with_call(
        chat(), metadata=[("x-request-id", "req-grpc-1")], timeout=10
    )
    initial = dict(call.initial_metadata())
    assert initial["x-request-id"] == "req-grpc-1" == reply.request_id
    assert initial["x-llm-proxy-cache"] == "off"

    stream = stub.StreamChatCompletion(stream_req(), metadata=[("x-request-id", "req-grpc-2")])
    assert dict(stream.initial_metadata())["x-request-id"] == "req-grpc-2"
    assert next(stream).request_id == "req-grpc-2"
    stream.cancel()


def test_request_id_is_generated_when_absent(stub: pb_grpc.GatewayStub) -> None:
    _, call = stub.ChatCompletion.with_call(chat(), timeout=10)
    request_id = dict(call.initial_metadata())["x-request-id"]
    assert len(request_id) == 32 and int(request_id, 16) >= 0


# -- status codes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "code", "named"),
    [
        (chat("no-such-model"), grpc.StatusCode.NOT_FOUND, "no-such-model"),
        (chat(""), grpc.StatusCode.INVALID_ARGUMENT, "model"),
        (
            pb.ChatCompletionRequest(model="gpt-4o-mini"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "messages",
        ),
        (chat(extra_json="[1, 2]"), grpc.StatusCode.INVALID_ARGUMENT, "extra_json"),
        (chat(extra_json="{nope"), grpc.StatusCode.INVALID_ARGUMENT, "extra_json"),
        (
            chat(tools=[pb.Tool(function=pb.FunctionDefinition(name="f", parameters="{x"))]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "tools[0].function.parameters",
        ),
        (
            chat(response_format=pb.ResponseFormat(type="json_schema", json_schema="nope")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "response_format.json_schema",
        ),
        (chat(text="x" * 70000), grpc.StatusCode.INVALID_ARGUMENT, "larger than"),
        (chat("up400"), grpc.StatusCode.INVALID_ARGUMENT, ""),
        (chat("up401"), grpc.StatusCode.UNAUTHENTICATED, ""),
        (chat("up403"), grpc.StatusCode.PERMISSION_DENIED, ""),
        (chat("up500"), grpc.StatusCode.UNAVAILABLE, "500"),
        (chat("gone"), grpc.StatusCode.UNAVAILABLE, "unreachable"),
        (chat("upslow"), grpc.StatusCode.DEADLINE_EXCEEDED, "timed out"),
    ],
)
def test_gateway_errors_map_to_status_codes(
    stub: pb_grpc.GatewayStub, request_: Any, code: grpc.StatusCode, named: str
) -> None:
    error = rpc_error(stub.ChatCompletion, request_, timeout=10)
    assert error.code() == code
    assert named in error.details()
    assert "Traceback" not in error.details()
    trailers = dict(error.trailing_metadata())
    assert len(trailers["x-request-id"]) == 32


def test_rate_limit_is_resource_exhausted_with_retry_delay(stub: pb_grpc.GatewayStub) -> None:
    for fn, request in (
        (stub.ChatCompletion, chat("up429")),
        (stub.StreamChatCompletion, stream_req("up429")),
        (stub.ChatCompletion, chat("claude429")),
    ):
        error = rpc_error(fn, request, timeout=10)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = dict(error.trailing_metadata())
        assert "retry-after" in trailers or "retry-after-ms" in trailers
        assert trailers["x-llm-proxy-error-type"] == "rate_limit_error"


def test_stream_errors_before_the_first_chunk_are_status_codes(
    stub: pb_grpc.GatewayStub,
) -> None:
    assert rpc_error(stub.StreamChatCompletion, stream_req("nope")).code() == (
        grpc.StatusCode.NOT_FOUND
    )
    assert rpc_error(stub.StreamChatCompletion, stream_req("gone")).code() == (
        grpc.StatusCode.UNAVAILABLE
    )


def test_stream_broken_midway_ends_unavailable(stub: pb_grpc.GatewayStub) -> None:
    # Whether the chunks before the break arrive first depends on timing upstream; the status
    # must not.
    for model in ("upbroken", "upgarbage"):
        with pytest.raises(grpc.RpcError) as info:
            list(stub.StreamChatCompletion(stream_req(model), timeout=10))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "upstream" in info.value.details()


# -- deadlines and cancellation ------------------------------------------------------------


def test_client_deadline_bounds_the_upstream_call(stub: pb_grpc.GatewayStub) -> None:
    started = time.monotonic()
    error = rpc_error(stub.ChatCompletion, chat("upslow"), timeout=0.25)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.0
    stream_error = rpc_error(stub.StreamChatCompletion, stream_req("upslow"), timeout=0.25)
    assert stream_error.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_cancelled_stream_cancels_the_upstream_request(
    stub: pb_grpc.GatewayStub, mock_upstream: MockUpstream
) -> None:
    aborted = mock_upstream.stats()["streams_aborted"]
    stream = stub.StreamChatCompletion(stream_req("updrip"))
    first = next(stream)
    assert first.request_id
    stream.cancel()
    assert wait_for(lambda: mock_upstream.stats()["streams_aborted"] > aborted)


def test_stream_deadline_mid_stream_cancels_the_upstream_request(
    stub: pb_grpc.GatewayStub, mock_upstream: MockUpstream
) -> None:
    aborted = mock_upstream.stats()["streams_aborted"]
    received = []
    with pytest.raises(grpc.RpcError) as info:
        for message in stub.StreamChatCompletion(stream_req("updrip"), timeout=0.5):
            received.append(message)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert received
    assert wait_for(lambda: mock_upstream.stats()["streams_aborted"] > aborted)


# -- shared pipeline -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cached_gw(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    config = grpc_config(mock_upstream)
    config["cache"] = {"enabled": True, "backend": "memory", "ttl_s": 300}
    gateway = start_gateway(config, tmp_path_factory.mktemp("grpc-cache"), grpc=True)
    yield gateway
    gateway.stop()


def test_http_and_grpc_share_one_cache(cached_gw: Gateway, mock_upstream: MockUpstream) -> None:
    text = f"cache me {time.time_ns()}"
    http = http_post(
        cached_gw,
        "/chat/completions",
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "seed": 3},
    )
    before = mock_upstream.stats()["requests"]
    with grpc.insecure_channel(f"127.0.0.1:{cached_gw.grpc_port}") as channel:
        stub = pb_grpc.GatewayStub(channel)
        reply, call = stub.ChatCompletion.with_call(chat(text=text, seed=3), timeout=10)
    assert reply.cache_status == "hit" == dict(call.initial_metadata())["x-llm-proxy-cache"]
    assert reply.choices[0].message.content == http["choices"][0]["message"]["content"]
    assert mock_upstream.stats()["requests"] == before


# -- standard services ---------------------------------------------------------------------


def test_health_service_answers_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_only_client_lists_the_service_and_calls_it(gw: Gateway) -> None:
    client = Client.get_by_endpoint(f"127.0.0.1:{gw.grpc_port}")
    assert SERVICE in client.service_names
    models = client.request(SERVICE, "ListModels", {})
    assert "gpt-4o-mini" in [m["id"] for m in models["models"]]
    reply = client.request(
        SERVICE,
        "ChatCompletion",
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert reply["choices"][0]["message"]["content"]


def test_stubs_are_generated_from_the_current_proto() -> None:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, str(root / "scripts" / "gen_grpc.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


# -- the Rust core's server under pressure -------------------------------------------------


@pytest.fixture(scope="module")
def long_gw(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    config = grpc_config(mock_upstream)
    # One chunk per character of the answer: a few hundred messages.
    add_mock_model(config, mock_upstream, "uplong", {"x-mock-chunks": "2000"})
    gateway = start_gateway(config, tmp_path_factory.mktemp("grpc-long"), grpc=True)
    yield gateway
    gateway.stop()


def stream_text(messages: list[Any]) -> str:
    return "".join(c.delta.content for m in messages for c in m.choices)


def test_a_slow_reader_gets_a_long_stream_whole_and_in_order(long_gw: Gateway) -> None:
    # A tiny HTTP/2 window that does not grow: the answer outruns what the client takes, so
    # the server must wait on flow control (and the loop on the server) without losing or
    # reordering a message.
    options = [("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]
    prompt = "Tell me a long story"
    with grpc.insecure_channel(f"127.0.0.1:{long_gw.grpc_port}", options=options) as channel:
        stream = pb_grpc.GatewayStub(channel).StreamChatCompletion(
            stream_req("uplong", text=prompt), timeout=30
        )
        messages = [next(stream)]
        time.sleep(1.0)
        for message in stream:
            messages.append(message)
            if len(messages) % 50 == 0:
                time.sleep(0.05)
    http_text, http_finish = http_stream(
        long_gw,
        {"model": "uplong", "messages": [{"role": "user", "content": prompt}], "stream": True},
    )
    assert len(messages) > 100
    assert stream_text(messages) == http_text
    assert [c.finish_reason for m in messages for c in m.choices if c.finish_reason] == http_finish
    assert messages[-1].HasField("usage")


def test_many_concurrent_streams_on_one_connection_each_get_their_own_answer(
    long_gw: Gateway,
) -> None:
    import asyncio

    prompts = [f"question number {i}" for i in range(20)]
    target = f"127.0.0.1:{long_gw.grpc_port}"
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GatewayStub(channel)
        expected = {
            p: stream_text(list(stub.StreamChatCompletion(stream_req(text=p), timeout=10)))
            for p in prompts
        }

    async def run() -> list[tuple[str, str, str]]:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.GatewayStub(channel)

            async def one(i: int) -> tuple[str, str, str]:
                prompt, request_id = prompts[i % len(prompts)], f"many-{i}"
                metadata = [("x-request-id", request_id)]
                if i % 3 == 0:
                    reply = await stub.ChatCompletion(
                        chat(text=prompt), metadata=metadata, timeout=20
                    )
                    return prompt, reply.request_id, "unary"
                call = stub.StreamChatCompletion(
                    stream_req(text=prompt), metadata=metadata, timeout=20
                )
                messages = [m async for m in call]
                assert messages[0].request_id == request_id
                return prompt, request_id, stream_text(messages)

            return await asyncio.gather(*(one(i) for i in range(300)))

    results = asyncio.run(run())
    assert len({request_id for _, request_id, _ in results}) == 300
    for prompt, _, text in results:
        assert text == "unary" or text == expected[prompt]


def test_a_client_resetting_streams_mid_answer_leaves_the_others_whole(
    stub: pb_grpc.GatewayStub, mock_upstream: MockUpstream
) -> None:
    aborted = mock_upstream.stats()["streams_aborted"]
    streams = [stub.StreamChatCompletion(stream_req("updrip", text=f"s{i}")) for i in range(8)]
    for stream in streams:
        assert next(stream).request_id
    for stream in streams[::2]:
        stream.cancel()
    for stream in streams[1::2]:
        rest = list(stream)
        assert rest and rest[-1].HasField("usage")
        assert stream.code() == grpc.StatusCode.OK
    for stream in streams[::2]:
        assert stream.code() == grpc.StatusCode.CANCELLED
    assert wait_for(lambda: mock_upstream.stats()["streams_aborted"] >= aborted + 4)


def test_a_deadline_shorter_than_the_upstream_releases_the_upstream(
    gw: Gateway, mock_upstream: MockUpstream
) -> None:
    config = grpc_config(mock_upstream)
    assert config["models"]["uphang"]  # the upstream answers nothing for 30 s
    with grpc.insecure_channel(f"127.0.0.1:{gw.grpc_port}") as channel:
        stub = pb_grpc.GatewayStub(channel)
        hanging = mock_upstream.stats()["hangs_open"]
        for fn, request in (
            (stub.ChatCompletion, chat("uphang")),
            (stub.StreamChatCompletion, stream_req("uphang")),
        ):
            started = time.monotonic()
            error = rpc_error(fn, request, timeout=0.3)
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - started < 1.0
            assert wait_for(lambda: mock_upstream.stats()["hangs_open"] <= hanging, timeout=3)
        # The door is still serving.
        assert stub.ChatCompletion(chat(), timeout=5).choices


def test_a_message_over_the_size_limit_is_resource_exhausted(stub: pb_grpc.GatewayStub) -> None:
    # max_body_bytes is 65536: the limit on the message is twice that plus 64 KiB.
    error = rpc_error(stub.ChatCompletion, chat(text="x" * 250_000), timeout=10)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than the limit" in error.details()


def test_an_undecodable_message_is_invalid_argument(channel: grpc.Channel) -> None:
    call = channel.unary_unary(f"/{SERVICE}/ChatCompletion")
    with pytest.raises(grpc.RpcError) as info:
        call(b"\xff\xff\xff", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid llm_proxy.v1.ChatCompletionRequest" in info.value.details()


def test_an_unknown_method_is_unimplemented(channel: grpc.Channel) -> None:
    for path in (f"/{SERVICE}/Nope", "/no.such.Service/Call"):
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(path)(b"", timeout=10)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_reflection_v1_and_v1alpha_describe_the_service(channel: grpc.Channel) -> None:
    from grpc_reflection.v1alpha import reflection_pb2

    for version in ("v1", "v1alpha"):
        # v1 and v1alpha share their messages; only the service's name differs.
        info = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
        ]
        listed, described = list(info(iter(requests), timeout=10))
        names = [s.name for s in listed.list_services_response.service]
        assert SERVICE in names and "grpc.health.v1.Health" in names
        assert described.file_descriptor_response.file_descriptor_proto


def test_a_reflection_client_streams_a_chat(gw: Gateway) -> None:
    client = Client.get_by_endpoint(f"127.0.0.1:{gw.grpc_port}")
    messages = list(
        client.request(
            SERVICE,
            "StreamChatCompletion",
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        )
    )
    assert len(messages[0]["request_id"]) == 32
    assert "".join(c["delta"].get("content", "") for m in messages for c in m.get("choices", []))


def test_sigterm_drains_calls_in_flight_and_reports_not_serving(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    import signal
    import threading

    gateway = start_gateway(grpc_config(mock_upstream), tmp_path, grpc=True)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=30)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            stream = pb_grpc.GatewayStub(channel).StreamChatCompletion(
                stream_req("updrip"), timeout=30
            )
            messages = [next(stream)]
            statuses: list[int] = []

            def follow() -> None:
                with contextlib.suppress(grpc.RpcError):  # cancelled at the end
                    statuses.extend(m.status for m in watch)

            threading.Thread(target=follow, daemon=True).start()
            gateway.proc.send_signal(signal.SIGTERM)
            messages.extend(stream)  # the answer in flight is finished
            assert stream.code() == grpc.StatusCode.OK
            assert messages[-1].HasField("usage")
            assert wait_for(lambda: health_pb2.HealthCheckResponse.NOT_SERVING in statuses)
            watch.cancel()
        assert gateway.proc.wait(timeout=30) == 0
    finally:
        gateway.stop()


# -- the Rust translation of the chat hot path matches the Python one ----------------------

_texts = st.text(max_size=40)
_int32 = st.integers(-(2**31), 2**31 - 1)
_floats = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def plain_chat_requests(draw: st.DrawFn) -> Any:
    messages = [
        pb.ChatMessage(
            role=draw(st.sampled_from(["system", "user", "assistant", "tool", "x\u00e9"])),
            content=draw(st.none() | _texts),
            name=draw(st.none() | _texts),
            tool_call_id=draw(st.none() | _texts),
            refusal=draw(st.none() | _texts),
        )
        for _ in range(draw(st.integers(0, 3)))
    ]
    return pb.ChatCompletionRequest(
        model=draw(st.text(min_size=1, max_size=20)),
        messages=messages,
        temperature=draw(st.none() | _floats),
        top_p=draw(st.none() | _floats),
        max_tokens=draw(st.none() | _int32),
        stop=draw(st.lists(_texts, max_size=3)),
        seed=draw(st.none() | st.integers(-(2**63), 2**63 - 1)),
        n=draw(st.none() | _int32),
    )


@given(plain_chat_requests(), st.booleans())
@settings(max_examples=300, deadline=None)
def test_rust_chat_body_is_the_python_body(request: Any, stream: bool) -> None:
    from llm_proxy._core import grpc_chat_body
    from llm_proxy.grpc import bodies

    fast = grpc_chat_body(request.SerializeToString(), stream)
    assert fast is not None
    assert json.loads(fast) == json.loads(bodies.chat_body(request, stream=stream))


def test_rust_chat_body_leaves_other_shapes_to_python() -> None:
    from llm_proxy._core import grpc_chat_body

    for request in (
        chat(""),
        chat(extra_json="{}"),
        chat(tools=[WEATHER_TOOL]),
        chat(tool_choice=pb.ToolChoice(mode="auto")),
        chat(response_format=pb.ResponseFormat(type="json_object")),
        pb.ChatCompletionRequest(model="m", messages=[pb.ChatMessage(content="no role")]),
        pb.ChatCompletionRequest(
            model="m", messages=[pb.ChatMessage(role="user", content_parts=[pb.ContentPart()])]
        ),
    ):
        assert grpc_chat_body(request.SerializeToString(), False) is None
    assert grpc_chat_body(b"\xff\xff", False) is None


_json_answers = st.fixed_dictionaries(
    {"id": _texts, "model": _texts, "created": _int32},
    optional={
        "choices": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "index": st.integers(0, 8),
                    "finish_reason": st.none() | _texts,
                    "message": st.none()
                    | st.fixed_dictionaries(
                        {},
                        optional={
                            "role": st.none() | _texts,
                            "content": st.none() | _texts,
                            "refusal": st.none() | _texts,
                            "tool_calls": st.none()
                            | st.lists(
                                st.fixed_dictionaries(
                                    {},
                                    optional={
                                        "id": st.none() | _texts,
                                        "type": st.none() | _texts,
                                        "function": st.none()
                                        | st.fixed_dictionaries(
                                            {},
                                            optional={
                                                "name": st.none() | _texts,
                                                "arguments": st.none() | _texts,
                                            },
                                        ),
                                    },
                                ),
                                max_size=2,
                            ),
                        },
                    ),
                },
            ),
            max_size=3,
        ),
        "usage": st.none()
        | st.fixed_dictionaries(
            {"prompt_tokens": _int32, "completion_tokens": _int32, "total_tokens": _int32}
        ),
        "system_fingerprint": st.none() | _texts,
        "object": st.just("chat.completion"),
    },
)


@given(_json_answers)
@settings(max_examples=300, deadline=None)
def test_rust_chat_response_is_the_python_response(answer: dict[str, Any]) -> None:
    from types import SimpleNamespace

    from llm_proxy._core import grpc_chat_response
    from llm_proxy.grpc import replies

    body = json.dumps(answer).encode()
    fast = grpc_chat_response(body, "r" * 32, "miss")
    assert fast is not None
    call: Any = SimpleNamespace(request_id="r" * 32, cache_status="miss")
    assert pb.ChatCompletionResponse.FromString(fast) == replies.chat_response(body, call)


def test_rust_chat_response_leaves_unexpected_answers_to_python() -> None:
    from llm_proxy._core import grpc_chat_response

    for body in (
        b"not json",
        b"[]",
        b'{"id": null}',
        b'{"choices": [{"message": {"content": ["part"]}}]}',
        b'{"usage": {"prompt_tokens": 99999999999}}',
    ):
        assert grpc_chat_response(body, "r", "off") is None


def test_authorization_metadata_reaches_the_pipeline(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    # With the cache scoped per key, only the caller's own key can hit its entries.
    config = grpc_config(mock_upstream)
    config["cache"] = {"enabled": True, "backend": "memory", "ttl_s": 300, "scope": "key"}
    gateway = start_gateway(config, tmp_path, grpc=True)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = pb_grpc.GatewayStub(channel)
            request = chat(text=f"keyed {time.time_ns()}", seed=1)

            def cache_status(key: str) -> str:
                reply = stub.ChatCompletion(
                    request, metadata=[("authorization", f"Bearer {key}")], timeout=10
                )
                return str(reply.cache_status)

            assert cache_status("sk-alice") == "miss"
            assert cache_status("sk-bob") == "miss"
            assert cache_status("sk-alice") == "hit"
            assert cache_status("sk-bob") == "hit"
    finally:
        gateway.stop()


_json_chunks = st.fixed_dictionaries(
    {"id": _texts, "model": _texts, "created": _int32},
    optional={
        "choices": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "index": st.integers(0, 8),
                    "finish_reason": st.none() | _texts,
                    "delta": st.none()
                    | st.fixed_dictionaries(
                        {},
                        optional={
                            "role": st.none() | _texts,
                            "content": st.none() | _texts,
                            "refusal": st.none() | _texts,
                            "tool_calls": st.none()
                            | st.lists(
                                st.fixed_dictionaries(
                                    {"index": st.integers(0, 4)},
                                    optional={
                                        "id": st.none() | _texts,
                                        "type": st.none() | _texts,
                                        "function": st.none()
                                        | st.fixed_dictionaries(
                                            {},
                                            optional={
                                                "name": st.none() | _texts,
                                                "arguments": st.none() | _texts,
                                            },
                                        ),
                                    },
                                ),
                                max_size=2,
                            ),
                        },
                    ),
                },
            ),
            max_size=2,
        ),
        "usage": st.none()
        | st.fixed_dictionaries(
            {"prompt_tokens": _int32, "completion_tokens": _int32, "total_tokens": _int32}
        ),
        "system_fingerprint": st.none() | _texts,
    },
)


@given(st.lists(_json_chunks, min_size=1, max_size=3), st.booleans())
@settings(max_examples=300, deadline=None)
def test_rust_stream_chunks_are_the_python_messages(chunks: list[Any], done: bool) -> None:
    from types import SimpleNamespace

    from llm_proxy._core import grpc_chat_chunks
    from llm_proxy.grpc import replies

    events = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    events += b"data: [DONE]\n\n" if done else b""
    fast = grpc_chat_chunks(events, True, "r" * 32, "hit")
    assert fast is not None
    call: Any = SimpleNamespace(request_id="r" * 32, cache_status="hit")
    expected = replies.ChunkRenderer(call).render(events)
    assert [pb.StreamChatCompletionResponse.FromString(m) for m in fast] == expected


def test_rust_stream_chunks_leave_errors_and_other_shapes_to_python() -> None:
    from llm_proxy._core import grpc_chat_chunks

    for events in (
        b'data: {"error": {"message": "overloaded"}}\n\n',
        b": keep-alive\n\n",
        b'event: message\ndata: {"id": "x"}\n\n',
        b'data: {"id": "x"}\r\n\r\n',
        b"data: [1]\n\n",
    ):
        assert grpc_chat_chunks(events, True, "r", "off") is None


def test_a_gzip_compressed_request_is_answered(gw: Gateway) -> None:
    target = f"127.0.0.1:{gw.grpc_port}"
    with grpc.insecure_channel(target, compression=grpc.Compression.Gzip) as channel:
        stub = pb_grpc.GatewayStub(channel)
        reply = stub.ChatCompletion(chat(text="squeeze " * 200), timeout=10)
        assert reply.choices[0].message.content
        messages = list(stub.StreamChatCompletion(stream_req(text="squeeze " * 200), timeout=10))
        assert messages[-1].HasField("usage")


def test_json_nested_thousands_deep_is_invalid_argument(stub: pb_grpc.GatewayStub) -> None:
    deep = "{" + '"a":[' * 3000 + "1" + "]" * 3000 + "}"
    error = rpc_error(stub.ChatCompletion, chat(extra_json=deep), timeout=10)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Traceback" not in error.details()


def test_a_model_name_holding_nul_is_answered_not_found(stub: pb_grpc.GatewayStub) -> None:
    error = rpc_error(stub.ChatCompletion, chat("gpt\u0000x"), timeout=10)
    assert error.code() == grpc.StatusCode.NOT_FOUND
