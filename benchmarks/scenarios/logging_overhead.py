"""Gateway overhead with request logging off vs at `full` (SQLite store, metrics on in both).

Both gateways run at once, each pinned to the gateway core (taskset), the mock upstream and the
load on the others, and every measurement alternates between them (off, full, off, full, ...)
so a noisy minute hits both. For each mode: N sequential requests on one keep-alive connection
(added latency = gateway minus direct, and the gateway's own x-llm-proxy-overhead-ms), then wrk
with 16 connections (requests/s, and CPU microseconds per request from /proc, the steadier
figure on a shared machine).

    python -m benchmarks.scenarios.logging_overhead [--requests 3000] [--seconds 5] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from ..harness import Served, bench_config, cpu_seconds, mock_upstream, serve_gateway
from ..load import BODY, median_run, wrk

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


def start(stack: ExitStack, up: str, name: str, logging: dict[str, Any], tmp: Path) -> Served:
    settings = {
        **logging,
        "store": f"sqlite:///{tmp / f'log-{name}.db'}",
        "spool_path": str(tmp / f"log-{name}.spool"),
    }
    return stack.enter_context(serve_gateway(bench_config(up, logging=settings), tmp))


def measure(up: str, n: int, seconds: float, runs: int) -> dict[str, dict[str, Any]]:
    modes = {"off": {"enabled": False}, "full": {"content": "full"}}
    with tempfile.TemporaryDirectory() as tmp_, ExitStack() as stack:
        gws = {name: start(stack, up, name, logging, Path(tmp_)) for name, logging in modes.items()}
        direct = up + "/v1/chat/completions"
        d_took, _ = sequential(direct, n)
        seq = {name: sequential(gw.url + "/v1/chat/completions", n) for name, gw in gws.items()}
        loads: dict[str, list[Any]] = {name: [] for name in gws}
        cpu: dict[str, list[float]] = {name: [] for name in gws}
        for _ in range(runs):
            for name, gw in gws.items():
                before = cpu_seconds(gw.pids)
                r = wrk(gw.url + "/v1/chat/completions", BODY, connections=16, seconds=seconds)
                cpu[name].append((cpu_seconds(gw.pids) - before) / max(r.requests, 1) * 1e6)
                loads[name].append(r)
    out = {}
    for name in gws:
        g_took, g_over = seq[name]
        load, spread = median_run(loads[name])
        out[name] = {
            "direct_p50_ms": statistics.median(d_took),
            "gateway_p50_ms": statistics.median(g_took),
            "added_p50_ms": statistics.median(g_took) - statistics.median(d_took),
            "added_mean_ms": statistics.fmean(g_took) - statistics.fmean(d_took),
            "overhead_header_p50_ms": statistics.median(g_over) if g_over else None,
            "rps_16": load.rps,
            "p99_16_ms": load.p99_ms,
            "rps_spread": spread,
            "cpu_us_per_request": statistics.median(cpu[name]),
            "cpu_us_runs": cpu[name],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with mock_upstream() as up:
        results = measure(up, args.requests, args.seconds, args.runs)
    print(json.dumps(results, indent=2))
    off, full = results["off"], results["full"]
    rows = [
        "| logging | added p50 ms (seq) | added mean ms (seq) | overhead header p50 ms "
        "| req/s, 16 conns | p99 ms, 16 conns | CPU µs/req, 16 conns |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        rows.append(
            f"| {name} | {r['added_p50_ms']:.3f} | {r['added_mean_ms']:.3f} | "
            f"{r['overhead_header_p50_ms'] or 0:.3f} | {r['rps_16']:.0f} | {r['p99_16_ms']:.2f} | "
            f"{r['cpu_us_per_request']:.0f} |"
        )
    print("\n".join(rows))
    print(
        f"full vs off: added p50 {full['added_p50_ms'] / off['added_p50_ms'] - 1:+.1%}, "
        f"req/s {full['rps_16'] / off['rps_16'] - 1:+.1%}, CPU per request "
        f"{full['cpu_us_per_request'] / off['cpu_us_per_request'] - 1:+.1%}"
    )


if __name__ == "__main__":
    main()
