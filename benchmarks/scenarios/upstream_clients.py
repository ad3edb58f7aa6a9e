"""httpx vs aiohttp vs our own transport as the upstream client, through one minimal proxy.

python -m benchmarks.scenarios.upstream_clients [--seconds 5]
"""

from __future__ import annotations

import argparse

from ..harness import mock_upstream, proxy_floor
from ..load import BODY, CHAT, wrk


def measure(client: str, upstream: str, seconds: float) -> dict[str, float]:
    """`apps/min_proxy.py` with `client` on the gateway's core: added p50 at 1, req/s at 64."""
    with proxy_floor(upstream, client) as proxy:
        url = proxy.url + CHAT
        wrk(url, BODY, connections=8, seconds=1)
        one = wrk(url, BODY, connections=1, seconds=seconds)
        many = wrk(url, BODY, connections=64, seconds=seconds)
        return {"p50_1_ms": one.p50_ms, "rps_64": many.rps}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    with mock_upstream() as up:
        direct = wrk(up + CHAT, BODY, connections=1, seconds=args.seconds)
        print("| client | p50 added at 1 client (ms) | req/s at 64 clients |\n|---|---|---|")
        for client in ("httpx", "aiohttp", "llm-proxy"):
            r = measure(client, up, args.seconds)
            print(f"| {client} | {r['p50_1_ms'] - direct.p50_ms:.3f} | {r['rps_64']:.0f} |")


if __name__ == "__main__":
    main()
