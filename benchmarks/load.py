"""The load: the request bodies, wrk runs and their statistics, streams timed by hand."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .harness import OTHER_CPUS, Served, cpu_seconds, pin

CHAT = "/v1/chat/completions"
BODY = json.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Summarise the plot of Hamlet in two sentences."},
        ],
        "max_tokens": 64,
    }
).encode()
STREAM_BODY = BODY[:-1] + b', "stream": true}'


@dataclass
class LoadResult:
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    requests: int = 0


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(
    url: str,
    body: bytes,
    *,
    connections: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    method: str = "POST",
    timeout_s: int = 0,
    pipeline: int = 1,
) -> LoadResult:
    """POST `body` to `url` with wrk (pinned off the gateway's core) and parse its report.

    `method="GET"` sends no body; `timeout_s` raises wrk's per-request timeout (default 2 s);
    `pipeline=N` sends N requests back to back on each connection (HTTP/1.1 pipelining), which
    shows what the generator can drive when the server is not the limit (latencies are then
    per batch, not per request).
    """
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed for the load benchmarks: apt-get install wrk")
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        hdrs = {"content-type": "application/json", **(headers or {})}
        lines = [f'wrk.method = "{method}"']
        if method != "GET":
            lines.append(f"wrk.body = [[{body.decode()}]]")
        lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in hdrs.items()]
        if pipeline > 1:
            lines += [
                "init = function(args)",
                "  local batch = {}",
                f"  for i = 1, {pipeline} do batch[i] = wrk.format() end",
                "  pipelined = table.concat(batch)",
                "end",
                "request = function() return pipelined end",
            ]
        script.write_text("\n".join(lines) + "\n")
        threads = 1 if connections < 4 else len(OTHER_CPUS)
        out = subprocess.run(
            [
                *pin(OTHER_CPUS),
                "wrk",
                "-t",
                str(threads),
                "-c",
                str(connections),
                "-d",
                f"{max(1, round(seconds))}s",  # wrk takes whole seconds only
                "--latency",
                *(["--timeout", f"{timeout_s}s"] if timeout_s else []),
                "-s",
                str(script),
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = dict(re.findall(r"^\s+(\d+)%\s+(\S+)", out, re.M))
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"(\d+) requests in", out)
    total = int(m.group(1)) if m else 0
    return LoadResult(rps, _ms(pct["50"]), _ms(pct["90"]), _ms(pct["99"]), errors, total)


def median_run(runs: list[LoadResult]) -> tuple[LoadResult, float]:
    """The median run by requests/s and the spread (max-min)/median of requests/s."""
    ordered = sorted(runs, key=lambda r: r.rps)
    mid = ordered[len(ordered) // 2]
    spread = (ordered[-1].rps - ordered[0].rps) / mid.rps if mid.rps else 0.0
    return mid, spread


def load(
    target: Served,
    body: bytes,
    clients: int,
    seconds: float,
    *,
    path: str = CHAT,
    method: str = "POST",
    timeout_s: int = 0,
) -> dict[str, Any]:
    """One wrk run with the target's CPU time (all its processes) read around it."""
    before = cpu_seconds(target.pids)
    r = wrk(
        target.url + path,
        body,
        connections=clients,
        seconds=seconds,
        method=method,
        timeout_s=timeout_s,
        headers=target.headers,
    )
    used = cpu_seconds(target.pids) - before
    out = dict(r.__dict__)
    out["cpu_us_per_request"] = used / r.requests * 1e6 if r.requests else None
    out["cpu_busy"] = used / max(1, round(seconds))
    return out


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run by requests/s, the spread of requests/s, and every run."""
    fields = set(LoadResult.__dataclass_fields__)
    as_results = [LoadResult(**{k: v for k, v in r.items() if k in fields}) for r in runs]
    mid, spread = median_run(as_results)
    median = runs[as_results.index(mid)]
    return {**median, "spread": spread, "runs": runs}


def rounds(
    targets: dict[str, Served],
    runs: int,
    measure: Callable[[str, Served], dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Run `measure` on each target, interleaved round by round so noise hits all alike."""
    collected: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    for _ in range(runs):
        for name, target in targets.items():
            collected[name].append(measure(name, target))
    return {name: summarise(r) for name, r in collected.items()}


def warm(target: Served, seconds: int = 1) -> None:
    wrk(
        target.url + CHAT,
        BODY,
        connections=8,
        seconds=seconds,
        timeout_s=10,
        headers=target.headers,
    )


def mock_requests(upstream: str) -> int:
    """How many requests the mock upstream has answered so far."""
    return int(httpx.get(upstream + "/_mock/stats", timeout=5).json()["requests"])


def prime(url: str, body: bytes) -> None:
    """Send `body` until the gateway answers it from its cache."""
    headers = {"content-type": "application/json"}
    for _ in range(50):
        r = httpx.post(url + CHAT, content=body, headers=headers, timeout=10)
        r.raise_for_status()
        if r.headers.get("x-llm-proxy-cache") == "hit":
            return
        time.sleep(0.05)
    raise RuntimeError("the cache entry never became a hit")


def stream_problem(target: Served, body: bytes) -> str | None:
    """None when a streamed request through `target` ends with `[DONE]`; else what came back.

    The streaming scenarios read until `[DONE]` on a kept-alive connection, so a target that
    answers a stream with an error object would hang them: they leave such a target out.
    """
    try:
        with httpx.stream(
            "POST",
            target.url + CHAT,
            content=body,
            headers={"content-type": "application/json", **target.headers},
            timeout=10,
        ) as r:
            text = r.read().decode(errors="replace")
            status = r.status_code
    except httpx.HTTPError as exc:
        return f"streamed request failed: {exc!r}"
    if status == 200 and "[DONE]" in text:
        return None
    return f"a streamed request got {status} {' '.join(text.split())[:120]}"


async def _stream_once(
    host: str, port: int, path: str, body: bytes, extra: str = ""
) -> tuple[float, float]:
    """Time to first event and total time of one streamed request on a fresh connection.

    `extra`: more header lines, each ending in CRLF."""
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n{extra}"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    started = time.perf_counter()
    writer.write(head + body)
    first = None
    buf = b""
    while b"[DONE]" not in buf:
        data = await reader.read(65536)
        if not data:
            break
        if first is None and b"data:" in buf + data:
            first = time.perf_counter() - started
        buf += data
    total = time.perf_counter() - started
    writer.close()
    return (first or total) * 1000, total * 1000


def stream_latency(
    base: str, n: int = 300, headers: dict[str, str] | None = None
) -> tuple[float, float]:
    """Median time to first event and total time (ms) of `n` streams, one after another."""
    host, port = base.removeprefix("http://").split(":")
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())

    async def go() -> tuple[float, float]:
        ttfb, total = [], []
        for _ in range(n):
            a, b = await _stream_once(host, int(port), CHAT, STREAM_BODY, extra)
            ttfb.append(a)
            total.append(b)
        return statistics.median(ttfb), statistics.median(total)

    return asyncio.run(go())
