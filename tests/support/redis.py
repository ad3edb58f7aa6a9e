"""Redis for tests: REDIS_URL when set, else a private redis-server on a free port.

Without either the tests skip, except under CI=true where they fail instead.
Tests use their own key prefix and delete only their own keys.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.servers import free_port, stop_process


def unavailable(reason: str) -> None:
    """Skip a test that needs Redis, or fail it when running under CI."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Redis is required under CI: {reason}")
    pytest.skip(reason)


def ping(url: str, timeout: float = 0.5) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


class PrivateRedis:
    """A redis-server subprocess we own, on a fixed port so it can be stopped and restarted."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not installed and REDIS_URL is not set")
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            if ping(self.url, 0.2):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


def start_private_redis(workdir: Path) -> PrivateRedis:
    server = PrivateRedis(workdir)
    server.start()
    return server


def redis_url(workdir: Path) -> Iterator[str]:
    """Generator for a fixture: the REDIS_URL server, or a private one stopped afterwards."""
    url = os.environ.get("REDIS_URL")
    if url:
        if not ping(url):
            unavailable(f"REDIS_URL={url} does not answer PING")
        yield url
        return
    server = start_private_redis(workdir)
    try:
        yield server.url
    finally:
        server.stop()


def key_prefix() -> str:
    return f"llm-proxy-test:{uuid.uuid4().hex}:"


def delete_prefix(url: str, prefix: str) -> int:
    """Delete our keys (and only ours) from a Redis server; returns how many."""
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=500))
        return int(client.delete(*keys)) if keys else 0
    finally:
        client.close()


def count_prefix(url: str, prefix: str) -> int:
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        return sum(1 for _ in client.scan_iter(match=prefix + "*", count=500))
    finally:
        client.close()
