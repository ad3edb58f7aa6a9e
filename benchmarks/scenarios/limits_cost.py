"""CPU per call of the `limits` stage, in process: reserve at admission and settle at the end.

A key with rpm, tpm and a monthly budget (three items: two windows and a budget counter),
timed with the process's CPU clock, on the memory backend and on Redis (one EVALSHA per
call, settles batched). The Redis figures include the client's own work on the event loop;
the round trip's wall time at one caller is timed beside them.

    python -m benchmarks.scenarios.limits_cost [--calls N] [--runs R] [--redis URL] [--json F]

Targets (issue 19): the memory backend adds <= 10 µs CPU per call; the Redis backend adds one
round trip and no more (<= 0.1 ms p50 at one client on loopback).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from typing import Any

from llm_proxy.calls import Deployment, Outcome, decode_call
from llm_proxy.config import parse_config
from llm_proxy.keys.model import KeyRecord, sha256_hex
from llm_proxy.keys.table import KeyTable
from llm_proxy.limits.spec import parse_budgets, parse_limits
from llm_proxy.limits.stage import Limiter
from llm_proxy.pricing import PriceTable
from llm_proxy.wire.openai import Usage

TARGET_MEMORY_US = 10.0
TARGET_REDIS_P50_MS = 0.1
BODY = (
    b'{"model":"gpt-4o-mini","max_tokens":64,"messages":[{"role":"user",'
    b'"content":"Say something short about rate limits."}]}'
)


def _limiter(backend: str, url: str, prefix: str) -> tuple[Limiter, str]:
    config = parse_config(
        {
            "providers": {"m": {"kind": "mock"}},
            "models": {"gpt-4o-mini": {"provider": "m", "model": "gpt-4o-mini"}},
            "limits": {"backend": backend, "redis_url": url, "key_prefix": prefix},
        }
    )
    key = KeyRecord(
        id="bench1",
        secret_sha256=sha256_hex("x"),
        limits=parse_limits({"rpm": 10**9, "tpm": 10**12}),
        budgets=parse_budgets([{"usd": 1e9, "period": "monthly"}]),
    )
    table = KeyTable(None, [key], {}, {})
    table.load()
    return Limiter(config, PriceTable.from_config(config), table), key.id


def _call(key_id: str) -> Any:
    call = decode_call("chat", BODY, door="http", request_id="r", headers={})
    call.key_id = key_id
    call.deployment = Deployment("gpt-4o-mini", "m", "gpt-4o-mini")
    return call


_OUTCOME = Outcome(200, usage=Usage(14, 20, 34))


async def _measure(backend: str, url: str, calls: int, runs: int) -> dict[str, Any]:
    prefix = f"llm-proxy-bench:{uuid.uuid4().hex}:"
    limiter, key_id = _limiter(backend, url, prefix)
    await limiter.start()
    try:
        cpu, p50 = [], []
        for _ in range(runs):
            walls = []
            start = time.process_time()
            for _ in range(calls):
                call = _call(key_id)
                t0 = time.perf_counter()
                pending = limiter(call)
                if pending is not None:
                    await pending
                walls.append(time.perf_counter() - t0)
                limiter.settle(call, _OUTCOME)
            await asyncio.sleep(0.05)  # the last settles are flushed
            cpu.append((time.process_time() - start) / calls * 1e6)
            p50.append(statistics.median(walls) * 1000)
        # The same loop without the stage: what making the Call costs.
        start = time.process_time()
        for _ in range(calls):
            _call(key_id)
        base = (time.process_time() - start) / calls * 1e6
        return {
            "cpu_us_per_call": statistics.median(cpu) - base,
            "admission_p50_ms": statistics.median(p50),
            "calls_per_run": calls,
            "runs": runs,
        }
    finally:
        await limiter.close()
        if backend == "redis":
            import redis

            client = redis.Redis.from_url(url)
            keys = list(client.scan_iter(match=prefix + "*"))
            if keys:
                client.delete(*keys)
            client.close()


def run(calls: int = 20_000, runs: int = 5, redis_url: str | None = None) -> dict[str, Any]:
    import uvloop

    result: dict[str, Any] = {
        "target_memory_us": TARGET_MEMORY_US,
        "target_redis_p50_ms": TARGET_REDIS_P50_MS,
    }
    result["memory"] = uvloop.run(_measure("memory", "", calls, runs))
    url = redis_url or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    try:
        result["redis"] = uvloop.run(_measure("redis", url, max(1000, calls // 4), runs))
    except Exception as exc:  # no Redis here: the memory figures still stand
        result["redis"] = {"skipped": f"{type(exc).__name__}: {exc}"}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--redis")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args(argv)
    result = run(args.calls, args.runs, args.redis)
    mem, red = result["memory"], result["redis"]
    print(f"limits, memory backend: {mem['cpu_us_per_call']:.2f} µs CPU/call "
          f"(target <= {TARGET_MEMORY_US:.0f})")  # fmt: skip
    if "skipped" in red:
        print(f"limits, redis backend: skipped ({red['skipped']})")
    else:
        print(f"limits, redis backend: {red['cpu_us_per_call']:.2f} µs CPU/call, admission p50 "
              f"{red['admission_p50_ms']:.3f} ms (target <= {TARGET_REDIS_P50_MS})")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
