"""The log record's figures from what the upstream answered (unit level, real decoders)."""

from __future__ import annotations

import time

import msgspec
import pytest
from llm_proxy.calls import Call, Deployment, Outcome, ResponseHead, SimpleSummary, Usage
from llm_proxy.logstore.record import RecordBuilder
from llm_proxy.pricing import PriceTable

ANSWER = (
    b'{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":1000,"completion_tokens":10,"total_tokens":1010,'
    b'"prompt_tokens_details":{"cached_tokens":800}}}'
)


def test_cached_prompt_tokens_are_priced_at_the_cached_rate() -> None:
    usage = msgspec.json.decode(ANSWER, type=ResponseHead).usage
    assert usage is not None and usage.prompt_tokens_details is not None
    call = Call(request_id="r1", door="http", endpoint="chat", body=b"{}", model="gpt-4o-mini")
    call.deployment = Deployment("gpt-4o-mini", "up", "gpt-4o-mini")
    builder = RecordBuilder(PriceTable(), "none")
    record = builder.build(
        call, Outcome(200, usage=usage, response_body=ANSWER), time.time(), 0.01, None
    )
    # gpt-4o-mini: $0.15 / M input, $0.075 / M cached input, $0.60 / M output.
    expected = (200 * 0.15 + 800 * 0.075 + 10 * 0.60) / 1_000_000
    assert record.cost_usd == pytest.approx(expected)
    assert (record.prompt_tokens, record.completion_tokens) == (1000, 10)


def test_record_carries_every_figure_of_the_call() -> None:
    # The builder sets the fields that differ from their defaults one by one: each must land.
    call = Call(request_id="r2", door="grpc", endpoint="chat", body=b"{}", model="alias")
    call.deployment = Deployment("alias", "up", "gpt-4o-mini")
    call.key_id, call.team, call.stream = "key-1", "team-a", True
    call.first_token_s, call.upstream_s, call.cache_status = 0.004, 0.008, "miss"
    outcome = Outcome(429, "rate_limit_error", "slow down sk-caller", usage=None)
    builder = RecordBuilder(PriceTable(), "none")
    # The caller's key goes with the record; the writer masks it (and cleans the text).
    record = builder.build(call, outcome, 1000.0, 0.010, "sk-caller")
    assert msgspec.structs.asdict(record) == {
        "id": "",
        "ts": pytest.approx(999.99),
        "request_id": "r2",
        "door": "grpc",
        "key_id": "key-1",
        "team": "team-a",
        "model": "alias",
        "provider": "up",
        "provider_model": "gpt-4o-mini",
        "endpoint": "chat",
        "stream": True,
        "status": 429,
        "error_type": "rate_limit_error",
        "error_message": "slow down sk-caller",
        "latency_ms": pytest.approx(10.0),
        "upstream_ms": pytest.approx(8.0),
        "overhead_ms": pytest.approx(2.0),
        "ttft_ms": pytest.approx(4.0),
        "prompt_tokens": None,
        "completion_tokens": None,
        "total_tokens": None,
        "tokens_counted": False,
        "cost_usd": None,
        "cache_status": "miss",
        "content": "none",
        "prompt": None,
        "completion": None,
        "tool_calls": None,
        "attempts": None,
        "caller_key": "sk-caller",
    }
    # A plain call leaves the optional fields at their defaults.
    plain = Call(request_id="r3", door="http", endpoint="chat", body=b"{}", model="nowhere")
    record = builder.build(plain, Outcome(404, "invalid_request_error"), 1000.0, 0.001, None)
    assert (record.provider, record.key_id, record.team, record.stream) == (None, None, None, False)
    assert (record.ttft_ms, record.cache_status, record.error_message) == (None, "off", None)


def test_price_is_looked_up_once_per_model_pair_and_names_stay_bounded() -> None:
    prices = PriceTable()
    first = prices.cost(("gpt-4o-mini-2024-07-18", "mini"), 1000, 100)
    assert first == prices.cost(("gpt-4o-mini-2024-07-18", "mini"), 1000, 100)
    assert first == pytest.approx((1000 * 0.15 + 100 * 0.60) / 1_000_000)
    assert prices.cost(("made-up",), 10, 10) is None
    for i in range(3000):  # model names a client made up: priced, not all remembered
        assert prices.cost((f"made-up-{i}",), 10, 10) is None
    assert len(prices._found) <= 1024
    assert prices.cost(("gpt-4o-mini",), 1000, 0) == pytest.approx(1000 * 0.15 / 1_000_000)


def test_record_figures_of_usage_counted_tokens_and_cache_hits() -> None:
    builder = RecordBuilder(PriceTable(), "none")
    deployment = Deployment("mini", "up", "gpt-4o-mini")

    def call(**fields: object) -> Call:
        made = Call(request_id="r", door="http", endpoint="chat", body=b"{}", model="mini")
        made.prompt_json = b'[{"role": "user", "content": "hello there"}]'
        made.deployment = deployment
        for name, value in fields.items():
            setattr(made, name, value)
        return made

    usage = Usage(prompt_tokens=100, completion_tokens=20, total_tokens=120)
    whole = builder.build(call(), Outcome(200, usage=usage), 1000.0, 0.01, None)
    assert (whole.prompt_tokens, whole.completion_tokens, whole.total_tokens) == (100, 20, 120)
    assert not whole.tokens_counted
    assert whole.cost_usd == pytest.approx((100 * 0.15 + 20 * 0.60) / 1_000_000)
    assert (whole.provider, whole.provider_model, whole.cache_status) == (
        "up",
        "gpt-4o-mini",
        "off",
    )

    # A stream without usage: counted by the gateway (the prompt here, the completion by the
    # relay's summary).
    summary = SimpleSummary(text="hi", completion_tokens=7, usage_counted=True, done=True)
    outcome = Outcome(200, summary=summary)
    counted = builder.build(call(stream=True, first_token_s=0.002), outcome, 1000.0, 0.01, None)
    assert counted.tokens_counted and counted.stream and counted.ttft_ms == pytest.approx(2.0)
    assert counted.completion_tokens == 7 and counted.prompt_tokens is not None
    assert counted.total_tokens == counted.prompt_tokens + 7 and counted.cost_usd is not None

    # A cache hit costs nothing upstream.
    hit = builder.build(call(cache_status="hit"), Outcome(200, usage=usage), 1000.0, 0.01, None)
    assert (hit.cache_status, hit.cost_usd, hit.total_tokens) == ("hit", 0.0, 120)
