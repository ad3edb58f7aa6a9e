"""Added latency and throughput of the gRPC front door in front of the mock upstream.

The gateway runs pinned to one core; the mock upstream and the load generator (a grpc.aio
client in its own process) share the other. Added latency is the gateway's p50 minus calling
the mock directly over HTTP (keep-alive aiohttp) in the same run, one call at a time.

    python -m benchmarks.scenarios.grpc_bench [--seconds 5] [--calls 2000] [--json FILE] [--ceiling]
    python -m benchmarks.scenarios.grpc_bench --doors [--runs 3]   # calls/s: gRPC door vs HTTP door
    python -m benchmarks.scenarios.grpc_bench --floor [--runs 3]   # the prototype: the two floors

`--ceiling` also drives `grpc_ceiling --rust` (the Rust core's server and the hand-off to
the loop answering a fixed reply with the gateway's initial metadata, on the same core) with
the same load generator, in the same run: what the door costs before any work of ours, and
what the grpcio client itself adds to "added" latency. `--doors` and `--floor` drive load with
h2load (nghttp2-client), since a Python client cannot load the server to its limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..harness import (
    GATEWAY_CPU,
    OTHER_CPUS,
    ROOT,
    bench_config,
    cpu_seconds,
    free_port,
    mock_upstream,
    pin,
    serve_gateway,
    stop,
)

# This module, run again as the load generator in a process of its own.
CLIENT_MODULE = "benchmarks.scenarios.grpc_bench"
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Summarise the plot of Hamlet in two sentences."},
]
MAX_TOKENS = 64


# -- the load generator (runs in its own pinned process) -----------------------------------


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(samples: list[float]) -> dict[str, float]:
    return {"p50": _pct(samples, 0.5), "p90": _pct(samples, 0.9), "p99": _pct(samples, 0.99)}


async def _direct_latency(upstream: str, calls: int, stream: bool) -> dict[str, float]:
    import aiohttp

    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": MAX_TOKENS}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    raw = json.dumps(body).encode()
    headers = {"content-type": "application/json", "authorization": "Bearer sk-b"}
    connector = aiohttp.TCPConnector(limit=1)
    samples, first = [], []
    async with aiohttp.ClientSession(connector=connector) as session:
        for i in range(calls + 50):
            started = time.perf_counter()
            async with session.post(
                upstream + "/v1/chat/completions", data=raw, headers=headers
            ) as r:
                data = b""
                if stream:
                    data = await r.content.readuntil(b"\n\n")  # the first event
                    first_at = time.perf_counter()
                data += await r.read()
                assert r.status == 200 and (not stream or b"[DONE]" in data)
            if i >= 50:
                samples.append((time.perf_counter() - started) * 1000)
                if stream:
                    first.append((first_at - started) * 1000)
    out = _summary(samples)
    if first:
        out["first_p50"] = _pct(first, 0.5)
    return out


def _requests(pb: Any) -> tuple[Any, Any]:
    messages = [pb.ChatMessage(role=m["role"], content=m["content"]) for m in MESSAGES]
    unary = pb.ChatCompletionRequest(model="gpt-4o-mini", messages=messages, max_tokens=MAX_TOKENS)
    stream = pb.StreamChatCompletionRequest(
        model="gpt-4o-mini", messages=messages, max_tokens=MAX_TOKENS
    )
    return unary, stream


async def _grpc_latency(target: str, calls: int, kind: str) -> dict[str, float]:
    import grpc
    from llm_proxy.grpc.gen import gateway_pb2 as pb
    from llm_proxy.grpc.gen import gateway_pb2_grpc as pb_grpc

    unary_req, stream_req = _requests(pb)
    samples, overhead, first = [], [], []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GatewayStub(channel)
        for i in range(calls + 50):
            started = time.perf_counter()
            if kind == "stream":
                call = stub.StreamChatCompletion(stream_req)
                n = 0
                async for _ in call:
                    if n == 0 and i >= 50:
                        first.append((time.perf_counter() - started) * 1000)
                    n += 1
                assert n > 1
            elif kind == "unary":
                call = stub.ChatCompletion(unary_req)
                await call
            else:
                call = stub.ListModels(pb.ListModelsRequest())
                await call
            elapsed = (time.perf_counter() - started) * 1000
            if i >= 50:
                samples.append(elapsed)
                md = dict(await call.initial_metadata())
                if "x-llm-proxy-overhead-ms" in md:
                    overhead.append(float(md["x-llm-proxy-overhead-ms"]))
    out = _summary(samples)
    out["server_overhead_p50"] = _pct(overhead, 0.5) if overhead else 0.0
    if first:
        out["first_p50"] = _pct(first, 0.5)
    return out


async def _grpc_load(
    target: str, concurrency: int, seconds: float, kind: str, pids: list[int]
) -> dict[str, float]:
    import grpc
    from llm_proxy.grpc.gen import gateway_pb2 as pb
    from llm_proxy.grpc.gen import gateway_pb2_grpc as pb_grpc

    unary_req, stream_req = _requests(pb)
    models_req = pb.ListModelsRequest()
    samples: list[float] = []
    errors = 0
    chunks = 0
    # Several HTTP/2 connections, as a fleet of client replicas would open.
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(max(1, concurrency // 16))
    ]
    stubs = [pb_grpc.GatewayStub(ch) for ch in channels]
    warm_until = time.perf_counter() + 0.5
    stop_at = warm_until + seconds

    async def worker(stub: Any) -> None:
        nonlocal errors, chunks
        while True:
            started = time.perf_counter()
            if started >= stop_at:
                return
            try:
                n = 0
                if kind == "stream":
                    async for _ in stub.StreamChatCompletion(stream_req):
                        n += 1
                elif kind == "unary":
                    await stub.ChatCompletion(unary_req)
                else:
                    await stub.ListModels(models_req)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            if started >= warm_until:
                samples.append((time.perf_counter() - started) * 1000)
                chunks += n

    async def meter() -> float:
        await asyncio.sleep(warm_until - time.perf_counter())
        before = cpu_seconds(pids)
        await asyncio.sleep(stop_at - time.perf_counter())
        return cpu_seconds(pids) - before

    *_, cpu = await asyncio.gather(
        *(worker(stubs[i % len(stubs)]) for i in range(concurrency)), meter()
    )
    for ch in channels:
        await ch.close()
    out = _summary(samples)
    out["rps"] = len(samples) / seconds
    out["messages_per_s"] = chunks / seconds
    out["errors"] = errors
    out["cpu_us_per_call"] = cpu / max(1, len(samples)) * 1e6
    out["gateway_cpu_busy"] = cpu / seconds
    return out


async def _client(plan: dict[str, Any]) -> dict[str, Any]:
    target, upstream = plan["target"], plan["upstream"]
    calls, seconds = plan["calls"], plan["seconds"]
    results: dict[str, Any] = {}
    for kind in plan["kinds"]:
        if kind != "models":  # ListModels: the gRPC floor, no upstream to compare with
            results[f"{kind}_direct"] = await _direct_latency(upstream, calls, kind == "stream")
        results[f"{kind}_grpc"] = await _grpc_latency(target, calls, kind)
        for concurrency in (16, 64):
            results[f"{kind}_load_{concurrency}"] = await _grpc_load(
                target, concurrency, seconds, kind, plan["pids"]
            )
    return results


# -- h2load: a load generator in C, so the client is not the limit ----------------------------


def h2load(
    target: str, path: str, message: bytes, *, streams: int, connections: int, seconds: float
) -> dict[str, float]:
    """`streams` concurrent calls of one unary method over `connections` HTTP/2 connections.

    Every call must end with grpc-status 0: h2load counts the HTTP status only, so a run whose
    calls/s look right but fail is caught by sampling one call with grpcio before.
    """
    if not shutil.which("h2load"):
        raise SystemExit("h2load is needed for the gRPC load runs: apt-get install nghttp2-client")
    with tempfile.NamedTemporaryFile(suffix=".bin") as body:
        body.write(b"\0" + struct.pack(">I", len(message)) + message)
        body.flush()
        out = subprocess.run(
            [
                *pin(OTHER_CPUS),
                "h2load",
                "-t",
                "1",
                "-c",
                str(connections),
                "-m",
                str(max(1, streams // connections)),
                "-D",
                str(max(1, round(seconds))),
                "--warm-up-time",
                "1",
                "-d",
                body.name,
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
                f"http://{target}{path}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    assert done is not None, out
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
    return {
        "rps": rps,
        "errors": int(done.group(1)) - int(done.group(2)),
        "mean_ms": _h2_ms(mean.group(1)) if mean else 0.0,
    }


def _h2_ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    assert m is not None, text
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def _check_one_call(target: str) -> None:
    import grpc
    from llm_proxy.grpc.gen import gateway_pb2 as pb
    from llm_proxy.grpc.gen import gateway_pb2_grpc as pb_grpc

    unary, _ = _requests(pb)
    with grpc.insecure_channel(target) as channel:
        reply = pb_grpc.GatewayStub(channel).ChatCompletion(unary, timeout=10)
    assert reply.choices, reply


def floor(seconds: float, runs: int) -> dict[str, Any]:
    """The two doors' floors in one run: Granian's no-op HTTP app (wrk, 64 connections) and
    the Rust core's gRPC server answering through the loop hand-off (h2load, 64 streams)."""
    from llm_proxy.grpc.gen import gateway_pb2 as pb

    from ..harness import granian_floor
    from ..load import wrk

    unary, _ = _requests(pb)
    message = unary.SerializeToString()
    path = "/llm_proxy.v1.Gateway/ChatCompletion"
    results: dict[str, Any] = {"http": [], "grpc_4x16": [], "grpc_64x1": []}
    for _ in range(runs):
        with granian_floor() as noop:
            r = wrk(noop.url + "/", b"{}", connections=64, seconds=seconds)
            results["http"].append(
                {"rps": r.rps, "p50": r.p50_ms, "p99": r.p99_ms, "errors": r.errors}
            )
        port = free_port()
        with ceiling(port, rust=True):
            target = f"127.0.0.1:{port}"
            _check_one_call(target)
            for key, conns in (("grpc_4x16", 4), ("grpc_64x1", 64)):
                results[key].append(
                    h2load(target, path, message, streams=64, connections=conns, seconds=seconds)
                )
    return results


def doors(seconds: float, runs: int) -> dict[str, Any]:
    """Both doors of one gateway process in front of the mock, the same chat request: HTTP
    (wrk, 64 connections) and gRPC (h2load, 64 streams), alternated `runs` times."""
    grpc_port = free_port()
    with (
        mock_upstream() as upstream,
        tempfile.TemporaryDirectory() as tmp,
        serve_gateway(bench_config(upstream), Path(tmp), grpc_port) as gw,
    ):
        return _doors_on(gw, grpc_port, seconds, runs)


def _doors_on(gw: Any, grpc_port: int, seconds: float, runs: int) -> dict[str, Any]:
    from llm_proxy.grpc.gen import gateway_pb2 as pb

    from ..load import BODY, wrk

    unary, _ = _requests(pb)
    message = unary.SerializeToString()
    path = "/llm_proxy.v1.Gateway/ChatCompletion"
    results: dict[str, Any] = {"http": [], "grpc_4x16": [], "grpc_64x1": []}
    target = f"127.0.0.1:{grpc_port}"
    _check_one_call(target)
    url = f"{gw.url}/v1/chat/completions"
    headers = {"authorization": "Bearer sk-b"}
    wrk(url, BODY, connections=8, seconds=1, headers=headers)  # warm both doors
    h2load(target, path, message, streams=8, connections=1, seconds=1)
    for _ in range(runs):
        before = cpu_seconds(gw.pids)
        r = wrk(url, BODY, connections=64, seconds=seconds, headers=headers)
        cpu = cpu_seconds(gw.pids) - before
        results["http"].append(
            {
                "rps": r.rps,
                "p50": r.p50_ms,
                "p99": r.p99_ms,
                "errors": r.errors,
                "busy": cpu / round(seconds),
                "cpu_us_per_call": cpu / max(1, r.requests) * 1e6,
            }
        )
        for key, conns in (("grpc_4x16", 4), ("grpc_64x1", 64)):
            before = cpu_seconds(gw.pids)
            x = h2load(target, path, message, streams=64, connections=conns, seconds=seconds)
            cpu = cpu_seconds(gw.pids) - before
            span = round(seconds) + 1  # h2load's warm-up second is loaded too
            x["busy"] = cpu / span
            x["cpu_us_per_call"] = cpu / max(1.0, x["rps"] * span) * 1e6
            results[key].append(x)
    return results


# -- the driver ------------------------------------------------------------------------------


@contextmanager
def gateway(config: dict[str, Any], grpc_port: int) -> Iterator[Any]:
    """`llm-proxy serve` pinned to the gateway core (`.url`, `.pids`)."""
    with tempfile.TemporaryDirectory() as tmp, serve_gateway(config, Path(tmp), grpc_port) as gw:
        yield gw


@contextmanager
def ceiling(grpc_port: int, rust: bool = False) -> Iterator[list[int]]:
    """`grpc_ceiling.py` (fixed reply, with initial metadata) pinned to the gateway core."""
    cmd = [*pin([GATEWAY_CPU]), sys.executable, "-m", "benchmarks.scenarios.grpc_ceiling"]
    cmd += ["--port", str(grpc_port), "--metadata", *(["--rust"] if rust else [])]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("grpc_ceiling.py did not start")
        yield [proc.pid]
    finally:
        stop(proc)


def _drive(plan: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [*pin(OTHER_CPUS), sys.executable, "-m", CLIENT_MODULE, "--client", json.dumps(plan)],
        capture_output=True,
        cwd=ROOT,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"load generator failed:\n{done.stderr}")
    return dict(json.loads(done.stdout))


def run(seconds: float, calls: int, kinds: list[str], with_ceiling: bool = False) -> dict[str, Any]:
    grpc_port = free_port()
    plan: dict[str, Any] = {"calls": calls, "seconds": seconds, "kinds": kinds}
    with mock_upstream() as upstream:
        plan["upstream"] = upstream
        with gateway(bench_config(upstream), grpc_port) as gw:
            target = f"127.0.0.1:{grpc_port}"
            results = _drive({**plan, "pids": gw.pids, "target": target})
            if "unary" in kinds and shutil.which("h2load") and shutil.which("wrk"):
                # Issue 23's throughput target, side by side on this gateway: its gRPC door
                # (h2load, 4 connections x 16 streams) against its HTTP door (wrk, 64).
                results["doors_64"] = _doors_on(gw, grpc_port, seconds, 1)
        if with_ceiling:
            with ceiling(grpc_port, rust=True) as pids:
                target = f"127.0.0.1:{grpc_port}"
                ceiling_plan = {**plan, "pids": pids, "target": target, "kinds": ["unary"]}
                for key, value in _drive(ceiling_plan).items():
                    results[f"ceiling_{key}"] = value
    return results


def report(r: dict[str, Any]) -> str:
    lines = [
        "| | p50 ms | p90 ms | p99 ms | added p50 ms | server overhead p50 ms |",
        "|---|---|---|---|---|---|",
    ]
    kinds = [k for k in ("unary", "stream", "models") if f"{k}_grpc" in r]
    for kind in kinds:
        g = r[f"{kind}_grpc"]
        if kind == "models":
            lines.append(
                f"| ListModels (no upstream): via gateway (gRPC) | {g['p50']:.3f} | "
                f"{g['p90']:.3f} | {g['p99']:.3f} | | |"
            )
            continue
        d = r[f"{kind}_direct"]
        lines.append(
            f"| {kind}: mock direct (HTTP) | {d['p50']:.3f} | {d['p90']:.3f} | {d['p99']:.3f} | | |"
        )
        lines.append(
            f"| {kind}: via gateway (gRPC) | {g['p50']:.3f} | {g['p90']:.3f} | {g['p99']:.3f} | "
            f"{g['p50'] - d['p50']:.3f} | {g['server_overhead_p50']:.3f} |"
        )
        if "first_p50" in g and "first_p50" in d:
            lines.append(
                f"| {kind}: first message, gateway vs direct p50 | {g['first_p50']:.3f} | | | "
                f"{g['first_p50'] - d['first_p50']:.3f} | |"
            )
    if "ceiling_unary_grpc" in r:
        g, d = r["ceiling_unary_grpc"], r["ceiling_unary_direct"]
        lines.append(
            f"| unary: ceiling (Rust server + loop hand-off, fixed reply, no upstream) | "
            f"{g['p50']:.3f} | "
            f"{g['p90']:.3f} | {g['p99']:.3f} | {g['p50'] - d['p50']:.3f} | |"
        )
    if "doors_64" in r:
        h, g = r["doors_64"]["http"][0], r["doors_64"]["grpc_4x16"][0]
        lines.append(
            f"| unary at 64: HTTP door {h['rps']:,.0f} req/s, gRPC door {g['rps']:,.0f} calls/s "
            f"(ratio {g['rps'] / h['rps']:.2f}; gateway CPU per call {h['cpu_us_per_call']:.0f} "
            f"vs {g['cpu_us_per_call']:.0f} us) | | | | | |"
        )
    lines += [
        "",
        "| load | concurrent calls | calls/s | messages/s | p50 ms | p99 ms | errors "
        "| gateway CPU busy | gateway CPU µs/call |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [(kind, kind) for kind in kinds]
    if "ceiling_unary_load_16" in r:
        rows.append(("ceiling (fixed reply)", "ceiling_unary"))
    for label, kind in rows:
        for c in (16, 64):
            x = r[f"{kind}_load_{c}"]
            lines.append(
                f"| {label} | {c} | {x['rps']:,.0f} | {x['messages_per_s']:,.0f} | "
                f"{x['p50']:.2f} | {x['p99']:.2f} | {x['errors']} | "
                f"{x['gateway_cpu_busy']:.0%} | {x['cpu_us_per_call']:.0f} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument(
        "--kinds", default="unary,stream,models", help="any of unary, stream, models"
    )
    parser.add_argument(
        "--ceiling", action="store_true", help="also measure grpc_ceiling.py in the same run"
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="only the floors: Granian no-op (wrk) vs the Rust gRPC server's no-op (h2load)",
    )
    parser.add_argument(
        "--doors",
        action="store_true",
        help="only throughput: the gateway's HTTP door (wrk) vs its gRPC door (h2load), 64",
    )
    parser.add_argument("--runs", type=int, default=3, help="with --floor/--doors: runs")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor or args.doors:
        results = floor(args.seconds, args.runs) if args.floor else doors(args.seconds, args.runs)
        print(json.dumps(results, indent=2))
        med = {k: sorted(x["rps"] for x in v)[len(v) // 2] for k, v in results.items()}
        if args.doors:
            us = {
                k: sorted(x["cpu_us_per_call"] for x in v)[len(v) // 2] for k, v in results.items()
            }
            print(
                f"gateway CPU per call (median): HTTP {us['http']:.1f} us, gRPC "
                f"{us['grpc_4x16']:.1f} us (4x16), {us['grpc_64x1']:.1f} us (64x1); "
                f"one-core calls/s ratio from CPU: {us['http'] / us['grpc_4x16']:.2f}"
            )
        what = "no-op" if args.floor else "door of the gateway"
        print(
            f"median of {args.runs}: HTTP {what} {med['http']:,.0f} req/s; gRPC {what} "
            f"{med['grpc_4x16']:,.0f} calls/s (4 conns x 16 streams), "
            f"{med['grpc_64x1']:,.0f} (64 conns); ratio {med['grpc_4x16'] / med['http']:.2f}"
        )
        return 0
    if args.client:
        print(json.dumps(asyncio.run(_client(json.loads(args.client)))))
        return 0
    results = run(args.seconds, args.calls, args.kinds.split(","), args.ceiling)
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if "unary_grpc" not in results:
        return 0
    g, d = results["unary_grpc"], results["unary_direct"]
    p50, p99 = g["p50"] - d["p50"], g["p99"] - d["p99"]
    line = (
        f"\ntargets (one client): p50 added <= 0.3 ms: {'met' if p50 <= 0.3 else 'MISSED'} "
        f"({p50:.3f}); p99 added <= 1 ms: {'met' if p99 <= 1.0 else 'MISSED'} ({p99:.3f})"
    )
    if "first_p50" in results.get("stream_grpc", {}):
        first = results["stream_grpc"]["first_p50"] - results["stream_direct"]["first_p50"]
        line += f"; first message added <= 0.3 ms: {'met' if first <= 0.3 else 'MISSED'}"
        line += f" ({first:.3f})"
    print(line + "\n(calls/s against the HTTP door: --doors)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
