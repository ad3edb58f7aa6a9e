"""Routing's parts in-process: the config shape, the breaker, picking, the admin view."""

from __future__ import annotations

import json

import pytest
from llm_proxy.config import BreakerConfig, ConfigError, parse_config
from llm_proxy.pipeline import Pipeline
from llm_proxy.routing.breaker import Breaker
from llm_proxy.routing.model_table import context_window, model_facts
from llm_proxy.routing.status import deployments_state, render

PROVIDERS = {"a": {"kind": "mock"}, "b": {"kind": "mock"}}


def group_config(**model: object) -> dict[str, object]:
    return {
        "providers": PROVIDERS,
        "logging": {"enabled": False},
        "models": {
            "g": {
                "deployments": [
                    {"provider": "a", "model": "mock-1"},
                    {"provider": "b", "model": "mock-1", "name": "second"},
                ],
                **model,
            },
            "plain": {"provider": "a", "model": "mock-1"},
        },
    }


def test_the_one_deployment_form_is_unchanged_and_not_routed() -> None:
    config = parse_config(group_config())
    plain = config.models["plain"]
    assert (plain.provider, plain.model, plain.deployments) == ("a", "mock-1", [])
    assert not plain.grouped and config.models["g"].grouped
    pipeline = Pipeline(config)
    assert set(pipeline.router.groups) == {"g"}


@pytest.mark.parametrize(
    ("models", "path"),
    [
        ({"g": {"deployments": [{"provider": "nope", "model": "x"}]}}, "$.models.g.deployments[0]"),
        ({"g": {"provider": "a"}}, "$.models.g"),
        (
            {
                "g": {
                    "provider": "a",
                    "model": "x",
                    "deployments": [{"provider": "a", "model": "x"}],
                }
            },
            "$.models.g",
        ),
        (
            {"g": {"provider": "a", "model": "x", "fallbacks": [{"to": ["nope"]}]}},
            "$.models.g.fallbacks[0].to[0]",
        ),
        ({"g": {"provider": "a", "model": "x", "strategy": "fastest"}}, "$.models.g.strategy"),
        (
            {"g": {"provider": "a", "model": "x", "fallbacks": [{"to": ["g"], "on": ["oops"]}]}},
            "$.models.g.fallbacks[0].on[0]",
        ),
    ],
)
def test_bad_groups_fail_with_the_path_of_the_field(models: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"providers": PROVIDERS, "models": models})
    assert path in str(info.value)


def test_breaker_opens_after_a_run_of_failures_then_lets_one_trial_through() -> None:
    breaker = Breaker(BreakerConfig(consecutive_failures=3, cooldown_s=10))
    for _ in range(2):
        breaker.failure(100.0)
    assert breaker.state(100.0) == "closed"
    breaker.failure(100.0)
    assert breaker.state(105.0) == "open" and not breaker.available(105.0)
    assert breaker.available(110.0) and breaker.state(110.0) == "half_open"
    breaker.picked(110.0)
    assert not breaker.available(110.0)  # one trial at a time
    breaker.failure(110.5)
    assert breaker.state(115.0) == "open" and breaker.available(120.5)
    breaker.picked(120.5)
    breaker.success(121.0)
    assert breaker.state(121.0) == "closed" and breaker.available(121.0)


def test_breaker_opens_on_the_failure_ratio_over_the_window() -> None:
    breaker = Breaker(BreakerConfig(consecutive_failures=100, failure_ratio=0.5, min_calls=10))
    for i in range(9):
        (breaker.failure if i % 2 else breaker.success)(50.0 + i * 0.1)
    assert breaker.state(51.0) == "closed"  # 4 of 9: fewer than min_calls and under half
    breaker.failure(51.0)
    assert breaker.state(51.0) == "open"  # 5 of 10


def test_a_429_opens_the_breaker_for_its_retry_after() -> None:
    breaker = Breaker(BreakerConfig())
    breaker.failure(10.0, retry_after_s=2.5)
    assert breaker.state(12.4) == "open" and breaker.available(12.5)


def test_with_every_breaker_open_the_least_recently_failed_deployment_is_picked() -> None:
    pipeline = Pipeline(parse_config(group_config()))
    group = pipeline.router.groups["g"]
    first, second = group.deployments
    second.failed(1.0, 429, "rate_limit", "slow down", 60.0)
    first.failed(2.0, 429, "rate_limit", "slow down", 60.0)
    assert not group.ready(3.0)
    assert group.pick([], 3.0, stream=False) is second


def test_a_session_sticks_to_one_deployment() -> None:
    pipeline = Pipeline(parse_config(group_config()))
    group = pipeline.router.groups["g"]
    for session in ("alice", "bob", "carol"):
        chosen = {group.pick([], 1.0, False, session).id for _ in range(20)}
        assert len(chosen) == 1


def test_the_model_table_knows_context_windows_and_prices() -> None:
    assert context_window("gpt-4") == 8192
    assert context_window("openai/gpt-4o") == 128000
    facts = model_facts("claude-sonnet-4-5")
    assert facts is not None and facts.input and facts.output and facts.input < facts.output
    assert context_window("no-such-model") is None


def test_the_admin_view_shows_each_deployment() -> None:
    pipeline = Pipeline(parse_config(group_config()))
    group = pipeline.router.groups["g"]
    group.deployments[1].failed(5.0, 429, "rate_limit", "slow down", 30.0)
    state = deployments_state(pipeline.router)
    json.dumps(state)  # JSON-able
    (g,) = state["data"]
    assert g["model"] == "g" and g["strategy"] == "weighted" and g["retries"] == 2
    names = [d["name"] for d in g["deployments"]]
    assert names == ["a/mock-1", "second"]
    second = g["deployments"][1]
    assert second["breaker"] in ("open", "half_open") and second["failures"] == 1
    assert second["recent_errors"][0]["status"] == 429
    assert "second" in render(state)


def test_a_deployment_past_its_rpm_or_tpm_is_skipped_while_another_has_room() -> None:
    config = parse_config(
        {
            "providers": PROVIDERS,
            "models": {
                "g": {
                    "strategy": "cost",
                    "deployments": [
                        {
                            "provider": "a",
                            "model": "m",
                            "name": "cheap",
                            "rpm": 2,
                            "tpm": 100,
                            "price": {"input": 1, "output": 1},
                        },
                        {
                            "provider": "b",
                            "model": "m",
                            "name": "dear",
                            "price": {"input": 9, "output": 9},
                        },
                    ],
                }
            },
        }
    )
    group = Pipeline(config).router.groups["g"]
    cheap = group.deployments[0]
    assert [group.pick([], 10.0, False).id for _ in range(4)] == ["cheap", "cheap", "dear", "dear"]
    assert [group.pick([], 70.0, False).id for _ in range(1)] == ["cheap"]  # a new minute
    cheap.count_tokens(150)
    assert group.pick([], 71.0, False).id == "dear"
    state = deployments_state(Pipeline(config).router)["data"][0]["deployments"][0]
    assert (state["rpm"], state["tpm"]) == (2, 100)


def test_the_deployments_command_prints_the_admin_view(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import http.server
    import threading

    from llm_proxy.cli import main

    state = deployments_state(Pipeline(parse_config(group_config())).router)
    seen: list[str | None] = []

    class Admin(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("authorization"))
            ok = self.path == "/admin/v1/deployments"
            body = json.dumps(state).encode() if ok else b"{}"
            self.send_response(200 if ok else 404)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.HTTPServer(("127.0.0.1", 0), Admin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        assert main(["deployments", "--url", url, "--admin-key", "adm-1"]) == 0
        out = capsys.readouterr().out
        assert "a/mock-1" in out and "second" in out and "closed" in out
        assert seen == ["Bearer adm-1"]
        assert main(["deployments", "--url", url, "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == state
        assert main(["deployments", "--url", url + "/nowhere"]) == 1
    finally:
        server.shutdown()
        server.server_close()


def test_the_admin_view_masks_provider_keys_an_upstream_echoed() -> None:
    data = group_config()
    data["providers"] = {
        "a": {"kind": "openai", "api_key": "sk-provider-secret-1"},
        "b": {"kind": "mock"},
    }
    pipeline = Pipeline(parse_config(data))
    group = pipeline.router.groups["g"]
    group.deployments[0].failed(1.0, 401, "error", "Incorrect API key sk-provider-secret-1", None)
    text = json.dumps(deployments_state(pipeline.router))
    assert "sk-provider-secret-1" not in text and "[SECRET]" in text
