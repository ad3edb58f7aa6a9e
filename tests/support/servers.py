"""Real servers for the tests: the mock upstream and the gateway as subprocesses on free ports."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """Stop a process we started, by its PID: SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@dataclass
class MockUpstream:
    proc: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(self.url + "/_mock/stats", timeout=5).json())

    def last(self) -> dict[str, Any]:
        return dict(httpx.get(self.url + "/_mock/last", timeout=5).json())

    def reset(self) -> None:
        httpx.post(self.url + "/_mock/reset", timeout=5)


def start_mock_upstream(*extra: str) -> MockUpstream:
    proc = subprocess.Popen(
        [sys.executable, "-m", "llm_proxy.testing.mock_upstream", "--port", "0", *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        m = re.search(r"listening on http://[^:]+:(\d+)", line)
        if m:
            return MockUpstream(proc, int(m.group(1)))
        if proc.poll() is not None:
            break
    stop_process(proc)
    raise RuntimeError("mock upstream did not start")


@dataclass
class Gateway:
    proc: subprocess.Popen[bytes]
    port: int
    grpc_port: int
    config_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def stop(self) -> None:
        stop_process(self.proc, timeout=40)


def start_gateway(
    config: dict[str, Any], tmp_dir: Path, *, grpc: bool = False, env: dict[str, str] | None = None
) -> Gateway:
    port = free_port()
    grpc_port = free_port() if grpc else 0
    path = tmp_dir / f"gateway-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    log = open(tmp_dir / f"gateway-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
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
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        cwd=tmp_dir,
    )
    gateway = Gateway(proc, port, grpc_port, path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"gateway exited with {proc.returncode}: "
                + (tmp_dir / f"gateway-{port}.log").read_text()
            )
        try:
            if httpx.get(gateway.url + "/ready", timeout=1).status_code == 200:
                return gateway
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    gateway.stop()
    raise RuntimeError("gateway did not become ready")


def add_mock_model(
    config: dict[str, Any],
    upstream: MockUpstream,
    name: str,
    headers: dict[str, str],
    timeout_s: float = 3,
) -> None:
    """An OpenAI provider at the mock upstream sending `headers` (x-mock-...), and a model of
    the same name served by it as gpt-4o-mini."""
    config["providers"][name] = {
        "kind": "openai",
        "base_url": upstream.url + "/v1",
        "timeout_s": timeout_s,
        "headers": headers,
    }
    config["models"][name] = {"provider": name, "model": "gpt-4o-mini"}


def standard_config(upstream: MockUpstream) -> dict[str, Any]:
    """Every provider kind, all pointing at the mock upstream (or in-process)."""
    config: dict[str, Any] = {
        "server": {"max_body_bytes": 65536, "shutdown_grace_s": 20},
        "logging": {"enabled": False},
        "providers": {
            "up": {
                "kind": "openai",
                "base_url": upstream.url + "/v1",
                "api_key": "sk-up-SECRET",
                "timeout_s": 3,
            },
            "az": {
                "kind": "azure",
                "base_url": upstream.url,
                "api_key": "az-SECRET",
                "api_version": "2024-10-21",
            },
            "claude": {"kind": "anthropic", "base_url": upstream.url, "api_key": "ant-SECRET"},
            "fake": {"kind": "mock"},
            "down": {"kind": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1"},
            "claude429": {
                "kind": "anthropic",
                "base_url": upstream.url,
                "api_key": "ant-SECRET",
                "headers": {"x-mock-status": "429"},
            },
        },
        "models": {
            "gpt-4o-mini": {"provider": "up", "model": "gpt-4o-mini"},
            "fast": {"provider": "up", "model": "gpt-4o-mini-2024-07-18"},
            "azure-gpt": {"provider": "az", "model": "my-deployment"},
            "claude": {"provider": "claude", "model": "claude-sonnet-4-5"},
            "mock-1": {"provider": "fake", "model": "mock-1"},
            "text-embedding-3-small": {"provider": "up", "model": "text-embedding-3-small"},
            "gone": {"provider": "down", "model": "gone"},
            "claude429": {"provider": "claude429", "model": "claude-sonnet-4-5"},
        },
    }
    for name, timeout_s, headers in (
        ("up429", 3, {"x-mock-status": "429"}),
        ("up500", 3, {"x-mock-status": "500"}),
        ("up400", 3, {"x-mock-status": "400"}),
        ("upslow", 0.5, {"x-mock-delay-ms": "3000"}),
        ("upbroken", 3, {"x-mock-disconnect-after": "3"}),
        ("upcut", 3, {"x-mock-disconnect-after": "0"}),
        ("uphang", 30, {"x-mock-hang": "1"}),
        ("upgarbage", 3, {"x-mock-malformed": "1"}),
        ("updrip", 5, {"x-mock-chunks": "40", "x-mock-chunk-delay-ms": "50"}),
    ):
        add_mock_model(config, upstream, name, headers, timeout_s)
    return config
