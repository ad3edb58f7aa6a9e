"""httpx vs aiohttp vs our own transport as the upstream client, through one minimal proxy.

python benchmarks/upstream_clients.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from common import GATEWAY_CPU, HERE, free_port, mock_upstream, pin, stop, wait_http, wrk
from overhead import BODY


def measure(client: str, upstream: str, seconds: float) -> dict[str, float]:
    port = free_port()
    env = {**os.environ, "UPSTREAM": upstream, "CLIENT": client, "PYTHONPATH": str(HERE)}
    cmd = [
        *pin([GATEWAY_CPU]),
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "rsgi",
        "--loop",
        "uvloop",
        "--port",
        str(port),
        "--no-access-log",
        "_min_proxy:app",
    ]
    proc = subprocess.Popen(
        cmd, env=env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        wait_http(f"http://127.0.0.1:{port}/")
        wrk(url, BODY, connections=8, seconds=1)
        one = wrk(url, BODY, connections=1, seconds=seconds)
        many = wrk(url, BODY, connections=64, seconds=seconds)
        return {"p50_1_ms": one.p50_ms, "rps_64": many.rps}
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    with mock_upstream() as up:
        direct = wrk(up + "/v1/chat/completions", BODY, connections=1, seconds=args.seconds)
        print("| client | p50 added at 1 client (ms) | req/s at 64 clients |\n|---|---|---|")
        for client in ("httpx", "aiohttp", "llm-proxy"):
            r = measure(client, up, args.seconds)
            print(f"| {client} | {r['p50_1_ms'] - direct.p50_ms:.3f} | {r['rps_64']:.0f} |")


if __name__ == "__main__":
    main()
