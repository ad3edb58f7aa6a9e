"""The log record's figures from what the upstream answered (unit level, real decoders)."""

from __future__ import annotations

import time

import msgspec
import pytest
from llm_proxy.calls import Call, Deployment, Outcome, ResponseHead
from llm_proxy.observe.prices import PriceTable
from llm_proxy.observe.record import RecordBuilder
from llm_proxy.observe.redact import SecretMask

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
    builder = RecordBuilder(PriceTable(), "none", SecretMask([]))
    record = builder.build(
        call, Outcome(200, usage=usage, response_body=ANSWER), time.time(), 0.01, None
    )
    # gpt-4o-mini: $0.15 / M input, $0.075 / M cached input, $0.60 / M output.
    expected = (200 * 0.15 + 800 * 0.075 + 10 * 0.60) / 1_000_000
    assert record.cost_usd == pytest.approx(expected)
    assert (record.prompt_tokens, record.completion_tokens) == (1000, 10)
