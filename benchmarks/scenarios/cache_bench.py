"""Cache-hit throughput and latency: the gateway on one core, wrk on the other.

    python -m benchmarks.scenarios.cache_bench [--seconds 5] [--runs 3]

Every measured request is a hit: the entry is primed first, and the mock upstream's request
counter must not move during a run. Rows: memory and Redis backends, whole and streamed hits,
1 and 64 client connections. Redis is a private redis-server (on the load generator's core)
unless REDIS_URL is set.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from ..harness import (
    GATEWAY_CPU,
    OTHER_CPUS,
    bench_config,
    free_port,
    gateway,
    mock_upstream,
    pin,
    stop,
)
from ..load import LoadResult, median_run, mock_requests, prime, wrk

BODY = json.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant for a support desk."},
            {"role": "user", "content": "How do I reset my password? Answer in two sentences."},
        ],
        "temperature": 0,
        "max_tokens": 64,
    }
).encode()
STREAM_BODY = BODY[:-1] + b', "stream": true}'


@contextmanager
def redis_server() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed and REDIS_URL is not set")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [*pin(OTHER_CPUS), binary, "--port", str(port), "--bind", "127.0.0.1"]
        cmd += ["--save", "", "--appendonly", "no", "--dir", tmp]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop(proc)


def measure(
    url: str, upstream: str, body: bytes, connections: int, seconds: int, runs: int
) -> tuple[LoadResult, float]:
    prime(url, body)
    before = mock_requests(upstream)
    results = [
        wrk(url + "/v1/chat/completions", body, connections=connections, seconds=seconds)
        for _ in range(runs)
    ]
    if mock_requests(upstream) != before:
        raise RuntimeError("a measured request reached the upstream: not every request was a hit")
    return median_run(results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    rows: list[tuple[str, str, int, LoadResult, float]] = []
    with mock_upstream() as upstream, redis_server() as redis_url:
        prefix = f"llm-proxy-bench:{uuid.uuid4().hex}:"
        backends = {
            "memory": {"enabled": True, "backend": "memory"},
            "redis": {
                "enabled": True,
                "backend": "redis",
                "redis_url": redis_url,
                "key_prefix": prefix,
                # A scheduling stall on a busy 2-core box must not turn a hit into a miss.
                "timeout_s": 1.0,
            },
        }
        for backend, cache in backends.items():
            with gateway(bench_config(upstream, cache=cache)) as url:
                for kind, body in (("whole", BODY), ("stream", STREAM_BODY)):
                    for connections in (1, 64):
                        result, spread = measure(
                            url, upstream, body, connections, args.seconds, args.runs
                        )
                        rows.append((backend, kind, connections, result, spread))
                        print(
                            f"{backend:6} {kind:6} c={connections:<3} {result.rps:9.0f} req/s  "
                            f"p50 {result.p50_ms:.3f} ms  p99 {result.p99_ms:.3f} ms  "
                            f"errors {result.errors}  spread {spread:.0%}",
                            flush=True,
                        )
        if os.environ.get("REDIS_URL"):  # a private server goes away with its keys
            import redis

            client = redis.Redis.from_url(redis_url)
            keys = list(client.scan_iter(match=prefix + "*"))
            if keys:
                client.delete(*keys)

    cpu = platform.processor() or platform.machine()
    print()
    print(
        f"{datetime.date.today().isoformat()}, {os.cpu_count()} cores ({cpu}), gateway on core "
        f"{GATEWAY_CPU}, wrk on {','.join(map(str, OTHER_CPUS))}, {args.runs} runs x "
        f"{args.seconds:g} s, median run"
    )
    print()
    print("| backend | answer | clients | hits/s | p50 ms | p90 ms | p99 ms | errors |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for backend, kind, connections, r, _ in rows:
        print(
            f"| {backend} | {kind} | {connections} | {r.rps:,.0f} | {r.p50_ms:.3f} | "
            f"{r.p90_ms:.3f} | {r.p99_ms:.3f} | {r.errors} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
