"""Shared pieces of the benchmarks: processes pinned to cores, wrk runs, result parsing."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

HERE = Path(__file__).resolve().parent
CPUS = sorted(os.sched_getaffinity(0))
# The gateway (the thing measured) gets its own core; the load generator and the mock share
# the rest when the machine has at least two.
GATEWAY_CPU = CPUS[-1]
OTHER_CPUS = [c for c in CPUS if c != GATEWAY_CPU] or CPUS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(cpus: list[int]) -> list[str]:
    return ["taskset", "-c", ",".join(map(str, cpus))] if shutil.which("taskset") else []


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


@contextmanager
def mock_upstream(delay_ms: int = 0) -> Iterator[str]:
    port = free_port()
    cmd = [
        *pin(OTHER_CPUS),
        sys.executable,
        "-m",
        "llm_proxy.testing.mock_upstream",
        "--port",
        str(port),
        "--delay-ms",
        str(delay_ms),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/v1/models")
        yield url
    finally:
        stop(proc)


def bench_config(upstream: str, **sections: Any) -> dict[str, Any]:
    return {
        "server": {"shutdown_grace_s": 2},
        "providers": {"up": {"kind": "openai", "base_url": upstream + "/v1", "api_key": "sk-b"}},
        "models": {"gpt-4o-mini": {"provider": "up", "model": "gpt-4o-mini"}},
        "logging": {"enabled": False},
        **sections,
    }


@contextmanager
def gateway(config: dict[str, Any], grpc_port: int = 0) -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(yaml.safe_dump(config))
        cmd = [
            *pin([GATEWAY_CPU]),
            sys.executable,
            "-m",
            "llm_proxy.cli",
            "serve",
            "--config",
            str(path),
            "--port",
            str(port),
            "--grpc-port",
            str(grpc_port),
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(url + "/ready")
            yield url
        finally:
            stop(proc)


@dataclass
class LoadResult:
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int


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
) -> LoadResult:
    """POST `body` to `url` with wrk (pinned off the gateway's core) and parse its report."""
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed for the load benchmarks: apt-get install wrk")
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        hdrs = {"content-type": "application/json", **(headers or {})}
        lines = ['wrk.method = "POST"', f"wrk.body = [[{body.decode()}]]"]
        lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in hdrs.items()]
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
    return LoadResult(rps, _ms(pct["50"]), _ms(pct["90"]), _ms(pct["99"]), errors)


def median_run(runs: list[LoadResult]) -> tuple[LoadResult, float]:
    """The median run by requests/s and the spread (max-min)/median of requests/s."""
    ordered = sorted(runs, key=lambda r: r.rps)
    mid = ordered[len(ordered) // 2]
    spread = (ordered[-1].rps - ordered[0].rps) / mid.rps if mid.rps else 0.0
    return mid, spread
