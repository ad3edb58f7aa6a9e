"""Added latency and throughput of the HTTP gateway in front of the mock upstream.

Gateway pinned to one core; wrk and the mock upstream on the other. Added latency is the
gateway's figure minus calling the mock directly, in the same run.

    python -m benchmarks.scenarios.overhead [--seconds 5] [--runs 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..harness import bench_config, gateway, mock_upstream
from ..load import BODY, median_run, stream_latency, wrk


def run(seconds: float, runs: int, config_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with mock_upstream() as up:
        direct = up + "/v1/chat/completions"
        with gateway(bench_config(up, **(config_extra or {}))) as gw:
            through = gw + "/v1/chat/completions"
            wrk(through, BODY, connections=8, seconds=1)  # warm-up
            for clients in (1, 16, 64):
                d, d_spread = median_run(
                    [wrk(direct, BODY, connections=clients, seconds=seconds) for _ in range(runs)]
                )
                g, g_spread = median_run(
                    [wrk(through, BODY, connections=clients, seconds=seconds) for _ in range(runs)]
                )
                results[f"{clients}_clients"] = {
                    "direct": d.__dict__,
                    "gateway": g.__dict__,
                    "added_p50_ms": g.p50_ms - d.p50_ms,
                    "added_p99_ms": g.p99_ms - d.p99_ms,
                    "spread": g_spread,
                    "direct_spread": d_spread,
                }
            d_first, d_total = stream_latency(up)
            g_first, g_total = stream_latency(gw)
            results["stream"] = {
                "direct_ttfb_ms": d_first,
                "gateway_ttfb_ms": g_first,
                "added_ttfb_ms": g_first - d_first,
                "direct_total_ms": d_total,
                "gateway_total_ms": g_total,
                "added_total_ms": g_total - d_total,
            }
    return results


def table(results: dict[str, Any]) -> str:
    rows = [
        "| scenario | direct req/s | gateway req/s | direct p50 ms | gateway p50 ms "
        "| added p50 ms | added p99 ms | spread |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for clients in (1, 16, 64):
        r = results[f"{clients}_clients"]
        rows.append(
            f"| {clients} client(s) | {r['direct']['rps']:.0f} | {r['gateway']['rps']:.0f} | "
            f"{r['direct']['p50_ms']:.3f} | {r['gateway']['p50_ms']:.3f} | "
            f"{r['added_p50_ms']:.3f} | {r['added_p99_ms']:.3f} | {r['spread']:.0%} |"
        )
    s = results["stream"]
    rows.append(
        f"| stream, 1 client: time to first event | | | {s['direct_ttfb_ms']:.3f} | "
        f"{s['gateway_ttfb_ms']:.3f} | {s['added_ttfb_ms']:.3f} | | |"
    )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    results = run(args.seconds, args.runs)
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
