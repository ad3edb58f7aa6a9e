"""What each part of a key's limits costs through the gateway: the same key with no limits
(auth on), rpm only, rpm and tpm, rpm, tpm and a budget (memory backend), and rpm on Redis;
each a gateway on the gateway core, measured in the same rounds with wrk.

    python -m benchmarks.scenarios.limits_variants [--runs 3] [--seconds 3]
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ..harness import OTHER_CPUS, llm_proxy, mock
from ..load import BODY, load, rounds, warm
from .gateway import AUTH_KEY, AUTH_ON, _delete_prefix


def _keyed(limits: dict[str, Any] | None = None, budgets: list[Any] | None = None) -> Any:
    auth = copy.deepcopy(AUTH_ON)
    if limits:
        auth["keys"][0]["limits"] = limits
    if budgets:
        auth["keys"][0]["budgets"] = budgets
    return auth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3)
    args = parser.parse_args(argv)
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"llm-proxy-bench:{os.getpid()}:"
    big = {"rpm": 10**9, "tpm": 10**12}
    variants = {
        "auth on": (_keyed(), None),
        "rpm": (_keyed({"rpm": 10**9}), {"backend": "memory"}),
        "rpm+tpm": (_keyed(big), {"backend": "memory"}),
        "rpm+tpm+budget": (_keyed(big, [{"usd": 1e9}]), {"backend": "memory"}),
        "rpm, redis": (
            _keyed({"rpm": 10**9}),
            {"backend": "redis", "redis_url": redis_url, "key_prefix": prefix},
        ),
    }
    with tempfile.TemporaryDirectory() as tmp_, ExitStack() as stack:
        tmp = Path(tmp_)
        stack.callback(_delete_prefix, redis_url, prefix)
        up = stack.enter_context(mock(OTHER_CPUS))
        targets = {}
        for i, (name, (auth, limits)) in enumerate(variants.items()):
            sections: dict[str, Any] = {"auth": {**auth, "store": f"sqlite:///{tmp}/k{i}.db"}}
            if limits:
                sections["limits"] = limits
            gateway = stack.enter_context(llm_proxy(up.url, tmp, **sections))
            gateway.headers = {"authorization": f"Bearer {AUTH_KEY}"}
            warm(gateway)
            targets[name] = gateway
        for clients in (1, 64):
            results = rounds(
                targets, args.runs, lambda n, t, c=clients: load(t, BODY, c, args.seconds)
            )
            base = results["auth on"]["cpu_us_per_request"]
            for name, r in results.items():
                print(
                    f"{clients:>2} clients  {name:16s} {r['rps']:>8,.0f} req/s  "
                    f"{r['cpu_us_per_request']:6.1f} µs/req ({r['cpu_us_per_request'] - base:+.1f})"
                    f"  p50 {r['p50_ms']:.3f} ms"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
