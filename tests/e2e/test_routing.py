"""Model groups through both doors: strategies, retries, fallbacks, breakers, deadlines.

One gateway (HTTP and gRPC) in front of several mock deployments, each an OpenAI provider at
the mock upstream whose fault headers (x-mock-*) make it fail, lag or rate-limit. Each door
gets its own groups, so one door's breakers never steer the other's calls.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
from llm_proxy.grpc.gen import gateway_pb2 as pb
from llm_proxy.grpc.gen import gateway_pb2_grpc as pb_grpc

from tests.support.servers import Gateway, MockUpstream, free_port, start_gateway

DOORS = ("http", "grpc")
PROMPT = "Tell me about gateways"


def _provider(upstream: MockUpstream, headers: dict[str, str], timeout_s: float = 5) -> Any:
    return {
        "kind": "openai",
        "base_url": upstream.url + "/v1",
        "timeout_s": timeout_s,
        "headers": headers,
    }


def _dep(provider: str, price: float | None = None, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"provider": provider, "model": "gpt-4o-mini", "name": provider, **extra}
    if price is not None:  # the `cost` strategy tries the cheapest first: a fixed order
        d["price"] = {"input": price, "output": price}
    return d


def routing_config(upstream: MockUpstream, tmp: Path) -> dict[str, Any]:
    providers = {
        "ok": _provider(upstream, {}),
        "ok2": _provider(upstream, {}),
        "fails": _provider(upstream, {"x-mock-status": "500"}),
        "limited": _provider(upstream, {"x-mock-status": "429"}),  # retry-after: 1
        "slow": _provider(upstream, {"x-mock-delay-ms": "300"}),
        "stuck": _provider(upstream, {"x-mock-delay-ms": "3000"}),
        "cut": _provider(upstream, {"x-mock-disconnect-after": "0"}),
        "broken": _provider(upstream, {"x-mock-disconnect-after": "3"}),
        "flaky": _provider(upstream, {"x-mock-fail-ratio": "0.5"}),
        "claude": {"kind": "anthropic", "base_url": upstream.url, "api_key": "ant-test"},
        "nowhere": {"kind": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1"},
    }
    models: dict[str, Any] = {}
    for door in DOORS:
        models[f"weighted-{door}"] = {
            "deployments": [_dep("ok", weight=3), _dep("ok2", weight=1)],
        }
        models[f"inflight-{door}"] = {
            "strategy": "least-inflight",
            "deployments": [_dep("ok"), _dep("slow")],
        }
        models[f"retry-{door}"] = {
            "strategy": "cost",
            "deployments": [_dep("fails", 1), _dep("ok", 2)],
        }
        models[f"limited-{door}"] = {
            "strategy": "cost",
            "deployments": [_dep("limited", 1), _dep("ok", 2)],
        }
        models[f"stream-cut-{door}"] = {
            "strategy": "cost",
            "deployments": [_dep("cut", 1), _dep("ok", 2)],
        }
        models[f"stream-broken-{door}"] = {
            "strategy": "cost",
            "deployments": [_dep("broken", 1), _dep("ok", 2)],
        }
        # gpt-4 takes 8,192 input tokens (the shipped model table); gpt-4o 128,000. The small
        # one points nowhere: calling it would fail the attempt and show in the headers.
        models[f"small-{door}"] = {
            "deployments": [{"provider": "nowhere", "model": "gpt-4", "name": "small"}],
            "fallbacks": [{"to": [f"big-{door}"], "on": ["context_window"]}],
        }
        models[f"big-{door}"] = {
            "deployments": [{"provider": "ok", "model": "gpt-4o", "name": "big"}],
        }
        models[f"down-{door}"] = {
            "strategy": "cost",
            "deployments": [_dep("fails", 1), _dep("limited", 2)],
            "fallbacks": [{"to": [f"big-{door}"], "on": ["unavailable", "rate_limit"]}],
        }
        models[f"three-{door}"] = {
            "deployments": [_dep("ok"), _dep("ok2"), _dep("fails")],
        }
        models[f"flaky-{door}"] = {
            "deployments": [_dep("ok"), _dep("ok2"), _dep("flaky")],
        }
        models[f"stuck-group-deadline-{door}"] = {
            "timeout_s": 0.6,
            "retries": 5,
            "deployments": [_dep("stuck"), _dep("stuck", name="stuck2")],
        }
        models[f"stuck-{door}"] = {
            "retries": 5,
            "deployments": [_dep("stuck"), _dep("stuck", name="stuck2")],
        }
    # An Anthropic Messages client's call to a group that mixes API kinds is translated (the
    # OpenAI deployment cannot take Anthropic's body); to an all-Anthropic group it is not.
    models["mixed"] = {
        "strategy": "cost",
        "deployments": [
            _dep("ok", 1),
            {"provider": "claude", "model": "claude-sonnet-4-5", "name": "claude"},
        ],
    }
    models["anthropic-only"] = {
        "deployments": [{"provider": "claude", "model": "claude-sonnet-4-5", "name": "claude"}],
    }
    return {
        "server": {"shutdown_grace_s": 5},
        "logging": {
            "enabled": True,
            "store": f"sqlite:///{tmp / 'log.db'}",
            "spool_path": str(tmp / "log.spool"),
            "flush_interval_s": 0.05,
        },
        "providers": providers,
        "models": models,
    }


@pytest.fixture(scope="module")
def gw(mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("routing")
    gateway = start_gateway(routing_config(mock_upstream, tmp), tmp, grpc=True)
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def stub(gw: Gateway) -> Iterator[pb_grpc.GatewayStub]:
    with grpc.insecure_channel(f"127.0.0.1:{gw.grpc_port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield pb_grpc.GatewayStub(channel)


@pytest.fixture(scope="module")
def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="sk-test", max_retries=0, timeout=10)


@dataclass
class Answer:
    """What one call through either door came back with."""

    headers: dict[str, str]
    text: str = ""
    model: str = ""
    error: str | None = None  # the status (HTTP code or gRPC code name) of a failed call
    error_events: int = 0
    request_id: str = ""
    events: list[str] = field(default_factory=list)


class Doors:
    def __init__(self, gw: Gateway, client: openai.OpenAI, stub: pb_grpc.GatewayStub) -> None:
        self.gw, self.client, self.stub = gw, client, stub

    def ask(
        self,
        door: str,
        model: str,
        *,
        stream: bool = False,
        text: str = PROMPT,
        timeout: float | None = None,
        session: str | None = None,
    ) -> Answer:
        model = f"{model}-{door}"
        extra = {"x-llm-proxy-session": session} if session else {}
        if door == "http":
            return self._http(model, stream, text, timeout, extra)
        return self._grpc(model, stream, text, timeout, extra)

    def _http(
        self, model: str, stream: bool, text: str, timeout: float | None, extra: dict[str, str]
    ) -> Answer:
        messages: Any = [{"role": "user", "content": text}]
        if timeout:
            extra = {**extra, "x-llm-proxy-timeout": str(timeout)}
        chat = self.client.chat.completions.with_raw_response
        try:
            raw = chat.create(model=model, messages=messages, stream=stream, extra_headers=extra)
        except openai.APIStatusError as exc:
            return Answer(dict(exc.response.headers), error=str(exc.status_code))
        headers = dict(raw.headers)
        answer = Answer(headers, request_id=headers["x-request-id"])
        if not stream:
            completion = raw.parse()
            answer.text = completion.choices[0].message.content or ""
            answer.model = completion.model
            return answer
        # Raw events, so an error event is seen as what it is (the SDK would raise on it).
        for line in raw.http_response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            answer.events.append(line)
            if "error" in event:
                answer.error_events += 1
                continue
            answer.model = event.get("model", answer.model)
            for choice in event.get("choices", []):
                answer.text += choice.get("delta", {}).get("content") or ""
        return answer

    def _grpc(
        self, model: str, stream: bool, text: str, timeout: float | None, extra: dict[str, str]
    ) -> Answer:
        messages = [pb.ChatMessage(role="user", content=text)]
        wait = timeout or 10
        metadata = list(extra.items())
        if not stream:
            try:
                response, call = self.stub.ChatCompletion.with_call(
                    pb.ChatCompletionRequest(model=model, messages=messages),
                    timeout=wait,
                    metadata=metadata,
                )
            except grpc.RpcError as exc:
                meta = {**dict(exc.initial_metadata() or ()), **dict(exc.trailing_metadata())}  # type: ignore[attr-defined]
                return Answer(meta, error=exc.code().name)  # type: ignore[attr-defined]
            headers = dict(call.initial_metadata())
            return Answer(
                headers,
                text=response.choices[0].message.content,
                model=response.model,
                request_id=headers["x-request-id"],
            )
        call = self.stub.StreamChatCompletion(
            pb.StreamChatCompletionRequest(model=model, messages=messages),
            timeout=wait,
            metadata=metadata,
        )
        answer = Answer({})
        try:
            for message in call:
                answer.model = message.model or answer.model
                answer.text += "".join(c.delta.content for c in message.choices)
                answer.events.append(str(message))
        except grpc.RpcError as exc:
            answer.error = exc.code().name  # type: ignore[attr-defined]
            answer.error_events = 1
            answer.headers.update(dict(exc.trailing_metadata() or ()))  # type: ignore[attr-defined]
        answer.headers.update(dict(call.initial_metadata() or ()))
        answer.request_id = answer.headers.get("x-request-id", "")
        return answer


@pytest.fixture(scope="module")
def doors(gw: Gateway, client: openai.OpenAI, stub: pb_grpc.GatewayStub) -> Doors:
    return Doors(gw, client, stub)


def record(gw: Gateway, request_id: str) -> dict[str, Any]:
    db = gw.config_path.parent / "log.db"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if db.exists():
            conn = sqlite3.connect(db, timeout=5)
            conn.row_factory = sqlite3.Row
            try:
                rows = conn.execute(
                    "SELECT * FROM requests WHERE request_id = ?", (request_id,)
                ).fetchall()
            except sqlite3.OperationalError:
                rows = []
            finally:
                conn.close()
            if rows:
                return dict(rows[0])
        time.sleep(0.05)
    raise AssertionError(f"no log record of {request_id}")


def served_by(answers: list[Answer]) -> Counter[str]:
    return Counter(a.headers["x-llm-proxy-deployment"] for a in answers)


# -- strategies ----------------------------------------------------------------------------


@pytest.mark.parametrize("door", DOORS)
def test_weights_hold_over_a_thousand_calls(doors: Doors, door: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: doors.ask(door, "weighted"), range(1000)))
    counts = served_by(answers)
    assert set(counts) == {"ok", "ok2"}
    # Weights 3:1: 750 expected; the standard deviation is 13.7, so +-60 is over 4 sigma.
    assert 690 <= counts["ok"] <= 810, counts
    assert all(a.headers["x-llm-proxy-attempts"] == "1" for a in answers)


@pytest.mark.parametrize("door", DOORS)
def test_a_session_keeps_to_one_deployment(doors: Doors, door: str) -> None:
    seen = {}
    for session in ("alice", "bob", "carol", "dave", "erin", "frank"):
        answers = [doors.ask(door, "weighted", session=session) for _ in range(10)]
        served = served_by(answers)
        assert len(served) == 1, (session, served)
        seen[session] = next(iter(served))
    assert set(seen.values()) == {"ok", "ok2"}  # sessions spread over both deployments


@pytest.mark.parametrize("door", DOORS)
def test_least_inflight_avoids_the_slow_deployment(doors: Doors, door: str) -> None:
    # 300 ms a call on `slow`: while one call waits there, every other goes to `ok`.
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: doors.ask(door, "inflight"), range(120)))
    counts = served_by(answers)
    assert counts["ok"] + counts["slow"] == 120
    assert counts["slow"] <= 12, counts  # weighted at 1:1 it would be about 60


# -- retries and fallbacks ------------------------------------------------------------------


@pytest.mark.parametrize("door", DOORS)
def test_a_500_is_retried_on_another_deployment_and_the_answer_says_so(
    gw: Gateway, doors: Doors, door: str
) -> None:
    answer = doors.ask(door, "retry")
    assert answer.error is None and answer.text
    assert answer.headers["x-llm-proxy-deployment"] == "ok"
    assert answer.headers["x-llm-proxy-attempts"] == "2"
    assert "x-llm-proxy-fallback" not in answer.headers
    row = record(gw, answer.request_id)
    assert row["status"] == 200
    attempts = json.loads(row["attempts"])
    assert [(a["deployment"], a["status"]) for a in attempts] == [("fails", 502), ("ok", 200)]
    assert attempts[0]["error"] == "unavailable" and "error" not in attempts[1]
    assert all(a["latency_ms"] >= 0 for a in attempts)


@pytest.mark.parametrize("door", DOORS)
def test_a_failing_deployment_among_three_costs_the_client_no_errors(
    doors: Doors, door: str
) -> None:
    answers = [doors.ask(door, "three", stream=i % 2 == 1) for i in range(60)]
    assert all(a.error is None and a.error_events == 0 and a.text for a in answers)
    assert "fails" not in served_by(answers)
    # Its breaker opened after 5 failures in a row: later calls no longer try it.
    retried = [i for i, a in enumerate(answers) if a.headers["x-llm-proxy-attempts"] != "1"]
    assert 1 <= len(retried) <= 5, retried


def test_the_mock_fails_the_share_of_requests_it_is_told(mock_upstream: MockUpstream) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=mock_upstream.url, timeout=5) as http:
        statuses = Counter(
            http.post(
                "/v1/chat/completions", json=body, headers={"x-mock-fail-ratio": "0.5"}
            ).status_code
            for _ in range(200)
        )
    assert set(statuses) == {200, 500} and 60 <= statuses[500] <= 140, statuses


@pytest.mark.parametrize("door", DOORS)
def test_a_deployment_failing_half_its_calls_costs_the_client_no_errors(
    doors: Doors, door: str
) -> None:
    answers = [doors.ask(door, "flaky", stream=i % 2 == 1) for i in range(150)]
    assert all(a.error is None and a.error_events == 0 and a.text for a in answers)
    attempts = Counter(a.headers["x-llm-proxy-attempts"] for a in answers)
    assert set(attempts) <= {"1", "2", "3"} and attempts["1"] >= 100, attempts


@pytest.mark.parametrize("door", DOORS)
def test_a_429_with_retry_after_opens_the_breaker_for_that_long(doors: Doors, door: str) -> None:
    first = doors.ask(door, "limited")
    opened = time.monotonic()
    # The mock's 429 says retry-after: 1; the call itself went on to the next deployment.
    assert first.headers["x-llm-proxy-attempts"] == "2"
    assert first.headers["x-llm-proxy-deployment"] == "ok"
    while time.monotonic() - opened < 0.8:
        during = doors.ask(door, "limited")
        assert during.headers["x-llm-proxy-attempts"] == "1", "the open breaker was not skipped"
        time.sleep(0.05)
    time.sleep(max(0.0, opened + 1.1 - time.monotonic()))
    after = doors.ask(door, "limited")
    assert after.headers["x-llm-proxy-attempts"] == "2", "no trial call after retry-after"
    assert after.headers["x-llm-proxy-deployment"] == "ok"


@pytest.mark.parametrize("door", DOORS)
def test_a_stream_failing_before_its_first_byte_is_served_whole_by_the_next(
    gw: Gateway, doors: Doors, door: str
) -> None:
    whole = doors.ask(door, "stream-cut")
    answer = doors.ask(door, "stream-cut", stream=True)
    assert answer.error is None and answer.error_events == 0
    assert answer.text == whole.text and answer.text
    assert answer.headers["x-llm-proxy-deployment"] == "ok"
    assert answer.headers["x-llm-proxy-attempts"] == "2"
    attempts = json.loads(record(gw, answer.request_id)["attempts"])
    assert [a["deployment"] for a in attempts] == ["cut", "ok"]


@pytest.mark.parametrize("door", DOORS)
def test_a_stream_cut_after_its_first_byte_ends_with_one_error_and_no_retry(
    gw: Gateway, doors: Doors, door: str
) -> None:
    answer = doors.ask(door, "stream-broken", stream=True)
    assert answer.error_events == 1
    if door == "http":
        assert "error" in answer.events[-1]
        assert len(answer.events) >= 2  # some of the answer arrived before the break
    else:
        assert answer.error == "UNAVAILABLE"
    assert answer.headers["x-llm-proxy-deployment"] == "broken"
    assert answer.headers["x-llm-proxy-attempts"] == "1"
    row = record(gw, answer.request_id)
    assert row["status"] == 502
    assert [a["deployment"] for a in json.loads(row["attempts"])] == ["broken"]


@pytest.mark.parametrize("door", DOORS)
def test_a_context_window_fallback_picks_the_bigger_model_without_calling_the_small(
    gw: Gateway, doors: Doors, door: str
) -> None:
    long_prompt = "gateway " * 9000  # about 9,000 tokens: over gpt-4's 8,192
    answer = doors.ask(door, "small", text=long_prompt)
    assert answer.error is None, answer.headers
    assert answer.model == "gpt-4o"
    assert answer.headers["x-llm-proxy-fallback"] == f"big-{door}"
    assert answer.headers["x-llm-proxy-deployment"] == "big"
    assert answer.headers["x-llm-proxy-attempts"] == "1"  # `small` points nowhere: not called
    # A prompt that fits goes to the small model (and fails there, as it points nowhere).
    short = doors.ask(door, "small")
    assert short.error is not None and short.headers["x-llm-proxy-deployment"] == "small"


@pytest.mark.parametrize("door", DOORS)
def test_a_group_that_fails_falls_back_to_another_model(doors: Doors, door: str) -> None:
    for stream in (False, True):
        answer = doors.ask(door, "down", stream=stream)
        assert answer.error is None and answer.text
        assert answer.headers["x-llm-proxy-fallback"] == f"big-{door}"
        assert answer.headers["x-llm-proxy-deployment"] == "big"


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("stream", [False, True])
def test_retries_never_exceed_the_deadline(doors: Doors, door: str, stream: bool) -> None:
    # Both deployments take 3 s and the group may retry 5 times; the client allows 0.6 s.
    started = time.monotonic()
    answer = doors.ask(door, "stuck", stream=stream, timeout=0.6)
    took = time.monotonic() - started
    assert answer.error in ("504", "DEADLINE_EXCEEDED"), answer
    assert took < 0.6 + 0.35, took


@pytest.mark.parametrize("door", DOORS)
def test_the_groups_own_deadline_bounds_its_retries(doors: Doors, door: str) -> None:
    started = time.monotonic()
    answer = doors.ask(door, "stuck-group-deadline")
    took = time.monotonic() - started
    assert answer.error in ("504", "DEADLINE_EXCEEDED"), answer
    assert took < 0.6 + 0.35, took
    assert answer.headers["x-llm-proxy-deployment"] in ("stuck", "stuck2")


@pytest.mark.parametrize(("model", "served"), [("mixed", "ok"), ("anthropic-only", "claude")])
def test_an_anthropic_client_is_answered_by_any_deployment_of_a_group(
    gw: Gateway, mock_upstream: MockUpstream, model: str, served: str
) -> None:
    resp = httpx.post(
        gw.url + "/v1/messages",
        json={
            "model": model,
            "max_tokens": 20,
            "system": "Be brief.",
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers={"x-api-key": "sk-test", "anthropic-version": "2023-06-01"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["type"] == "message" and resp.json()["content"][0]["text"]
    assert resp.headers["x-llm-proxy-deployment"] == served
    sent = mock_upstream.last()["body"]
    if served == "ok":  # the OpenAI deployment got OpenAI's shape: the system prompt a message
        assert "system" not in sent and sent["messages"][0]["role"] == "system"
    else:  # the Anthropic one got the client's bytes
        assert sent["system"] == "Be brief."


def test_a_bad_client_timeout_is_a_400_in_openai_shape(gw: Gateway) -> None:
    resp = httpx.post(
        gw.base_url + "/chat/completions",
        json={"model": "weighted-http", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-llm-proxy-timeout": "soon"},
        timeout=10,
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "x-llm-proxy-timeout"


def test_metrics_count_attempts_retries_and_fallbacks_per_deployment(
    gw: Gateway, doors: Doors
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    doors.ask("http", "retry")
    doors.ask("http", "down")
    text = httpx.get(gw.url + "/metrics", timeout=10).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    attempts = "llm_proxy_route_attempts_total"
    assert value(attempts, model="retry-http", deployment="fails", result="unavailable") >= 1
    assert value(attempts, model="retry-http", deployment="ok", result="ok") >= 1
    assert value("llm_proxy_route_retries_total", model="retry-http", deployment="ok") >= 1
    fallbacks = "llm_proxy_route_fallbacks_total"
    assert value(fallbacks, model="down-http", to="big-http", deployment="big") >= 1
