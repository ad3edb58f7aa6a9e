"""The response cache through real clients: hits, keys, controls, streams, scopes, Redis."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.support.redis import (
    PrivateRedis,
    count_prefix,
    delete_prefix,
    key_prefix,
    redis_url,
)
from tests.support.servers import (
    Gateway,
    MockUpstream,
    add_mock_model,
    standard_config,
    start_gateway,
)

MODEL = "gpt-4o-mini"  # served by the mock upstream, so its request counter sees misses


def cache_config(upstream: MockUpstream, **cache: Any) -> dict[str, Any]:
    config = standard_config(upstream)
    config["cache"] = {"enabled": True, "backend": "memory", "ttl_s": 300, **cache}
    # A slow but successful upstream, for coalescing.
    add_mock_model(config, upstream, "upwait", {"x-mock-delay-ms": "400"}, timeout_s=10)
    return config


@pytest.fixture(scope="module")
def cached(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    gw = start_gateway(cache_config(mock_upstream), tmp_path_factory.mktemp("cache"))
    yield gw
    gw.stop()


@pytest.fixture()
def client(cached: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=cached.base_url, api_key="sk-client", max_retries=0)


def messages(tag: str | None = None) -> list[ChatCompletionMessageParam]:
    return [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": f"Tell me about caches, variant {tag or uuid.uuid4().hex}."},
    ]


def upstream_requests(upstream: MockUpstream) -> int:
    return int(upstream.stats()["requests"])


def post(
    gw: Gateway, body: bytes | dict[str, Any], path: str = "/chat/completions", **headers: str
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        gw.base_url + path,
        content=content,
        headers={"content-type": "application/json", **headers},
        timeout=10,
    )


def stream_events(
    gw: Gateway, body: dict[str, Any], **headers: str
) -> tuple[list[str], httpx.Headers]:
    """The `data:` payloads of a streamed request, in order, and the response headers."""
    with httpx.stream(
        "POST",
        gw.base_url + "/chat/completions",
        json={**body, "stream": True},
        headers=headers,
        timeout=10,
    ) as resp:
        assert resp.status_code == 200, resp.read()
        events = [line[5:].strip() for line in resp.iter_lines() if line.startswith("data:")]
        return events, resp.headers


def stream_text(events: list[str]) -> str:
    parts = []
    for e in events:
        if e == "[DONE]":
            continue
        for choice in json.loads(e).get("choices", []):
            parts.append((choice.get("delta") or {}).get("content") or "")
    return "".join(parts)


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


# -- hits and keys ------------------------------------------------------------------------


def test_repeat_request_is_a_hit_and_never_reaches_the_upstream(
    client: openai.OpenAI, mock_upstream: MockUpstream
) -> None:
    msgs = messages()
    before = upstream_requests(mock_upstream)
    first = client.chat.completions.with_raw_response.create(model=MODEL, messages=msgs)
    assert first.headers["x-llm-proxy-cache"] == "miss"
    assert "age" not in first.headers
    second = client.chat.completions.with_raw_response.create(model=MODEL, messages=msgs)
    assert second.headers["x-llm-proxy-cache"] == "hit"
    assert int(second.headers["age"]) >= 0
    assert upstream_requests(mock_upstream) == before + 1
    a, b = first.parse(), second.parse()
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.usage == b.usage


def test_key_order_whitespace_and_number_spelling_share_one_entry(
    cached: Gateway, mock_upstream: MockUpstream
) -> None:
    tag = uuid.uuid4().hex
    first = (
        b'{"model":"gpt-4o-mini","temperature":1,"max_tokens":20,'
        b'"messages":[{"role":"user","content":"order ' + tag.encode() + b'"}]}'
    )
    second = (
        b'{ "messages" : [ { "content" : "order ' + tag.encode() + b'", "role" : "user" } ],\n'
        b'  "max_tokens": 20.0, "temperature": 1.0,   "model": "gpt-4o-mini" }'
    )
    before = upstream_requests(mock_upstream)
    assert post(cached, first).headers["x-llm-proxy-cache"] == "miss"
    resp = post(cached, second)
    assert resp.status_code == 200
    assert resp.headers["x-llm-proxy-cache"] == "hit"
    assert upstream_requests(mock_upstream) == before + 1


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.5},
        {"max_tokens": 7},
        {"seed": 42},
        {"top_p": 0.9},
        {"messages": [{"role": "user", "content": "something else entirely"}]},
        {"model": "fast"},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        {"response_format": {"type": "json_object"}},
    ],
    ids=lambda c: next(iter(c)),
)
def test_a_change_in_any_semantic_field_is_a_miss(cached: Gateway, change: dict[str, Any]) -> None:
    msgs = messages()
    base: dict[str, Any] = {"model": MODEL, "messages": msgs, "temperature": 1}
    assert post(cached, base).headers["x-llm-proxy-cache"] == "miss"
    assert post(cached, base).headers["x-llm-proxy-cache"] == "hit"
    changed = {**base, **change}
    if "messages" in change:
        changed["messages"] = [*msgs, *change["messages"]]
    assert post(cached, changed).headers["x-llm-proxy-cache"] == "miss"


def test_user_metadata_and_stream_do_not_split_entries(
    cached: Gateway, mock_upstream: MockUpstream
) -> None:
    base = {"model": MODEL, "messages": messages(), "user": "alice"}
    before = upstream_requests(mock_upstream)
    assert post(cached, base).headers["x-llm-proxy-cache"] == "miss"
    assert post(cached, {**base, "user": "bob"}).headers["x-llm-proxy-cache"] == "hit"
    _, headers = stream_events(cached, {**base, "user": "carol"})
    assert headers["x-llm-proxy-cache"] == "hit"
    assert upstream_requests(mock_upstream) == before + 1


def test_completions_and_embeddings_are_cached(
    client: openai.OpenAI, mock_upstream: MockUpstream
) -> None:
    prompt = f"Once upon a time {uuid.uuid4().hex}"
    before = upstream_requests(mock_upstream)
    a = client.completions.with_raw_response.create(model=MODEL, prompt=prompt)
    b = client.completions.with_raw_response.create(model=MODEL, prompt=prompt)
    assert (a.headers["x-llm-proxy-cache"], b.headers["x-llm-proxy-cache"]) == ("miss", "hit")
    assert a.parse().choices[0].text == b.parse().choices[0].text
    words = [prompt, "second"]
    c = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=words)
    d = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=words)
    assert (c.headers["x-llm-proxy-cache"], d.headers["x-llm-proxy-cache"]) == ("miss", "hit")
    assert c.parse().data[1].embedding == d.parse().data[1].embedding
    assert upstream_requests(mock_upstream) == before + 2


def test_errors_are_never_stored(cached: Gateway, mock_upstream: MockUpstream) -> None:
    body = {"model": "up500", "messages": messages()}
    before = upstream_requests(mock_upstream)
    assert post(cached, body).status_code == 502
    second = post(cached, body)
    assert second.status_code == 502
    assert second.headers.get("x-llm-proxy-cache") != "hit"
    assert upstream_requests(mock_upstream) == before + 2


def test_truncated_stream_is_never_stored(cached: Gateway, mock_upstream: MockUpstream) -> None:
    body = {"model": "upbroken", "messages": messages(), "stream": True}
    before = upstream_requests(mock_upstream)
    for _ in range(2):
        with httpx.stream("POST", cached.base_url + "/chat/completions", json=body) as resp:
            assert resp.headers["x-llm-proxy-cache"] == "miss"
            text = resp.read().decode()
        assert '"error"' in text
    assert upstream_requests(mock_upstream) == before + 2


def test_cache_is_off_unless_configured(gateway: Gateway) -> None:
    resp = post(gateway, {"model": MODEL, "messages": messages()})
    assert resp.status_code == 200
    assert "x-llm-proxy-cache" not in resp.headers


def test_concurrent_identical_misses_reach_the_upstream_once(
    cached: Gateway, mock_upstream: MockUpstream
) -> None:
    msgs = messages()

    async def go() -> list[str | None]:
        client = openai.AsyncOpenAI(base_url=cached.base_url, api_key="k", max_retries=0)
        answers = await asyncio.gather(
            *(client.chat.completions.create(model="upwait", messages=msgs) for _ in range(8))
        )
        await client.close()
        return [a.choices[0].message.content for a in answers]

    before = upstream_requests(mock_upstream)
    texts = asyncio.run(go())
    assert len(set(texts)) == 1 and texts[0]
    assert upstream_requests(mock_upstream) == before + 1


# -- per-request controls -----------------------------------------------------------------


def test_cache_control_no_cache_skips_the_lookup_but_stores(
    cached: Gateway, mock_upstream: MockUpstream
) -> None:
    body = {"model": MODEL, "messages": messages()}
    post(cached, body)
    before = upstream_requests(mock_upstream)
    fresh = post(cached, body, **{"cache-control": "no-cache"})
    assert fresh.headers["x-llm-proxy-cache"] == "bypass"
    assert upstream_requests(mock_upstream) == before + 1
    again = post(cached, body)
    assert again.headers["x-llm-proxy-cache"] == "hit"
    assert int(again.headers["age"]) <= 1  # the entry no-cache stored, not the first one


def test_cache_control_no_store_does_not_store(cached: Gateway) -> None:
    body = {"model": MODEL, "messages": messages()}
    assert post(cached, body, **{"cache-control": "no-store"}).headers["x-llm-proxy-cache"] == (
        "miss"
    )
    assert post(cached, body).headers["x-llm-proxy-cache"] == "miss"
    # no-store still reads: the entry the plain request stored answers it.
    assert post(cached, body, **{"cache-control": "no-store"}).headers["x-llm-proxy-cache"] == (
        "hit"
    )


def test_cache_control_max_age_accepts_only_younger_entries(cached: Gateway) -> None:
    body = {"model": MODEL, "messages": messages()}
    post(cached, body)
    time.sleep(1.1)
    old = post(cached, body, **{"cache-control": "max-age=60"})
    assert old.headers["x-llm-proxy-cache"] == "hit"
    assert int(old.headers["age"]) >= 1
    assert post(cached, body, **{"cache-control": "max-age=0"}).headers["x-llm-proxy-cache"] == (
        "miss"
    )
    # The miss stored a fresh entry.
    young = post(cached, body, **{"cache-control": "max-age=1"})
    assert young.headers["x-llm-proxy-cache"] == "hit"
    assert int(young.headers["age"]) == 0


def test_ttl_header_entry_expires(cached: Gateway, mock_upstream: MockUpstream) -> None:
    body = {"model": MODEL, "messages": messages()}
    assert post(cached, body, **{"x-llm-proxy-cache-ttl": "1"}).headers["x-llm-proxy-cache"] == (
        "miss"
    )
    assert post(cached, body).headers["x-llm-proxy-cache"] == "hit"
    time.sleep(1.2)
    before = upstream_requests(mock_upstream)
    assert post(cached, body).headers["x-llm-proxy-cache"] == "miss"
    assert upstream_requests(mock_upstream) == before + 1


def test_configured_ttl_expires_entries(mock_upstream: MockUpstream, tmp_path: Path) -> None:
    gw = start_gateway(cache_config(mock_upstream, ttl_s=1), tmp_path)
    try:
        body = {"model": MODEL, "messages": messages()}
        assert post(gw, body).headers["x-llm-proxy-cache"] == "miss"
        assert post(gw, body).headers["x-llm-proxy-cache"] == "hit"
        time.sleep(1.2)
        assert post(gw, body).headers["x-llm-proxy-cache"] == "miss"
    finally:
        gw.stop()


def test_byte_bound_evicts_least_recently_used(
    gateway: Gateway, mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    bodies = {name: {"model": MODEL, "messages": messages(f"evict-{name}")} for name in "abcd"}
    # The uncached gateway shows how big each stored answer will be (the mock is deterministic).
    sizes = {name: len(post(gateway, body).content) for name, body in bodies.items()}
    ordered = sorted(sizes.values())
    room = ordered[-1] + ordered[-2]  # any two answers fit ...
    assert room < sum(ordered[:3])  # ... and no three do
    gw = start_gateway(cache_config(mock_upstream, max_bytes=room), tmp_path)
    try:

        def status(name: str) -> str:
            return post(gw, bodies[name]).headers["x-llm-proxy-cache"]

        assert status("a") == "miss"
        assert status("b") == "miss"
        assert status("a") == "hit"  # a is now the most recently used
        assert status("c") == "miss"  # evicts b, the least recently used
        assert status("a") == "hit"
        assert status("b") == "miss"  # evicts c
        assert status("d") == "miss"  # evicts a
        assert status("d") == "hit"
        assert status("b") == "hit"
        assert status("a") == "miss"
    finally:
        gw.stop()


def test_endpoint_not_listed_is_bypassed(mock_upstream: MockUpstream, tmp_path: Path) -> None:
    gw = start_gateway(cache_config(mock_upstream, endpoints=["chat"]), tmp_path)
    try:
        body = {"model": "text-embedding-3-small", "input": "not cached"}
        for _ in range(2):
            resp = post(gw, body, "/embeddings")
            assert resp.status_code == 200
            assert resp.headers["x-llm-proxy-cache"] == "bypass"
    finally:
        gw.stop()


# -- streams ------------------------------------------------------------------------------


def test_stream_hit_replays_original_chunks(cached: Gateway, mock_upstream: MockUpstream) -> None:
    body = {"model": MODEL, "messages": messages(), "stream_options": {"include_usage": True}}
    before = upstream_requests(mock_upstream)
    original, first = stream_events(cached, body)
    replay, second = stream_events(cached, body)
    assert (first["x-llm-proxy-cache"], second["x-llm-proxy-cache"]) == ("miss", "hit")
    assert replay == original
    assert replay[-1] == "[DONE]"
    assert len(replay) > 4
    assert upstream_requests(mock_upstream) == before + 1


def test_stream_replay_includes_usage_only_when_asked(cached: Gateway) -> None:
    body = {"model": MODEL, "messages": messages()}
    asked, _ = stream_events(cached, {**body, "stream_options": {"include_usage": True}})
    plain, headers = stream_events(cached, body)
    assert headers["x-llm-proxy-cache"] == "hit"
    usage = [e for e in asked if e != "[DONE]" and json.loads(e).get("usage")]
    assert len(usage) == 1
    assert plain == [e for e in asked if e not in usage]
    again, headers = stream_events(cached, {**body, "stream_options": {"include_usage": True}})
    assert headers["x-llm-proxy-cache"] == "hit"
    assert again == asked


def test_stream_stored_without_usage_can_add_it(cached: Gateway) -> None:
    body = {"model": MODEL, "messages": messages()}
    plain, _ = stream_events(cached, body)
    asked, headers = stream_events(cached, {**body, "stream_options": {"include_usage": True}})
    assert headers["x-llm-proxy-cache"] == "hit"
    usage = json.loads(asked[-2])["usage"]
    assert usage["completion_tokens"] > 0 and usage["prompt_tokens"] > 0
    assert asked[:-2] == plain[:-1]


def test_stream_is_answered_from_a_whole_response(
    client: openai.OpenAI, mock_upstream: MockUpstream
) -> None:
    msgs = messages()
    whole = client.chat.completions.create(model=MODEL, messages=msgs)
    before = upstream_requests(mock_upstream)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=msgs, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["x-llm-proxy-cache"] == "hit"
    parts, finish, usage = [], None, None
    for chunk in raw.parse():
        usage = chunk.usage or usage
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(parts) == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage == whole.usage
    assert upstream_requests(mock_upstream) == before


def test_whole_response_is_assembled_from_a_stored_stream(
    client: openai.OpenAI, cached: Gateway, mock_upstream: MockUpstream
) -> None:
    msgs = messages()
    events, _ = stream_events(
        cached, {"model": MODEL, "messages": msgs, "stream_options": {"include_usage": True}}
    )
    before = upstream_requests(mock_upstream)
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=msgs)
    assert raw.headers["x-llm-proxy-cache"] == "hit"
    whole = raw.parse()
    assert whole.choices[0].message.content == stream_text(events)
    assert whole.choices[0].finish_reason == "stop"
    assert whole.usage is not None
    assert whole.usage.completion_tokens == json.loads(events[-2])["usage"]["completion_tokens"]
    assert upstream_requests(mock_upstream) == before


# -- scopes -------------------------------------------------------------------------------


def test_key_scope_never_shares_entries_between_keys(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    gw = start_gateway(cache_config(mock_upstream, scope="key"), tmp_path)
    try:
        alice = openai.OpenAI(base_url=gw.base_url, api_key="sk-alice", max_retries=0)
        bob = openai.OpenAI(base_url=gw.base_url, api_key="sk-bob", max_retries=0)
        msgs = messages()

        def status(client: openai.OpenAI) -> str:
            raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=msgs)
            return str(raw.headers["x-llm-proxy-cache"])

        assert status(alice) == "miss"
        assert status(bob) == "miss"
        assert status(alice) == "hit"
        assert status(bob) == "hit"
    finally:
        gw.stop()


def test_team_scope_separates_teams(mock_upstream: MockUpstream, tmp_path: Path) -> None:
    gw = start_gateway(cache_config(mock_upstream, scope="team"), tmp_path)
    try:
        body = {"model": MODEL, "messages": messages()}
        red = {"x-llm-proxy-team": "red", "authorization": "Bearer sk-1"}
        assert post(gw, body, **red).headers["x-llm-proxy-cache"] == "miss"
        same_team = {"x-llm-proxy-team": "red", "authorization": "Bearer sk-2"}
        assert post(gw, body, **same_team).headers["x-llm-proxy-cache"] == "hit"
        blue = {"x-llm-proxy-team": "blue", "authorization": "Bearer sk-1"}
        assert post(gw, body, **blue).headers["x-llm-proxy-cache"] == "miss"
    finally:
        gw.stop()


# -- Redis --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from redis_url(tmp_path_factory.mktemp("redis"))


def test_two_gateways_share_hits_through_redis(
    shared_redis: str, mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    prefix = key_prefix()
    config = cache_config(mock_upstream, backend="redis", redis_url=shared_redis, key_prefix=prefix)
    one = start_gateway(config, tmp_path)
    two = start_gateway(copy.deepcopy(config), tmp_path)
    try:
        body = {"model": MODEL, "messages": messages()}
        before = upstream_requests(mock_upstream)
        first = post(one, body)
        assert first.headers["x-llm-proxy-cache"] == "miss"
        assert wait_for(lambda: count_prefix(shared_redis, prefix) == 1)
        second = post(two, body)
        assert second.headers["x-llm-proxy-cache"] == "hit"
        assert second.json()["choices"] == first.json()["choices"]
        # Streams are shared as well.
        stream_body = {"model": MODEL, "messages": messages()}
        original, _ = stream_events(two, stream_body)
        assert wait_for(lambda: count_prefix(shared_redis, prefix) == 2)
        replay, headers = stream_events(one, stream_body)
        assert headers["x-llm-proxy-cache"] == "hit"
        assert replay == original
        assert upstream_requests(mock_upstream) == before + 2
    finally:
        one.stop()
        two.stop()
        delete_prefix(shared_redis, prefix)


def test_concurrent_redis_lookups_each_get_their_own_answer(
    shared_redis: str, mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    # Concurrent lookups share Redis round trips (one MGET); no answer may reach the wrong call.
    prefix = key_prefix()
    config = cache_config(mock_upstream, backend="redis", redis_url=shared_redis, key_prefix=prefix)
    gw = start_gateway(config, tmp_path)
    try:
        prompts = [messages(f"batch-{i}") for i in range(24)]
        primed = [
            post(gw, {"model": MODEL, "messages": m}).json()["choices"][0]["message"]["content"]
            for m in prompts
        ]
        assert len(set(primed)) == len(primed)
        assert wait_for(lambda: count_prefix(shared_redis, prefix) == len(prompts))

        async def go() -> list[tuple[int, str, str | None]]:
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as http:

                async def one(i: int) -> tuple[int, str, str | None]:
                    body = {"model": MODEL, "messages": prompts[i]}
                    resp = await http.post("/chat/completions", json=body)
                    content = resp.json()["choices"][0]["message"]["content"]
                    return i, resp.headers["x-llm-proxy-cache"], content

                order = [i for _ in range(4) for i in range(len(prompts))]
                return await asyncio.gather(*(one(i) for i in reversed(order)))

        before = upstream_requests(mock_upstream)
        for i, status, content in asyncio.run(go()):
            assert status == "hit"
            assert content == primed[i]
        assert upstream_requests(mock_upstream) == before
    finally:
        gw.stop()
        delete_prefix(shared_redis, prefix)


def test_gateway_answers_while_redis_is_down_and_recovers(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    server = PrivateRedis(tmp_path / "redis")  # ours alone: stopping it harms no one else
    server.start()
    prefix = key_prefix()
    config = cache_config(
        mock_upstream,
        backend="redis",
        redis_url=server.url,
        key_prefix=prefix,
        timeout_s=0.2,
        retry_after_s=0.2,
        log_interval_s=60,
    )
    gw = start_gateway(config, tmp_path)
    try:
        body = {"model": MODEL, "messages": messages()}
        assert post(gw, body).headers["x-llm-proxy-cache"] == "miss"
        assert wait_for(lambda: count_prefix(server.url, prefix) == 1)
        assert post(gw, body).headers["x-llm-proxy-cache"] == "hit"

        server.stop()
        before = upstream_requests(mock_upstream)
        for _ in range(10):
            resp = post(gw, body)
            assert resp.status_code == 200
            assert resp.headers["x-llm-proxy-cache"] == "miss"
            assert resp.json()["choices"][0]["message"]["content"]
        _, headers = stream_events(gw, body)
        assert headers["x-llm-proxy-cache"] == "miss"
        assert upstream_requests(mock_upstream) == before + 11
        log = next(tmp_path.glob(f"gateway-{gw.port}.log")).read_text()
        assert log.count("cache backend `redis` failing") == 1  # once per interval, not per call

        server.start()
        time.sleep(0.3)  # past retry_after_s
        assert wait_for(lambda: post(gw, body).headers["x-llm-proxy-cache"] == "hit", 5)
    finally:
        gw.stop()
        server.stop()


# -- gRPC ---------------------------------------------------------------------------------


def test_grpc_door_gets_hits_and_honours_cache_metadata(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    import grpc  # type: ignore[import-untyped]
    from llm_proxy.grpc.gen import gateway_pb2 as pb
    from llm_proxy.grpc.gen import gateway_pb2_grpc as pb_grpc

    gw = start_gateway(cache_config(mock_upstream), tmp_path, grpc=True)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gw.grpc_port}") as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=10)
            except grpc.FutureTimeoutError:
                if os.environ.get("CI", "").lower() == "true":
                    raise
                pytest.skip("the gateway did not open its gRPC port (gRPC door not wired yet?)")
            stub = pb_grpc.GatewayStub(channel)  # type: ignore[no-untyped-call]
            text = f"gRPC cache {uuid.uuid4().hex}"
            request = pb.ChatCompletionRequest(
                model=MODEL, messages=[pb.ChatMessage(role="user", content=text)], max_tokens=16
            )
            before = upstream_requests(mock_upstream)
            first, call = stub.ChatCompletion.with_call(request, timeout=10)
            assert dict(call.initial_metadata())["x-llm-proxy-cache"] == "miss"
            second, call = stub.ChatCompletion.with_call(request, timeout=10)
            assert dict(call.initial_metadata())["x-llm-proxy-cache"] == "hit"
            assert second.cache_status == "hit"
            assert second.choices[0].message.content == first.choices[0].message.content
            assert upstream_requests(mock_upstream) == before + 1

            streamed = stub.StreamChatCompletion(
                pb.StreamChatCompletionRequest(
                    model=MODEL,
                    messages=[pb.ChatMessage(role="user", content=text)],
                    max_tokens=16,
                ),
                timeout=10,
            )
            assert dict(streamed.initial_metadata())["x-llm-proxy-cache"] == "hit"
            list(streamed)

            _, call = stub.ChatCompletion.with_call(
                request, metadata=[("cache-control", "no-cache")], timeout=10
            )
            assert dict(call.initial_metadata())["x-llm-proxy-cache"] == "bypass"
            assert upstream_requests(mock_upstream) == before + 2
    finally:
        gw.stop()
