"""Gateway overhead with request logging off vs at `full` (SQLite store, metrics on in both).

Gateway pinned to one core (taskset), mock upstream and the load on the others. For each mode:
N sequential requests on one keep-alive connection (added latency = gateway minus direct, and
the gateway's own x-llm-proxy-overhead-ms), then wrk with 16 connections (requests/s).

    python benchmarks/logging_overhead.py [--requests 3000] [--seconds 5] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import bench_config, gateway, median_run, mock_upstream, wrk

BODY = json.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Summarise the plot of Hamlet in two sentences."},
        ],
        "max_tokens": 64,
    }
).encode()
HEADERS = {"content-type": "application/json"}


def sequential(url: str, n: int) -> tuple[list[float], list[float]]:
    """Latencies (ms) of n sequential requests, and the gateway's overhead header (ms)."""
    took, overhead = [], []
    with httpx.Client(timeout=10) as client:
        for _ in range(200):
            client.post(url, content=BODY, headers=HEADERS)
        for _ in range(n):
            started = time.perf_counter()
            r = client.post(url, content=BODY, headers=HEADERS)
            took.append((time.perf_counter() - started) * 1000)
            if "x-llm-proxy-overhead-ms" in r.headers:
                overhead.append(float(r.headers["x-llm-proxy-overhead-ms"]))
    return took, overhead


def measure(up: str, logging: dict[str, Any], n: int, seconds: float, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = {
            **logging,
            "store": f"sqlite:///{Path(tmp) / 'log.db'}",
            "spool_path": str(Path(tmp) / "log.spool"),
        }
        with gateway(bench_config(up, logging=settings)) as gw:
            through = gw + "/v1/chat/completions"
            direct = up + "/v1/chat/completions"
            d_took, _ = sequential(direct, n)
            g_took, g_over = sequential(through, n)
            load, spread = median_run(
                [wrk(through, BODY, connections=16, seconds=seconds) for _ in range(runs)]
            )
    return {
        "direct_p50_ms": statistics.median(d_took),
        "gateway_p50_ms": statistics.median(g_took),
        "added_p50_ms": statistics.median(g_took) - statistics.median(d_took),
        "added_mean_ms": statistics.fmean(g_took) - statistics.fmean(d_took),
        "overhead_header_p50_ms": statistics.median(g_over) if g_over else None,
        "rps_16": load.rps,
        "p99_16_ms": load.p99_ms,
        "rps_spread": spread,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = {}
    with mock_upstream() as up:
        for name, logging in (("off", {"enabled": False}), ("full", {"content": "full"})):
            results[name] = measure(up, logging, args.requests, args.seconds, args.runs)
    print(json.dumps(results, indent=2))
    off, full = results["off"], results["full"]
    rows = [
        "| logging | added p50 ms (seq) | added mean ms (seq) | overhead header p50 ms "
        "| req/s, 16 conns | p99 ms, 16 conns |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        rows.append(
            f"| {name} | {r['added_p50_ms']:.3f} | {r['added_mean_ms']:.3f} | "
            f"{r['overhead_header_p50_ms'] or 0:.3f} | {r['rps_16']:.0f} | {r['p99_16_ms']:.2f} |"
        )
    print("\n".join(rows))
    print(
        f"full vs off: added p50 {full['added_p50_ms'] / off['added_p50_ms'] - 1:+.1%}, "
        f"req/s {full['rps_16'] / off['rps_16'] - 1:+.1%}"
    )


if __name__ == "__main__":
    main()
