"""Rust core vs pure Python on the gateway's hot path: cache keys, token counts, SSE relay.

The Python side is the references the parity tests hold the core against
(tests/support/reference.py); each pair is checked to give the same answer before it is timed.

    python -m benchmarks.scenarios.hotpath [--json FILE] [--seconds S]

Prints a markdown table of ops/s with Rust/Python ratios and the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tiktoken
from llm_proxy import _core

from tests.support.reference import (
    python_encoding,
    reference_cache_key,
    reference_chat_tokens,
    reference_events,
    reference_summary,
)

READ_SIZE = 1400
MODEL = "gpt-4o-mini"


PROSE = (
    "The gateway sits between applications and model providers. It adds caching, logging, "
    "routing and policy, and must cost almost nothing in latency. Streaming responses are "
    "forwarded event by event; usage is accounted after the response is on its way. "
    'Ключевые слова, 日本語の文章, émojis 🚀 and code like `fn main() { println!("hi"); }` '
    "appear in real prompts too.\n"
)


def chat_request(target_bytes: int) -> bytes:
    """A realistic chat-completions body of about `target_bytes`."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a concise assistant. " * 4}
    ]
    body: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "max_tokens": 512,
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather for a city",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                        "required": ["city"],
                    },
                },
            }
        ],
        "messages": messages,
        "user": "user-1234",
    }
    turn = 0
    while len(json.dumps(body, ensure_ascii=False).encode()) < target_bytes:
        role = "user" if turn % 2 == 0 else "assistant"
        messages.append({"role": role, "content": PROSE[: 120 + (turn * 37) % 200]})
        turn += 1
    return json.dumps(body, ensure_ascii=False).encode()


def text_of_tokens(tokens: int, enc: tiktoken.Encoding) -> str:
    text = PROSE
    while len(enc.encode_ordinary(text)) < tokens:
        text += PROSE
    ids = enc.encode_ordinary(text)[:tokens]
    return enc.decode(ids)


def sse_stream(events: int) -> bytes:
    out = []
    for i in range(events - 2):
        chunk = {
            "id": "chatcmpl-AbC123xyz",
            "object": "chat.completion.chunk",
            "created": 1732800000,
            "model": "gpt-4o-mini-2024-07-18",
            "system_fingerprint": "fp_0ba0d124f1",
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": f" token{i} é"},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
            "usage": None,
        }
        out.append(b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n")
    final = {
        "id": "chatcmpl-AbC123xyz",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {
            "prompt_tokens": 50,
            "completion_tokens": events - 2,
            "total_tokens": events + 48,
        },
    }
    out.append(b"data: " + json.dumps(final).encode() + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def py_relay(reads: list[bytes]) -> tuple[list[bytes], dict[str, Any]]:
    """The reference relay: the events of the whole stream, then what they add up to."""
    events = reference_events(b"".join(reads))
    return events, reference_summary("openai", events, MODEL)


def rust_relay(reads: list[bytes]) -> tuple[list[bytes], _core.StreamSummary]:
    relay = _core.SseRelay("openai", model=MODEL)
    forwarded: list[bytes] = []
    for chunk in reads:
        forwarded.extend(relay.feed(chunk))
    return forwarded, relay.finish()


def summary_dict(s: _core.StreamSummary) -> dict[str, Any]:
    """A StreamSummary in the reference's terms."""
    return {
        "text": s.text,
        "tool_calls": json.loads(s.tool_calls_json),
        "finish_reason": s.finish_reason,
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "events": s.events,
        "done": s.done,
    }


def calibrate(fn: Callable[[], object], seconds: float) -> int:
    """How many calls take about `seconds`."""
    fn()
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= 0.02:
            return max(1, int(n * seconds / elapsed))
        n *= 2


def compare(
    rust_fn: Callable[[], object], py_fn: Callable[[], object], seconds: float
) -> tuple[float, float]:
    """Best ops/s of each over 7 alternating rounds, so load on a shared machine hits both alike."""
    fns = (rust_fn, py_fn)
    counts = [calibrate(fn, seconds / 7) for fn in fns]
    best = [float("inf"), float("inf")]
    for _ in range(7):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            for _ in range(counts[i]):
                fn()
            best[i] = min(best[i], (time.perf_counter() - start) / counts[i])
    return 1.0 / best[0], 1.0 / best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args()

    o200k = python_encoding("o200k_base")
    small, large = chat_request(2 * 1024), chat_request(30 * 1024)
    text_500, text_20k = text_of_tokens(500, o200k), text_of_tokens(20_000, o200k)
    stream = sse_stream(200)
    reads = [stream[i : i + READ_SIZE] for i in range(0, len(stream), READ_SIZE)]
    messages = json.dumps(json.loads(small)["messages"]).encode()

    def py_chat_tokens() -> int:
        return reference_chat_tokens(json.loads(messages), "o200k_base")

    # Same answers before timing.
    for body in (small, large):
        assert _core.cache_key(body, "ns") == reference_cache_key(body, "ns")
    assert _core.count_tokens(text_20k) == len(o200k.encode_ordinary(text_20k))
    assert py_chat_tokens() == _core.count_chat_tokens(messages, MODEL)
    events, summary = rust_relay(reads)
    assert summary.done and (events, summary_dict(summary)) == py_relay(reads)

    cases: list[tuple[str, str, Callable[[], object], Callable[[], object], float | None]] = [
        (
            "cache_key",
            f"chat request {len(small) / 1024:.1f} KB",
            lambda: _core.cache_key(small, "ns"),
            lambda: reference_cache_key(small, "ns"),
            5.0,
        ),
        (
            "cache_key",
            f"chat request {len(large) / 1024:.1f} KB",
            lambda: _core.cache_key(large, "ns"),
            lambda: reference_cache_key(large, "ns"),
            None,
        ),
        (
            "count_tokens",
            "500-token text",
            lambda: _core.count_tokens(text_500),
            lambda: len(o200k.encode_ordinary(text_500)),
            1.0,
        ),
        (
            "count_tokens",
            "20k-token text",
            lambda: _core.count_tokens(text_20k),
            lambda: len(o200k.encode_ordinary(text_20k)),
            1.0,
        ),
        (
            "count_chat_tokens",
            f"messages of the {len(small) / 1024:.1f} KB request",
            lambda: _core.count_chat_tokens(messages, MODEL),
            py_chat_tokens,
            1.0,
        ),
        (
            "SseRelay",
            f"200 events, {len(stream) / 1024:.1f} KB in {len(reads)} reads of 1.4 KB",
            lambda: rust_relay(reads),
            lambda: py_relay(reads),
            5.0,
        ),
    ]

    rows = []
    for name, what, rust_fn, py_fn, target in cases:
        rust, py = compare(rust_fn, py_fn, args.seconds)
        ratio = rust / py
        rows.append(
            {
                "operation": name,
                "input": what,
                "rust_ops_s": round(rust, 1),
                "python_ops_s": round(py, 1),
                "ratio": round(ratio, 2),
                "target": target,
                "met": None if target is None else ratio >= target,
            }
        )

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"Hot path, {datetime.now(UTC):%Y-%m-%d}, {machine}\n")
    print("| operation | input | Rust ops/s | Python ops/s | Rust / Python | target |")
    print("|---|---|---:|---:|---:|---|")
    for r in rows:
        target = (
            "—"
            if r["target"] is None
            else f"≥ {r['target']:g}x ({'met' if r['met'] else 'MISSED'})"
        )
        rust, py = f"{r['rust_ops_s']:,.0f}", f"{r['python_ops_s']:,.0f}"
        print(f"| {r['operation']} | {r['input']} | {rust} | {py} | {r['ratio']:.1f}x | {target} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"date": f"{datetime.now(UTC):%Y-%m-%d}", "machine": machine, "results": rows},
                indent=2,
            )
        )
    sys.exit(0)


if __name__ == "__main__":
    main()
