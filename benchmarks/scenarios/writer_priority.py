"""The log writer's CPU priority: logging off, `full` with a `normal` writer, `full` with `idle`.

Three gateways on the gateway core side by side, the mock and wrk on the others; each round
runs every gateway in turn (so a noisy minute hits all three) at 1, 16 and 64 clients. Prints
the median run's requests/s, p50, p99 and CPU µs per request, then each gateway's log counters
(written, dropped, and the times the loop stepped aside for the idle writer).

    python -m benchmarks.scenarios.writer_priority [--seconds 5] [--runs 3] [--clients 1,16,64]
"""

from __future__ import annotations

import argparse
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from ..harness import OTHER_CPUS, Served, llm_proxy, mock
from ..load import BODY, load, summarise, warm

MODES: dict[str, dict[str, Any] | None] = {
    "off": None,
    "full, normal writer": {"writer_priority": "normal"},
    "full, idle writer": {"writer_priority": "idle"},
}
COUNTERS = (
    "llm_proxy_log_records_written_total",
    "llm_proxy_log_records_dropped_total",
    "llm_proxy_log_writer_yields_total",
)


def start(
    stack: ExitStack, upstream: str, tmp: Path, index: int, mode: dict[str, Any] | None
) -> Served:
    if mode is None:
        return stack.enter_context(llm_proxy(upstream, tmp))
    logging = {
        "content": "full",
        "store": f"sqlite:///{tmp / f'log-{index}.db'}",
        "spool_path": str(tmp / f"log-{index}.spool"),
        **mode,
    }
    return stack.enter_context(llm_proxy(upstream, tmp, logging=logging))


def counters(gateway: Served) -> dict[str, float]:
    text = httpx.get(gateway.url + "/metrics", timeout=5).text
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in COUNTERS:
            found[name.removeprefix("llm_proxy_log_").removesuffix("_total")] = float(value)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", default="1,16,64")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_, ExitStack() as stack:
        tmp = Path(tmp_)
        up = stack.enter_context(mock(OTHER_CPUS))
        gateways = {
            name: start(stack, up.url, tmp, i, mode) for i, (name, mode) in enumerate(MODES.items())
        }
        for gateway in gateways.values():
            warm(gateway, 2)
        print("| clients | logging | req/s | p50 ms | p99 ms | CPU µs/req | p99 ms of each run |")
        print("|---|---|---:|---:|---:|---:|---|")
        for clients in [int(c) for c in args.clients.split(",")]:
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in gateways}
            for _ in range(args.runs):
                for name, gateway in gateways.items():
                    runs[name].append(load(gateway, BODY, clients, args.seconds))
            for name, results in runs.items():
                median = summarise(results)
                each = ", ".join(f"{r['p99_ms']:.2f}" for r in results)
                print(
                    f"| {clients} | {name} | {median['rps']:,.0f} | {median['p50_ms']:.3f} | "
                    f"{median['p99_ms']:.2f} | {median['cpu_us_per_request']:.0f} | {each} |",
                    flush=True,
                )
        for name, gateway in gateways.items():
            if MODES[name] is not None:
                print(f"{name}: {counters(gateway)}")


if __name__ == "__main__":
    main()
