"""Rate limits and budgets through the real interfaces: the OpenAI SDK and raw HTTP against
gateway processes, a real gRPC channel, a real Redis (shared by several gateways, and a
private one the tests stop), and a webhook receiver for budget alerts."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
from llm_proxy.grpc.gen import gateway_pb2 as pb
from llm_proxy.grpc.gen import gateway_pb2_grpc as pb_grpc

from tests.support.redis import start_private_redis
from tests.support.servers import Gateway, MockUpstream, start_gateway

CHAT = [{"role": "user", "content": "Tell me about rate limits"}]
# USD per million tokens for the priced test model: big, so a few calls spend cents.
PRICE = {"input": 1000.0, "output": 2000.0}


def config_for(upstream: MockUpstream, limits: dict[str, Any], **extra: Any) -> dict[str, Any]:
    base = upstream.url + "/v1"
    config: dict[str, Any] = {
        "logging": {"enabled": False},
        "providers": {
            "up": {"kind": "openai", "base_url": base, "api_key": "sk-up-SECRET"},
            "slow": {
                "kind": "openai",
                "base_url": base,
                "headers": {"x-mock-chunks": "40", "x-mock-chunk-delay-ms": "50"},
            },
        },
        "models": {
            "gpt-4o-mini": {"provider": "up", "model": "gpt-4o-mini"},
            "priced": {"provider": "up", "model": "priced-model"},
            "unpriced": {"provider": "up", "model": "no-such-price"},
            "slow": {"provider": "slow", "model": "priced-model"},
            "text-embedding-3-small": {"provider": "up", "model": "text-embedding-3-small"},
        },
        "pricing": {"models": {"priced-model": PRICE}},
        "limits": limits,
    }
    config.update(extra)
    return config


def post(gw: Gateway, body: dict[str, Any], path: str = "/chat/completions") -> httpx.Response:
    return httpx.post(gw.base_url + path, json=body, timeout=15)


def chat_body(model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": CHAT, "max_tokens": 16, **extra}


# -- headers and refusals ------------------------------------------------------------------


def test_every_answer_carries_the_tightest_limits_and_a_refusal_is_openais_429(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    limits = {"global": {"rpm": 3, "tpm": 100000, "models": {"gpt-4o-mini": {"rpm": 50}}}}
    gw = start_gateway(config_for(mock_upstream, limits), tmp_path)
    try:
        remaining = []
        for _ in range(3):
            resp = post(gw, chat_body())
            assert resp.status_code == 200, resp.text
            assert resp.headers["x-ratelimit-limit-requests"] == "3"  # the tighter of 3 and 50
            assert resp.headers["x-ratelimit-limit-tokens"] == "100000"
            assert resp.headers["x-ratelimit-reset-requests"].endswith("s")
            remaining.append(int(resp.headers["x-ratelimit-remaining-requests"]))
        assert remaining == [2, 1, 0]
        client = openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0)
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="gpt-4o-mini", messages=CHAT)  # type: ignore[arg-type]
        resp = refused.value.response
        error = resp.json()["error"]
        assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded"
        assert "Limit 3" in error["message"] and "the gateway" in error["message"]
        wait_s = int(resp.headers["retry-after"])
        assert 55 <= wait_s <= 61
        assert 55_000 <= int(resp.headers["retry-after-ms"]) <= 61_000
        assert resp.headers["x-ratelimit-remaining-requests"] == "0"
        # A stream is refused before it starts, with the same status.
        resp = post(gw, chat_body(stream=True))
        assert resp.status_code == 429
    finally:
        gw.stop()


def test_a_request_larger_than_the_whole_limit_is_told_not_to_retry(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    gw = start_gateway(config_for(mock_upstream, {"global": {"tpm": 100}}), tmp_path)
    try:
        resp = post(gw, chat_body(max_tokens=500))
        assert resp.status_code == 429
        assert resp.headers["x-should-retry"] == "false"
        assert "retry-after" not in resp.headers
        error = resp.json()["error"]
        assert error["type"] == "tokens" and "Request too large" in error["message"]
        # The SDK honours x-should-retry: one attempt only, even with retries on.
        before = mock_upstream.stats()
        client = openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=3)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="gpt-4o-mini", messages=CHAT, max_tokens=500)  # type: ignore[arg-type]
        assert mock_upstream.stats() == before
        assert post(gw, chat_body(max_tokens=20)).status_code == 200
    finally:
        gw.stop()


# -- tokens: reserved at admission, settled with the real usage -------------------------------


def _remaining_tokens(resp: httpx.Response) -> int:
    assert resp.status_code == 200, resp.text
    return int(resp.headers["x-ratelimit-remaining-tokens"])


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_tpm_reservations_are_settled_with_the_real_usage(
    backend: str, mock_upstream: MockUpstream, tmp_path: Path, redis_server: str, prefix: str
) -> None:
    limits = {"backend": backend, "redis_url": redis_server, "key_prefix": prefix}
    limits["global"] = {"tpm": 1_000_000}
    gw = start_gateway(config_for(mock_upstream, limits), tmp_path)
    try:
        whole = chat_body(max_tokens=64)
        first = post(gw, whole)
        reserved = 1_000_000 - _remaining_tokens(first)
        used = first.json()["usage"]["total_tokens"]
        assert reserved > used > 0  # the reservation held max_tokens; the answer used fewer
        time.sleep(0.3)  # the Redis settle is queued after the answer
        second = post(gw, whole)
        assert _remaining_tokens(second) == 1_000_000 - used - reserved
        time.sleep(0.3)

        # A stream whose upstream reports usage: settled with it.
        body = chat_body(max_tokens=64, stream=True, stream_options={"include_usage": True})
        before = _remaining_tokens(post(gw, whole)) + reserved  # what stood before that call
        time.sleep(0.3)
        usage = None
        with httpx.stream("POST", gw.base_url + "/chat/completions", json=body) as resp:
            streamed_reserve = before - used - _remaining_tokens(resp)
            for line in resp.iter_lines():
                if line.startswith("data: {"):
                    usage = json.loads(line[6:]).get("usage") or usage
        assert usage is not None and streamed_reserve > usage["total_tokens"]
        time.sleep(0.3)
        after = post(gw, whole)
        assert _remaining_tokens(after) == before - used - usage["total_tokens"] - reserved
    finally:
        gw.stop()


def test_a_stream_the_client_closes_early_settles_what_was_relayed(
    mock_upstream: MockUpstream, tmp_path: Path, redis_server: str, prefix: str
) -> None:
    limits = {"backend": "redis", "redis_url": redis_server, "key_prefix": prefix}
    limits["global"] = {"tpm": 1_000_000}
    gw = start_gateway(config_for(mock_upstream, limits), tmp_path)
    try:
        probe = chat_body(max_tokens=1)
        first = post(gw, probe)
        probe_reserve = 1_000_000 - _remaining_tokens(first)
        probe_used = first.json()["usage"]["total_tokens"]
        time.sleep(0.3)
        body = {"model": "slow", "messages": CHAT, "max_tokens": 4000, "stream": True}
        with httpx.stream("POST", gw.base_url + "/chat/completions", json=body) as resp:
            reserved = 1_000_000 - probe_used - _remaining_tokens(resp)
            events = 0
            for line in resp.iter_lines():
                if line.startswith("data: {"):
                    events += 1
                    if events == 3:
                        break  # leave with most of the answer still to come
        assert reserved > 4000
        time.sleep(1.0)
        standing = 1_000_000 - _remaining_tokens(post(gw, probe))
        # Left standing by the cut stream: its input and the few tokens relayed.
        cut_stream = standing - probe_used - probe_reserve
        assert 0 < cut_stream < 200, (reserved, standing)
    finally:
        gw.stop()


def test_embeddings_reserve_their_input_tokens_only(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    gw = start_gateway(config_for(mock_upstream, {"global": {"tpm": 10_000}}), tmp_path)
    try:
        text = "the quick brown fox jumps over the lazy dog " * 10
        body = {"model": "text-embedding-3-small", "input": text}
        first = post(gw, body, "/embeddings")
        reserved = 10_000 - _remaining_tokens(first)
        assert reserved == 91  # o200k/cl100k: 9 tokens x 10, and one for the trailing space
        used = first.json()["usage"]["total_tokens"]
        second = post(gw, body, "/embeddings")
        assert _remaining_tokens(second) == 10_000 - used - reserved
        too_big = post(gw, {"model": "text-embedding-3-small", "input": text * 120}, "/embeddings")
        assert too_big.status_code == 429 and too_big.headers["x-should-retry"] == "false"
    finally:
        gw.stop()


# -- budgets --------------------------------------------------------------------------------


def _cost_usd(usage: dict[str, int]) -> float:
    return (
        usage["prompt_tokens"] * PRICE["input"] + usage["completion_tokens"] * PRICE["output"]
    ) / 1e6


def test_a_budget_is_spent_by_a_known_number_of_calls_at_known_prices(
    mock_upstream: MockUpstream, tmp_path: Path, redis_server: str, prefix: str
) -> None:
    budget = 0.5
    limits = {
        "backend": "redis",
        "redis_url": redis_server,
        "key_prefix": prefix,
        "budgets": [{"usd": budget, "period": "daily"}],
    }
    gw = start_gateway(config_for(mock_upstream, limits), tmp_path)
    try:
        body = chat_body("priced", max_tokens=16)
        first = post(gw, body)
        assert first.status_code == 200, first.text
        usage = first.json()["usage"]
        cost = _cost_usd(usage)
        # The reservation is the most the call can cost: its input and max_tokens.
        prompt_reserved = usage["prompt_tokens"]  # the mock's count stands in for ours here
        assert cost > 0
        succeeded = 1
        for _ in range(100):
            time.sleep(0.05)
            resp = post(gw, body)
            if resp.status_code != 200:
                break
            succeeded += 1
        assert resp.status_code == 429, resp.text
        error = resp.json()["error"]
        assert error["code"] == "insufficient_quota" and error["type"] == "insufficient_quota"
        assert resp.headers["x-should-retry"] == "false"
        assert "the gateway" in error["message"] and "daily" in error["message"]
        # Calls went through while spent + the call's maximum cost stayed within the budget.
        max_cost = (prompt_reserved * PRICE["input"] + 16 * PRICE["output"]) / 1e6
        expected = int((budget - max_cost) // cost) + 1
        assert abs(succeeded - expected) <= 1, (succeeded, expected, cost, max_cost)
        # An unpriced model is refused, never counted as free.
        resp = post(gw, chat_body("unpriced"))
        assert resp.status_code == 403
        assert resp.json()["error"]["code"] == "model_price_unknown"
    finally:
        gw.stop()


def test_unpriced_models_pass_when_configured_to(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    limits = {"budgets": [{"usd": 1.0, "period": "monthly"}]}
    config = config_for(mock_upstream, limits, pricing={"unknown_model": "allow"})
    gw = start_gateway(config, tmp_path)
    try:
        assert post(gw, chat_body("unpriced")).status_code == 200
    finally:
        gw.stop()


class _Webhook(BaseHTTPRequestHandler):
    received: list[tuple[bytes, str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        _Webhook.received.append((body, self.headers.get("x-llm-proxy-signature", "")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


def test_a_threshold_raises_one_signed_alert_across_instances(
    mock_upstream: MockUpstream, tmp_path: Path, redis_server: str, prefix: str
) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Webhook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Webhook.received = []
    secret = "whsec-test"
    limits = {
        "backend": "redis",
        "redis_url": redis_server,
        "key_prefix": prefix,
        "budgets": [{"usd": 5.0, "period": "monthly", "alert_at": [0.01, 0.9]}],
        "alerts": {
            "webhook_url": f"http://127.0.0.1:{server.server_port}/hook",
            "webhook_secret": secret,
        },
    }
    gateways = [start_gateway(config_for(mock_upstream, limits), tmp_path) for _ in range(2)]
    try:
        body = chat_body("priced", max_tokens=16)
        for i in range(12):
            assert post(gateways[i % 2], body).status_code == 200
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not _Webhook.received:
            time.sleep(0.05)
        time.sleep(0.5)  # a second alert, if one were (wrongly) sent, would have come by now
        assert len(_Webhook.received) == 1
        raw, signature = _Webhook.received[0]
        assert signature == "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        event = json.loads(raw)
        assert event["type"] == "budget.threshold" and event["threshold"] == 0.01
        assert event["scope"] == "global" and event["spent_usd"] >= 0.05
    finally:
        for gw in gateways:
            gw.stop()
        server.shutdown()


# -- Redis failing ----------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["allow", "deny"])
def test_redis_stopped_mid_run_never_hangs_a_request(
    action: str, mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    redis = start_private_redis(tmp_path / "redis")
    limits = {
        "backend": "redis",
        "redis_url": redis.url,
        "on_backend_error": action,
        "timeout_s": 0.2,
        "global": {"rpm": 1000},
    }
    gw = start_gateway(config_for(mock_upstream, limits), tmp_path)
    try:
        assert post(gw, chat_body()).status_code == 200
        redis.stop()
        statuses = []
        started = time.monotonic()
        for _ in range(10):
            resp = post(gw, chat_body())
            statuses.append(resp.status_code)
            if action == "deny":
                assert resp.json()["error"]["code"] == "limits_unavailable"
        assert time.monotonic() - started < 5  # ten calls, none waiting out anything long
        assert set(statuses) == ({200} if action == "allow" else {503})
        metrics = httpx.get(gw.url + "/metrics", timeout=5).text
        assert (
            f'llm_proxy_limits_backend_errors_total{{action="{action}",backend="redis"}}' in metrics
        )
        redis.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            resp = post(gw, chat_body())
            if "x-ratelimit-remaining-requests" in resp.headers:
                break
            time.sleep(0.2)
        assert resp.status_code == 200 and "x-ratelimit-remaining-requests" in resp.headers
    finally:
        gw.stop()
        redis.stop()


# -- gRPC --------------------------------------------------------------------------------------


def test_grpc_refusal_is_resource_exhausted_with_retry_after(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    gw = start_gateway(config_for(mock_upstream, {"global": {"rpm": 1}}), tmp_path, grpc=True)
    request = pb.ChatCompletionRequest(
        model="gpt-4o-mini", messages=[pb.ChatMessage(role="user", content="hi")]
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gw.grpc_port}") as channel:
            stub = pb_grpc.GatewayStub(channel)
            reply, call = stub.ChatCompletion.with_call(request, timeout=10)
            assert reply.choices[0].message.content
            assert ("x-ratelimit-remaining-requests", "0") in call.initial_metadata()
            with pytest.raises(grpc.RpcError) as refused:
                stub.ChatCompletion(request, timeout=10)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "Rate limit reached" in str(refused.value.details())
            trailers = dict(refused.value.trailing_metadata())
            assert 55 <= int(trailers["retry-after"]) <= 61
    finally:
        gw.stop()


def test_concurrent_calls_within_max_parallel(mock_upstream: MockUpstream, tmp_path: Path) -> None:
    limits = {"global": {"max_parallel": 2}}
    gw = start_gateway(config_for(mock_upstream, limits), tmp_path)
    try:
        body = {"model": "slow", "messages": CHAT, "max_tokens": 50, "stream": True}

        def one(_: int) -> int:
            with httpx.stream("POST", gw.base_url + "/chat/completions", json=body) as resp:
                for _line in resp.iter_lines():
                    pass
                return resp.status_code

        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(one, range(6)))
        assert statuses.count(200) == 2 and statuses.count(429) == 4
        assert post(gw, chat_body()).status_code == 200  # the slots were freed
    finally:
        gw.stop()


# -- keys, teams, and several gateways ---------------------------------------------------------

ADMIN = "adm-" + "limits-test-admin"


def _keyed(upstream: MockUpstream, store: str, limits: dict[str, Any], tmp: Path) -> dict[str, Any]:
    config = config_for(upstream, limits)
    config["server"] = {"admin_port": 0}
    config["logging"] = {
        "enabled": True,
        "store": store,
        "spool_path": str(tmp / "spool"),
        "flush_interval_s": 0.01,
    }
    config["auth"] = {"mode": "keys", "admin_key": ADMIN}
    return config


def _admin(config: dict[str, Any], tmp: Path) -> Gateway:
    """A gateway whose admin listener is on, to make keys with."""
    from tests.support.servers import free_port

    config = {**config, "server": {"admin_port": free_port()}}
    gw = start_gateway(config, tmp)
    gw.admin_port = config["server"]["admin_port"]  # type: ignore[attr-defined]
    return gw


def _make_key(gw: Gateway, **fields: Any) -> dict[str, Any]:
    port = gw.admin_port  # type: ignore[attr-defined]
    resp = httpx.post(
        f"http://127.0.0.1:{port}/admin/v1/keys",
        json=fields,
        headers={"authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def test_three_gateways_share_a_keys_100_rpm_exactly(
    mock_upstream: MockUpstream, tmp_path: Path, redis_server: str, prefix: str
) -> None:
    from tests.support.postgres import database_url, private_schema, with_search_path

    url = database_url()
    with private_schema(url) as schema:
        store = with_search_path(url, schema)
        limits = {"backend": "redis", "redis_url": redis_server, "key_prefix": prefix}
        config = _keyed(mock_upstream, store, limits, tmp_path)
        first = _admin(config, tmp_path)
        gateways = [first, start_gateway(config, tmp_path), start_gateway(config, tmp_path)]
        try:
            made = _make_key(first, limits={"rpm": 100})
            headers = {"authorization": f"Bearer {made['key']}"}
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # the other gateways' tables pick the key up
                if all(
                    httpx.get(g.base_url + "/key/info", headers=headers).status_code == 200
                    for g in gateways
                ):
                    break
                time.sleep(0.1)

            def one(i: int) -> httpx.Response:
                gw = gateways[i % 3]
                return httpx.post(
                    gw.base_url + "/chat/completions", json=chat_body(), headers=headers, timeout=30
                )

            with ThreadPoolExecutor(48) as pool:
                answers = list(pool.map(one, range(400)))
            statuses = [r.status_code for r in answers]
            assert statuses.count(200) == 100, statuses
            assert statuses.count(429) == 300
            refused = [r for r in answers if r.status_code == 429]
            waits = [int(r.headers["retry-after-ms"]) for r in refused]
            assert all(0 < w <= 61_000 for w in waits)
            assert all(made["id"] in r.json()["error"]["message"] for r in refused)
            info = httpx.get(first.base_url + "/key/info", headers=headers).json()
            rows = {(r["scope"], r["metric"]): r for r in info["limits_usage"]}
            assert rows[(f"key:{made['id']}", "requests")]["used"] == 100
            # After the window the key works again: wait out the longest retry-after.
            time.sleep(max(waits) / 1000 + 0.2)
            assert one(0).status_code == 200
        finally:
            for gw in gateways:
                gw.stop()


def test_team_and_key_x_model_limits_name_their_scope(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    config = _keyed(mock_upstream, f"sqlite:///{tmp_path}/k.db", {}, tmp_path)
    config["auth"]["teams"] = {"support": {"limits": {"rpm": 3}}}
    gw = _admin(config, tmp_path)
    try:
        made = _make_key(gw, team="support", limits={"models": {"priced": {"rpm": 1}}})
        client = openai.OpenAI(base_url=gw.base_url, api_key=made["key"], max_retries=0)
        assert client.chat.completions.create(model="priced", messages=CHAT, max_tokens=4)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as per_model:
            client.chat.completions.create(model="priced", messages=CHAT, max_tokens=4)  # type: ignore[arg-type]
        message = per_model.value.response.json()["error"]["message"]
        assert f"key `{made['id']}` for model `priced`" in message
        for _ in range(2):
            client.chat.completions.create(model="gpt-4o-mini", messages=CHAT, max_tokens=4)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as team:
            client.chat.completions.create(model="gpt-4o-mini", messages=CHAT, max_tokens=4)  # type: ignore[arg-type]
        message = team.value.response.json()["error"]["message"]
        assert "team `support`" in message and made["id"] in message
    finally:
        gw.stop()


def test_a_key_budget_is_shown_and_spent(mock_upstream: MockUpstream, tmp_path: Path) -> None:
    config = _keyed(mock_upstream, f"sqlite:///{tmp_path}/b.db", {}, tmp_path)
    gw = _admin(config, tmp_path)
    try:
        made = _make_key(gw, budgets=[{"usd": 0.2, "period": "monthly"}])
        headers = {"authorization": f"Bearer {made['key']}"}
        resp = httpx.post(
            gw.base_url + "/chat/completions", json=chat_body("priced"), headers=headers
        )
        assert resp.status_code == 200, resp.text
        spent = _cost_usd(resp.json()["usage"])
        info = httpx.get(gw.base_url + "/key/info", headers=headers).json()
        assert info["budgets"] == [{"usd": 0.2}]  # the period left out is the default, monthly
        (row,) = [r for r in info["limits_usage"] if r["metric"] == "budget"]
        assert row["scope"] == f"key:{made['id']}" and row["budget_usd"] == 0.2
        assert row["spent_usd"] == pytest.approx(spent, abs=2e-6)
        status = 200
        for _ in range(50):
            status = httpx.post(
                gw.base_url + "/chat/completions", json=chat_body("priced"), headers=headers
            ).status_code
            if status != 200:
                break
        assert status == 429
        # The log store keeps the history the counters were reconciled to.
        out = subprocess.run(
            [sys.executable, "-m", "llm_proxy.cli", "stats", "--config", str(gw.config_path),
             "--by", "key", "--json"],
            capture_output=True, text=True, timeout=30, cwd=tmp_path,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        rows = [json.loads(line) for line in out.stdout.splitlines()]
        (mine,) = [r for r in rows if r["key"] == made["id"]]
        assert mine["cost_usd"] <= 0.2 and mine["budgets"][0]["usd"] == 0.2
        assert mine["budgets"][0]["spent_usd"] == pytest.approx(mine["cost_usd"], rel=1e-6)
    finally:
        gw.stop()


def test_cache_hits_cost_nothing_unless_counted(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    for counted in (False, True):
        limits = {"global": {"rpm": 2}, "count_cache_hits": counted}
        config = config_for(mock_upstream, limits, cache={"enabled": True})
        gw = start_gateway(config, tmp_path)
        try:
            body = chat_body(messages=[{"role": "user", "content": f"cache {counted}"}])
            assert post(gw, body).headers["x-llm-proxy-cache"] == "miss"
            hit = post(gw, body)
            assert hit.status_code == 200 and hit.headers["x-llm-proxy-cache"] == "hit"
            third = post(gw, chat_body())
            assert third.status_code == (429 if counted else 200), third.text
        finally:
            gw.stop()


def test_llm_proxy_prices_shows_the_effective_table(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    import yaml

    path = tmp_path / "prices.yaml"
    path.write_text(yaml.safe_dump(config_for(mock_upstream, {})))
    done = subprocess.run(
        [sys.executable, "-m", "llm_proxy.cli", "prices", "--config", str(path), "--json"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {r["model"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert rows["priced"]["input_per_mtok"] == PRICE["input"]
    assert rows["priced"]["source"] == "config"
    assert rows["gpt-4o-mini"]["source"] == "table" and rows["gpt-4o-mini"]["input_per_mtok"] > 0
    assert rows["gpt-4o-mini"]["context_window"] >= 128000
    assert rows["unpriced"]["source"] is None
    table = subprocess.run(
        [sys.executable, "-m", "llm_proxy.cli", "prices", "--config", str(path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "NO PRICE" in table.stdout and "refused" in table.stdout


def test_token_counts_and_refusals_use_no_tokens(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    gw = start_gateway(config_for(mock_upstream, {"global": {"tpm": 100_000}}), tmp_path)
    try:
        first = post(gw, chat_body(max_tokens=10))
        reserved = 100_000 - _remaining_tokens(first)
        used = first.json()["usage"]["total_tokens"]
        count = {"model": "gpt-4o-mini", "max_tokens": 10, "messages": CHAT}
        for _ in range(5):
            resp = httpx.post(gw.url + "/v1/messages/count_tokens", json=count, timeout=10)
            assert resp.status_code == 200, resp.text
        bad = post(gw, {**chat_body(max_tokens=10), "model": "no-such-model"})
        assert bad.status_code == 404
        again = post(gw, chat_body(max_tokens=10))
        assert _remaining_tokens(again) == 100_000 - used - reserved
    finally:
        gw.stop()
