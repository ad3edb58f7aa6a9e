"""The gateway process under faults: a worker killed, idle connections, the version flag."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from llm_proxy import __version__

from tests.support.servers import MockUpstream, standard_config, start_gateway


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(p) for p in text)
    return found


def restarts(url: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith("llm_proxy_worker_restarts_total "):
            return float(line.split()[1])
    raise AssertionError("llm_proxy_worker_restarts_total is not exposed")


def test_a_killed_worker_is_started_again_and_counted(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    gw = start_gateway(standard_config(mock_upstream), tmp_path)
    try:
        assert restarts(gw.url) == 0
        (worker,) = children(gw.proc.pid)
        os.kill(worker, signal.SIGKILL)  # as the OOM killer would
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            alive = children(gw.proc.pid) - {worker}
            if alive:
                try:
                    if httpx.get(gw.url + "/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        else:
            raise AssertionError("no worker came back")
        assert gw.proc.poll() is None, "the gateway stopped instead of starting the worker again"
        r = httpx.post(
            gw.base_url + "/chat/completions",
            json={"model": "mock-1", "messages": [{"role": "user", "content": "back?"}]},
            timeout=10,
        )
        assert r.status_code == 200
        assert restarts(gw.url) == 1
    finally:
        gw.stop()


def test_an_idle_keepalive_connection_is_closed(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    config = standard_config(mock_upstream)
    config["server"]["keepalive_timeout_s"] = 1
    gw = start_gateway(config, tmp_path)
    try:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            sock.settimeout(10)
            assert sock.recv(65536) == b""  # the gateway closed the idle connection
            assert 0.5 < time.monotonic() - started < 5
    finally:
        gw.stop()


def test_version_flag_prints_the_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "llm_proxy.cli", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"llm-proxy {__version__}"


def test_streams_still_running_at_the_end_of_the_grace_are_ended_and_recorded(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    from tests.e2e.test_observe import logging_config, record_of
    from tests.support.servers import add_mock_model

    config = logging_config(mock_upstream, tmp_path)
    config["server"]["shutdown_grace_s"] = 3
    # 200 chunks 50 ms apart: a 10 s stream, longer than the grace.
    add_mock_model(
        config, mock_upstream, "uplong", {"x-mock-chunks": "200", "x-mock-chunk-delay-ms": "50"}
    )
    gw = start_gateway(config, tmp_path)
    body = {"model": "uplong", "messages": [{"role": "user", "content": "go"}], "stream": True}
    started = time.monotonic()
    with (
        httpx.Client(timeout=15) as http,
        http.stream(
            "POST",
            gw.base_url + "/chat/completions",
            json=body,
            headers={"x-request-id": "cut-at-shutdown"},
        ) as resp,
    ):
        lines = resp.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
        os.kill(gw.proc.pid, signal.SIGTERM)
        rest = [line for line in lines if line.startswith("data:")]
    assert time.monotonic() - started < 4
    assert '"code":"shutdown"' in rest[-1], rest[-3:]
    assert "data: [DONE]" not in rest
    assert gw.proc.wait(timeout=20) == 0
    record = record_of(tmp_path / "log.db", "cut-at-shutdown")
    assert (record["status"], record["error_type"]) == (503, "shutdown")
