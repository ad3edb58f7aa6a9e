"""Drives the gateway's RSGI app in-process, one call after another, for `instructions`.

No Granian: the app gets a stand-in scope and protocol (the body at once, the response kept),
so what runs is the gateway's own code on the event loop, its upstream client and the real
mock upstream over loopback. `bare` is the floor: the body, the same upstream client, the
answer handed back, as `min_proxy.py` does; `bare-stream` relays a stream's bytes as they
come.

    python -m benchmarks.apps.loop_driver UPSTREAM PATH N
    (PATH: miss | hit | stream | bare | bare-stream)
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from typing import Any

import uvloop
import yaml

from ..harness import bench_config
from ..load import BODY, STREAM_BODY


class Scope:
    proto = "http"
    path = "/v1/chat/completions"
    method = "POST"

    def __init__(self, body: bytes) -> None:
        self.headers = {"content-type": "application/json", "content-length": str(len(body))}


class Transport:
    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = 0

    async def send_bytes(self, data: bytes) -> None:
        self.sent += len(data)


class Proto:
    __slots__ = ("body", "status", "transport")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.status = 0
        self.transport = Transport()

    async def __call__(self) -> bytes:
        return self.body

    def response_bytes(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status

    def response_stream(self, status: int, headers: Any) -> Transport:
        self.status = status
        return self.transport

    async def client_disconnect(self) -> None:
        await asyncio.Event().wait()


def main() -> None:
    upstream, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    extra: dict[str, Any] = (
        {"cache": {"enabled": True, "backend": "memory"}} if path == "hit" else {}
    )
    if path in ("auth", "limits", "limits-redis"):
        from ..scenarios.gateway import AUTH_KEY, AUTH_LIMITED, AUTH_ON

        store = {"store": f"sqlite:///{tempfile.mkdtemp()}/keys.db"}
        extra["auth"] = {**(AUTH_ON if path == "auth" else AUTH_LIMITED), **store}
        if path == "limits-redis":
            url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
            prefix = f"llm-proxy-bench:{os.getpid()}:"
            extra["limits"] = {"backend": "redis", "redis_url": url, "key_prefix": prefix}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(bench_config(upstream, **extra), f)
    os.environ["LLM_PROXY_CONFIG"] = f.name
    from llm_proxy.worker import create_app

    app = create_app()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    app.__rsgi_init__(loop)
    body = STREAM_BODY if path in ("stream", "bare-stream") else BODY
    scope = Scope(body)
    if "auth" in extra:
        scope.headers["authorization"] = f"Bearer {AUTH_KEY}"
    provider = app.pipeline.providers["up"]
    url = provider.base_url + "/chat/completions"  # type: ignore[attr-defined]

    async def bare(proto: Proto) -> None:
        data = await proto()
        answer = await provider.client.post(url, provider.headers, data, 60.0)  # type: ignore[attr-defined]
        proto.response_bytes(answer.status, [("content-type", "application/json")], answer.body)

    async def bare_stream(proto: Proto) -> None:
        data = await proto()
        stream = await provider.client.post_stream(url, provider.stream_headers, data, 60.0)  # type: ignore[attr-defined]
        try:
            transport = proto.response_stream(
                stream.status, [("content-type", "text/event-stream")]
            )
            async for chunk in stream.chunks():
                await transport.send_bytes(chunk)
        finally:
            stream.close()

    async def calls(count: int) -> None:
        for _ in range(count):
            proto = Proto(body)
            if path == "bare":
                await bare(proto)
            elif path == "bare-stream":
                await bare_stream(proto)
            else:
                await app.http(scope, proto)  # type: ignore[arg-type]
            if proto.status != 200:
                raise SystemExit(f"{path}: status {proto.status}")

    try:
        loop.run_until_complete(calls(n))
        app.__rsgi_del__(loop)
    finally:
        os.unlink(f.name)


if __name__ == "__main__":
    main()
