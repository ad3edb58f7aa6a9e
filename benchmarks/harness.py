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
from contextlib import contextmanager, suppress
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
def serve_gateway(config: dict[str, Any], tmp: Path, grpc_port: int = 0) -> Iterator[Served]:
    """`llm-proxy serve` on `config`, pinned to the gateway core, until the block ends."""
    port = free_port()
    path = tmp / f"llm-proxy-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [*pin([GATEWAY_CPU]), sys.executable, "-m", "llm_proxy.cli", "serve"]
    cmd += ["--config", str(path), "--port", str(port), "--grpc-port", str(grpc_port)]
    url = f"http://127.0.0.1:{port}"
    with served(cmd, url + "/ready", url, cwd=str(tmp)) as gateway:
        yield gateway


@contextmanager
def gateway(config: dict[str, Any], grpc_port: int = 0) -> Iterator[str]:
    """`serve_gateway` in a directory of its own; yields the base URL."""
    with tempfile.TemporaryDirectory() as tmp, serve_gateway(config, Path(tmp), grpc_port) as gw:
        yield gw.url


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


def process_family(pid: int) -> list[int]:
    """A process and all its descendants (Granian's workers), by PID."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in task.read_text().split())
            except OSError:
                continue
    return out


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (utime + stime from /proc/<pid>/stat) the processes have used so far."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _start_time(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def rss_bytes(pids: list[int]) -> int:
    """Resident memory (VmRSS) of the processes, summed."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        if m:
            total += int(m.group(1)) * 1024
    return total


@dataclass
class Served:
    """A server started for a benchmark: its base URL and the PIDs of its process tree."""

    url: str
    proc: subprocess.Popen[Any]
    pids: list[int]


@contextmanager
def served(
    cmd: list[str],
    ready_url: str,
    url: str,
    *,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
    log: Path | None = None,
) -> Iterator[Served]:
    """Start `cmd`, wait for `ready_url`, yield it; stop it and every child it made, by PID."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
    pids = [proc.pid]
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited with {proc.returncode} before it was ready")
            try:
                if httpx.get(ready_url, timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{ready_url} did not come up in {timeout:.0f} s")
            time.sleep(0.1)
        pids = process_family(proc.pid)
        yield Served(url, proc, pids)
    finally:
        if proc.poll() is None:
            pids = sorted(set(pids) | set(process_family(proc.pid)))
        started = {pid: _start_time(pid) for pid in pids if pid != proc.pid}
        stop(proc)
        for pid, when in started.items():  # children the server did not reap on its own
            if when is not None and _start_time(pid) == when:  # the same process, not a reused PID
                with suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        if log:
            out.close()  # type: ignore[union-attr]
