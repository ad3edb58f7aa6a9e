"""Active health probes (`health_check:`): breakers learn without client traffic, instances
sharing Redis take turns to probe, and the admin listener and CLI show what they learned."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.redis import redis_url
from tests.support.servers import (
    MockUpstream,
    free_port,
    start_gateway,
    start_mock_upstream,
    stop_process,
)


@pytest.fixture
def own_upstream() -> Iterator[MockUpstream]:
    """A mock upstream of this test's own, so its request counter counts only probes."""
    upstream = start_mock_upstream()
    yield upstream
    stop_process(upstream.proc)


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from redis_url(tmp_path_factory.mktemp("redis"))


def _config(upstream: MockUpstream, health: dict[str, Any]) -> dict[str, Any]:
    def provider(headers: dict[str, str]) -> dict[str, Any]:
        return {"kind": "openai", "base_url": upstream.url + "/v1", "headers": headers}

    return {
        "logging": {"enabled": False},
        "providers": {"fails": provider({"x-mock-status": "500"}), "ok": provider({})},
        "models": {
            "g": {
                "strategy": "cost",
                "breaker": {"consecutive_failures": 2, "cooldown_s": 60},
                "health_check": health,
                "deployments": [
                    {
                        "provider": "fails",
                        "model": "gpt-4o-mini",
                        "name": "fails",
                        "price": {"input": 1, "output": 1},
                    },
                    {
                        "provider": "ok",
                        "model": "gpt-4o-mini",
                        "name": "ok",
                        "price": {"input": 2, "output": 2},
                    },
                ],
            }
        },
    }


def _ask(url: str) -> httpx.Response:
    body = {"model": "g", "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=10)


def test_probes_open_a_failing_deployments_breaker_before_any_client_call(
    own_upstream: MockUpstream, tmp_path: Path
) -> None:
    gw = start_gateway(_config(own_upstream, {"interval_s": 0.2, "timeout_s": 2}), tmp_path)
    try:
        # Two failed probes in a row (0.2 s apart, after up to 0.2 s) open `fails`' breaker.
        time.sleep(1.0)
        assert own_upstream.stats()["requests"] >= 4  # probes of both deployments
        resp = _ask(gw.url)
        assert resp.status_code == 200
        # The cheaper `fails` would be tried first; its open breaker skips it.
        assert resp.headers["x-llm-proxy-deployment"] == "ok"
        assert resp.headers["x-llm-proxy-attempts"] == "1"
    finally:
        gw.stop()


def test_instances_sharing_redis_take_turns_to_probe(
    own_upstream: MockUpstream, shared_redis: str, tmp_path: Path
) -> None:
    health = {
        "interval_s": 0.25,
        "timeout_s": 2,
        "redis_url": shared_redis,
        "key_prefix": f"llm-proxy-test:{time.time_ns()}:",
    }
    gateways = [start_gateway(_config(own_upstream, health), tmp_path) for _ in range(2)]
    try:
        own_upstream.reset()
        started = time.monotonic()
        time.sleep(2.0)
        probes = own_upstream.stats()["requests"]
        rounds = (time.monotonic() - started) / 0.25
        # One instance probes each round: 2 deployments a round, not 4.
        assert probes <= 2 * rounds + 4, (probes, rounds)
        assert probes >= rounds  # and the probing goes on
        # Both instances know `fails` is down, the one that did not probe included.
        for gw in gateways:
            resp = _ask(gw.url)
            assert resp.headers["x-llm-proxy-deployment"] == "ok"
            assert resp.headers["x-llm-proxy-attempts"] == "1"
    finally:
        for gw in gateways:
            gw.stop()


def test_the_admin_listener_and_the_cli_show_each_deployment(
    own_upstream: MockUpstream, tmp_path: Path
) -> None:
    config = _config(own_upstream, {"interval_s": 0.2, "timeout_s": 2})
    admin_port = free_port()
    config["server"] = {"admin_port": admin_port}
    config["auth"] = {"admin_key": "adm-routing-test"}
    config["logging"] = {
        "enabled": True,
        "store": f"sqlite:///{tmp_path / 'log.db'}",
        "spool_path": str(tmp_path / "spool"),
    }
    gw = start_gateway(config, tmp_path)
    try:
        time.sleep(1.0)  # the probes open `fails`' breaker
        url = f"http://127.0.0.1:{admin_port}"
        resp = httpx.get(url + "/admin/v1/deployments", timeout=5)
        assert resp.status_code == 401  # the admin key guards it, as the rest of the API
        resp = httpx.get(
            url + "/admin/v1/deployments",
            headers={"authorization": "Bearer adm-routing-test"},
            timeout=5,
        )
        assert resp.status_code == 200
        (group,) = resp.json()["data"]
        by_name = {d["name"]: d for d in group["deployments"]}
        assert by_name["fails"]["breaker"] in ("open", "half_open")
        assert by_name["fails"]["recent_errors"][-1]["status"] == 502
        assert by_name["ok"]["breaker"] == "closed" and by_name["ok"]["ewma_total_ms"] > 0
        cli = subprocess.run(
            [sys.executable, "-m", "llm_proxy.cli", "deployments", "--url", url, "--json"],
            env={**os.environ, "LLM_PROXY_ADMIN_KEY": "adm-routing-test"},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert cli.returncode == 0, cli.stderr
        assert {d["name"] for d in json.loads(cli.stdout)["data"][0]["deployments"]} == {
            "fails",
            "ok",
        }
    finally:
        gw.stop()
