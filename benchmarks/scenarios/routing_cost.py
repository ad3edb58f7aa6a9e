"""What routing costs per call: CPU of the pipeline's whole-call path, in process.

    python -m benchmarks.scenarios.routing_cost [--calls 20000] [--rounds 7]

Three models on the built-in mock provider (no network, so the figure is the gateway's own
CPU): `single` (the one-deployment form, the fast path), `group1` (a group of one: the
runner with nothing to choose) and `group3` (three weighted deployments). Each round runs
every model `--calls` times on one uvloop loop and reads process CPU time; the rounds
alternate the models, and the minimum per model is kept (the least disturbed round on a
shared machine). Routing's cost is `group3 - single`. `--record` adds the record stage
(the log record built and the metrics counted, with the log store off), where a group's call
also pays for its attempts (the JSON column, the route counters).
"""

from __future__ import annotations

import argparse
import asyncio
import time

import uvloop
from llm_proxy.calls import decode_call
from llm_proxy.config import parse_config
from llm_proxy.pipeline import Pipeline

CONFIG = {
    "providers": {"m1": {"kind": "mock"}, "m2": {"kind": "mock"}, "m3": {"kind": "mock"}},
    "models": {
        "single": {"provider": "m1", "model": "mock-fast"},
        "group1": {"deployments": [{"provider": "m1", "model": "mock-fast"}]},
        "group3": {
            "deployments": [
                {"provider": "m1", "model": "mock-fast", "weight": 3},
                {"provider": "m2", "model": "mock-fast", "weight": 2},
                {"provider": "m3", "model": "mock-fast", "weight": 1},
            ]
        },
    },
    "logging": {"enabled": False},
}


def body(model: str) -> bytes:
    return (
        b'{"model":"' + model.encode() + b'","messages":[{"role":"user","content":"hi"}],'
        b'"max_tokens":4}'
    )


async def run(pipeline: Pipeline, model: str, calls: int) -> float:
    """CPU seconds per call for `calls` whole calls of `model`."""
    raw = body(model)
    headers: dict[str, str] = {}
    started = time.process_time()
    for i in range(calls):
        call = decode_call("chat", raw, door="http", request_id=f"r{i}", headers=headers)
        await pipeline.complete(call)
        # A turn of the loop, as between requests in a server: the record stage runs here.
        await asyncio.sleep(0)
    return (time.process_time() - started) / calls


async def main_async(calls: int, rounds: int, models: list[str], record: bool) -> dict[str, float]:
    config = parse_config({**CONFIG, "models": {m: CONFIG["models"][m] for m in models}})  # type: ignore[index]
    recorder = None
    if record:
        from llm_proxy.observe.recorder import CallRecorder

        recorder = CallRecorder(config)
        await recorder.start()
    pipeline = Pipeline(config, recorder)
    await pipeline.start()
    best: dict[str, float] = {}
    try:
        for model in models:
            await run(pipeline, model, 500)  # warm-up
        for _ in range(rounds):
            for model in models:
                per_call = await run(pipeline, model, calls)
                best[model] = min(best.get(model, per_call), per_call)
    finally:
        await pipeline.close()
        if recorder is not None:
            await recorder.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--single-only",
        action="store_true",
        help="only the one-deployment model (to compare with code that has no groups)",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="with the record stage (log record built, metrics counted; the store is off)",
    )
    args = parser.parse_args()
    models = ["single"] if args.single_only else ["single", "group1", "group3"]
    best = uvloop.run(main_async(args.calls, args.rounds, models, args.record))
    for model, per_call in best.items():
        print(f"{model:<8} {per_call * 1e6:8.2f} us CPU per call")
    if args.single_only:
        return
    print(f"routing  {(best['group3'] - best['single']) * 1e6:8.2f} us (group3 - single)")
    print(f"runner   {(best['group1'] - best['single']) * 1e6:8.2f} us (group1 - single)")


if __name__ == "__main__":
    main()
