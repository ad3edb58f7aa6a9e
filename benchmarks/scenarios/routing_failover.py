"""A group of three deployments with one failing half of its calls, against three healthy ones.

    python -m benchmarks.scenarios.routing_failover [--calls 3000] [--clients 8] [--delay-ms 20]

The mock upstream answers after `--delay-ms`; the `flaky` deployment fails half of its calls
(x-mock-fail-ratio: 0.5, answered at once). `--clients` concurrent HTTP clients send whole
chat calls to each group in turn (the gateway on its core, the mock and the clients on the
others). Reported: client errors, calls that needed a retry, and latency percentiles. The
issue's target: 0 errors, and p99 at most one backoff step (50 ms) above the healthy group's.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httpx

from ..harness import gateway, mock_upstream

BODY = {"model": "", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}


def config(upstream: str) -> dict[str, Any]:
    def provider(headers: dict[str, str]) -> dict[str, Any]:
        return {"kind": "openai", "base_url": upstream + "/v1", "headers": headers}

    def dep(name: str) -> dict[str, Any]:
        return {"provider": name, "model": "gpt-4o-mini", "name": name}

    return {
        "server": {"shutdown_grace_s": 2},
        "logging": {"enabled": False},
        "providers": {
            "a": provider({}),
            "b": provider({}),
            "c": provider({}),
            "flaky": provider({"x-mock-fail-ratio": "0.5"}),
        },
        "models": {
            "healthy": {"deployments": [dep("a"), dep("b"), dep("c")]},
            "flaky": {"deployments": [dep("a"), dep("b"), dep("flaky")]},
        },
    }


async def load(url: str, model: str, calls: int, clients: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors = retried = 0
    body = {**BODY, "model": model}
    remaining = calls

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal remaining, errors, retried
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            resp = await http.post("/v1/chat/completions", json=body)
            latencies.append(time.perf_counter() - started)
            if resp.status_code != 200:
                errors += 1
            elif resp.headers.get("x-llm-proxy-attempts") != "1":
                retried += 1

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000.0

    return {
        "calls": len(latencies),
        "errors": errors,
        "retried": retried,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] * 1000.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--delay-ms", type=int, default=20)
    args = parser.parse_args()
    with mock_upstream(args.delay_ms) as upstream, gateway(config(upstream)) as url:
        for model in ("healthy", "flaky", "healthy", "flaky"):
            r = asyncio.run(load(url, model, args.calls, args.clients))
            print(
                f"{model:<8} calls {r['calls']:>5}  errors {r['errors']:>3}  "
                f"retried {r['retried']:>4}  p50 {r['p50_ms']:7.2f} ms  "
                f"p99 {r['p99_ms']:7.2f} ms  max {r['max_ms']:7.2f} ms"
            )


if __name__ == "__main__":
    main()
