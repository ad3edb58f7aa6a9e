"""The processes a benchmark runs: pinned to cores, waited for, measured from /proc, stopped.

The gateway (the thing measured) gets its own core, the last usable one; the load generator
and the mock upstream share the rest when the machine has at least two. Every process started
here is stopped by PID, with any children it left behind.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CPUS = sorted(os.sched_getaffinity(0))
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


# -- /proc -----------------------------------------------------------------------------------


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


def steal_ticks() -> int:
    """Ticks the hypervisor gave to other guests (the `steal` column of /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
        return int(fields[8])
    except (OSError, IndexError, ValueError):
        return 0


def machine() -> dict[str, Any]:
    """The host, its CPUs, the cores given to each side, and the code's git revision."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    rev = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    return {
        "host": socket.gethostname(),
        "cpu": model,
        "cores": os.cpu_count(),
        "usable_cpus": CPUS,
        "gateway_cpu": GATEWAY_CPU,
        "load_cpus": OTHER_CPUS,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "git_rev": rev,
        "loadavg_start": os.getloadavg(),
        "cpu_steal_start": steal_ticks(),
    }


# -- servers ---------------------------------------------------------------------------------


@dataclass
class Served:
    """A server started for a benchmark: its base URL and the PIDs of its process tree.

    `headers`: what every request to it must carry besides the body (a peer routed by headers,
    such as Portkey's gateway); empty for the others.
    """

    url: str
    proc: subprocess.Popen[Any]
    pids: list[int]
    headers: dict[str, str] = field(default_factory=dict)


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


@contextmanager
def mock(
    cpus: list[int] = OTHER_CPUS, delay_ms: int = 0, chunks: int = 8, chunk_delay_ms: int = 0
) -> Iterator[Served]:
    """The mock upstream (`llm_proxy.testing.mock_upstream`), answering after `delay_ms`;
    streams of `chunks` content events, `chunk_delay_ms` apart."""
    port = free_port()
    cmd = [*pin(cpus), sys.executable, "-m", "llm_proxy.testing.mock_upstream"]
    cmd += ["--port", str(port), "--delay-ms", str(delay_ms), "--chunks", str(chunks)]
    cmd += ["--chunk-delay-ms", str(chunk_delay_ms)]
    url = f"http://127.0.0.1:{port}"
    with served(cmd, url + "/v1/models", url) as proc:
        yield proc


@contextmanager
def mock_upstream(delay_ms: int = 0) -> Iterator[str]:
    """`mock` on the load generator's cores; yields its base URL."""
    with mock(OTHER_CPUS, delay_ms) as up:
        yield up.url


def bench_config(upstream: str, **sections: Any) -> dict[str, Any]:
    """The gateway's config for a run: one model to the mock, logging off unless overridden."""
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
def llm_proxy(upstream: str, tmp: Path, grpc_port: int = 0, **sections: Any) -> Iterator[Served]:
    """`serve_gateway` on `bench_config(upstream, **sections)`."""
    with serve_gateway(bench_config(upstream, **sections), tmp, grpc_port) as gateway:
        yield gateway


@contextmanager
def gateway(config: dict[str, Any], grpc_port: int = 0) -> Iterator[str]:
    """`serve_gateway` in a directory of its own; yields the base URL."""
    with tempfile.TemporaryDirectory() as tmp, serve_gateway(config, Path(tmp), grpc_port) as gw:
        yield gw.url


@contextmanager
def granian_app(app: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    """A Granian RSGI app of this package (`benchmarks.apps.<module>:app`) on the gateway's core."""
    port = free_port()
    cmd = [*pin([GATEWAY_CPU]), sys.executable, "-m", "granian", "--interface", "rsgi"]
    cmd += ["--loop", "uvloop", "--port", str(port), "--no-access-log", app]
    url = f"http://127.0.0.1:{port}"
    with served(cmd, url + "/", url, cwd=str(ROOT), env=env) as proc:
        yield proc


def granian_floor() -> AbstractContextManager[Served]:
    """A do-nothing Granian RSGI app (`apps/noop.py`): the floor."""
    return granian_app("benchmarks.apps.noop:app")


def proxy_floor(upstream: str, client: str = "llm-proxy") -> AbstractContextManager[Served]:
    """`apps/min_proxy.py`, with the gateway's own upstream client unless told otherwise."""
    env = {**os.environ, "UPSTREAM": upstream, "CLIENT": client}
    return granian_app("benchmarks.apps.min_proxy:app", env)
