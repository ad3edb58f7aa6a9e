"""`make bench`'s Messages rows: `/v1/messages` (Anthropic in, the OpenAI-format mock out)
beside `/v1/chat/completions`, the same gateway, the same answers, in interleaved rounds.

Three pairs: whole answers; streams as the mock sends them by default (8 text events); and
long streams (64 text events). The mock writes a stream's events back to back, so one
upstream read usually holds several and they reach the translator as one item; what one
more item costs (a real upstream's events arrive apart) is the in-process figure. Each row
is the gateway's CPU time (all its processes, from /proc) over the run divided by the
requests wrk completed; `added` is the median over the rounds of (messages minus chat
completions in the same round). The issue's goal: the translation adds at most 30 us of
CPU per call. The in-process figures (`messages_translation`) come with them: the
translation alone, without the server and the kernel around it.

    python -m benchmarks.scenarios.messages_bench [--seconds 5] [--runs 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ..harness import OTHER_CPUS, Served, llm_proxy, mock
from ..load import BODY, CHAT, STREAM_BODY, load, summarise, wrk
from . import messages_translation

MESSAGES = "/v1/messages"
MESSAGES_BODY = json.dumps(
    {
        "model": "gpt-4o-mini",
        "system": "You are a helpful assistant.",
        "messages": [
            {"role": "user", "content": "Summarise the plot of Hamlet in two sentences."},
        ],
        "max_tokens": 64,
    }
).encode()
MESSAGES_STREAM_BODY = MESSAGES_BODY[:-1] + b', "stream": true}'
CLIENTS = 16
LONG_CHUNKS = 64
# The pairs, as (kind, which gateway, chat completions body, messages body).
PAIRS = (
    ("whole", "short", BODY, MESSAGES_BODY),
    ("streamed", "short", STREAM_BODY, MESSAGES_STREAM_BODY),
    (f"streamed, {LONG_CHUNKS} events", "long", STREAM_BODY, MESSAGES_STREAM_BODY),
)


def check(target: Served, path: str, body: bytes) -> None:
    """One request must succeed before it is timed (a 4xx would time the error path)."""
    r = wrk(target.url + path, body, connections=1, seconds=1)
    if r.errors or not r.requests:
        raise RuntimeError(f"{path} through the gateway failed ({r.errors} errors)")


def measure(seconds: float, runs: int, clients: int = CLIENTS) -> dict[str, Any]:
    """The rows: per pair, chat completions and messages (median run), and the CPU added."""
    out: dict[str, Any] = {"clients": clients, "rows": {}}
    with tempfile.TemporaryDirectory(prefix="llm-proxy-bench-") as tmp_, ExitStack() as stack:
        tmp = Path(tmp_)
        gateways = {
            "short": stack.enter_context(llm_proxy(stack.enter_context(mock(OTHER_CPUS)).url, tmp)),
            "long": stack.enter_context(
                llm_proxy(
                    stack.enter_context(mock(OTHER_CPUS, chunks=LONG_CHUNKS)).url,
                    tmp,
                )
            ),
        }
        for _, gateway, chat_body, messages_body in PAIRS:
            check(gateways[gateway], CHAT, chat_body)
            check(gateways[gateway], MESSAGES, messages_body)
        runs_by: dict[str, list[dict[str, Any]]] = {}
        for _ in range(runs):
            for kind, gateway, chat_body, messages_body in PAIRS:
                target = gateways[gateway]
                for api, path, body in (
                    ("chat", CHAT, chat_body),
                    ("messages", MESSAGES, messages_body),
                ):
                    r = load(target, body, clients, seconds, path=path)
                    runs_by.setdefault(f"{api} {kind}", []).append(r)
        for kind, *_ in PAIRS:
            chat, messages = runs_by[f"chat {kind}"], runs_by[f"messages {kind}"]
            added = [
                (m["cpu_us_per_request"] or 0.0) - (c["cpu_us_per_request"] or 0.0)
                for c, m in zip(chat, messages, strict=True)
            ]
            out["rows"][kind] = {
                "chat": summarise(chat),
                "messages": summarise(messages),
                "chat_cpu_us": statistics.median(c["cpu_us_per_request"] or 0.0 for c in chat),
                "messages_cpu_us": statistics.median(
                    m["cpu_us_per_request"] or 0.0 for m in messages
                ),
                "added_cpu_us": statistics.median(added),
                "added_cpu_us_runs": added,
            }
    return out


def run(seconds: float, runs: int, in_process_s: float = 1.0) -> dict[str, Any]:
    """Through the gateway (`measure`) and in process (`messages_translation.measure`)."""
    result = measure(seconds, runs)
    result["in_process"] = {
        str(chunks): messages_translation.measure(in_process_s, chunks)
        for chunks in (8, LONG_CHUNKS)
    }
    return result


def markdown(result: dict[str, Any]) -> str:
    """The section's tables."""
    lines = [
        f"Through the gateway, {result['clients']} clients (wrk), CPU µs per call of the "
        "gateway's processes; added = median over the rounds of (messages - chat):",
        "",
        "| call | chat completions req/s | CPU µs/call | messages req/s | CPU µs/call "
        "| added CPU µs/call | goal |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for kind, row in result["rows"].items():
        added = row["added_cpu_us"]
        verdict = "met" if added <= messages_translation.GOAL_US else "**MISSED**"
        lines.append(
            f"| {kind} | {row['chat']['rps']:,.0f} | {row['chat_cpu_us']:.0f} "
            f"| {row['messages']['rps']:,.0f} | {row['messages_cpu_us']:.0f} "
            f"| {added:+.0f} | ≤ {messages_translation.GOAL_US:.0f} ({verdict}) |"
        )
    inproc = result.get("in_process") or {}
    if inproc:
        lines += [
            "",
            "In process (the door's decode and translation alone, one item per event, best of "
            "5 slices):",
            "",
            "| call | chat completions | messages | added |",
            "|---|---:|---:|---:|",
        ]
        for chunks, rows in inproc.items():
            for kind, row in rows.items():
                if not kind.startswith("messages"):
                    continue
                label = kind if "whole" in kind else f"{kind}, {chunks} events"
                if "whole" in kind and chunks != next(iter(inproc)):
                    continue
                lines.append(
                    f"| {label} | {row['chat_us']:.1f} µs | {row['api_us']:.1f} µs "
                    f"| {row['added_us']:.1f} µs |"
                )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="rounds")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    result = run(args.seconds, args.runs)
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
