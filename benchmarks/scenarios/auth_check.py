"""CPU per call of the `authenticate` stage: a valid key checked against the in-process table.

The stage as the pipeline runs it (a Call with the key in its headers, 10,000 keys in the
table, a model allowed by a glob on the key and its team), timed with the process's CPU
clock; a refused call (wrong secret) and the bare SHA-256 are timed beside it.

    python -m benchmarks.scenarios.auth_check [--calls N] [--runs R] [--json FILE]

Target (issue 18): the key check adds <= 5 µs of CPU per call.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from llm_proxy.calls import Call
from llm_proxy.errors import GatewayError
from llm_proxy.keys.model import KeyRecord, TeamRecord, new_key, sha256_hex
from llm_proxy.keys.stage import Authenticate
from llm_proxy.keys.table import KeyTable

TARGET_US = 5.0


def _table(size: int) -> tuple[KeyTable, str]:
    keys: list[KeyRecord] = []
    text = ""
    for i in range(size):
        public_id, secret, text = new_key()
        keys.append(
            KeyRecord(
                id=public_id,
                secret_sha256=sha256_hex(secret),
                team="support",
                allowed_models=["gpt-4o*", "mock-*"],
                expires_at=time.time() + 86400 if i % 2 else None,
            )
        )
    team = TeamRecord(name="support", allowed_models=["gpt-4o-mini", "claude*"])
    table = KeyTable(None, keys, {"support": team}, {})
    table.load()
    return table, text  # the last key made


def _cpu_us_per_call(fn: Callable[[], None], calls: int, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.process_time()
        for _ in range(calls):
            fn()
        samples.append((time.process_time() - start) / calls * 1e6)
    return statistics.median(samples)


def run(calls: int = 200_000, runs: int = 5, size: int = 10_000) -> dict[str, Any]:
    table, text = _table(size)
    stage = Authenticate(table)
    headers = {"authorization": f"Bearer {text}"}
    call = Call("r1", "http", "chat", b"{}", "gpt-4o-mini", headers=headers)
    wrong = Call("r2", "http", "chat", b"{}", "gpt-4o-mini", headers={
        "authorization": f"Bearer {text[:-4]}nope"
    })  # fmt: skip

    def refused() -> None:
        with contextlib.suppress(GatewayError):
            stage(wrong)

    secret = text.rsplit("-", 1)[-1].encode()
    stage(call)
    assert call.key_id is not None
    return {
        "keys_in_table": size,
        "calls_per_run": calls,
        "runs": runs,
        "valid_key_us": _cpu_us_per_call(lambda: stage(call), calls, runs),
        "wrong_secret_us": _cpu_us_per_call(refused, calls // 4, runs),
        "sha256_only_us": _cpu_us_per_call(lambda: hashlib.sha256(secret).digest(), calls, runs),
        "target_us": TARGET_US,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args(argv)
    result = run(args.calls, args.runs, args.keys)
    print(
        f"authenticate, valid key: {result['valid_key_us']:.2f} µs CPU/call "
        f"(target <= {TARGET_US:.0f}); wrong secret (401): {result['wrong_secret_us']:.2f}; "
        f"SHA-256 alone: {result['sha256_only_us']:.2f} ({result['keys_in_table']:,} keys)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0 if result["valid_key_us"] <= TARGET_US else 1


if __name__ == "__main__":
    raise SystemExit(main())
