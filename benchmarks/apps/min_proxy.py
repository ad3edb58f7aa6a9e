"""A minimal Granian RSGI proxy used to compare upstream HTTP clients on equal terms.

`make bench` runs it with CLIENT=llm-proxy (the gateway's own client) as a floor: one hop
through Granian and nothing else; a body with `"stream": true` has its answer relayed as the
bytes come. Like the gateway, it freezes what it built at startup for the garbage collector.

UPSTREAM (base URL) and CLIENT (aiohttp | httpx | llm-proxy, the gateway's own transport) come
from the environment.
"""

from __future__ import annotations

import asyncio
import gc
import os
from typing import Any

UPSTREAM = os.environ.get("UPSTREAM", "http://127.0.0.1:8090") + "/v1/chat/completions"
CLIENT = os.environ.get("CLIENT", "aiohttp")
HEADERS = {"content-type": "application/json"}
SSE = [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache")]


class App:
    def __init__(self) -> None:
        self.session: Any = None

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        async def make() -> Any:
            if CLIENT == "llm-proxy":
                from llm_proxy.upstream.client import UpstreamClient

                client = UpstreamClient(max_connections=1000, connect_timeout_s=5)
                await client.start()
                return client
            if CLIENT == "httpx":
                import httpx

                return httpx.AsyncClient(
                    limits=httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
                )
            import aiohttp

            return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))

        self.session = loop.run_until_complete(make())
        gc.collect()
        gc.freeze()

    async def __call__(self, scope: Any, proto: Any) -> None:
        body = await proto()
        if CLIENT == "llm-proxy" and (b'"stream": true' in body or b'"stream":true' in body):
            # Relays the upstream's bytes as they come: no SSE parsing, no first-event wait.
            stream = await self.session.post_stream(UPSTREAM, HEADERS, body, 60.0)
            try:
                transport = proto.response_stream(stream.status, SSE)
                async for chunk in stream.chunks():
                    await transport.send_bytes(chunk)
            finally:
                stream.close()
            return
        if CLIENT == "llm-proxy":
            answer = await self.session.post(UPSTREAM, HEADERS, body, 60.0)
            proto.response_bytes(answer.status, [("content-type", "application/json")], answer.body)
            return
        if CLIENT == "httpx":
            resp = await self.session.post(UPSTREAM, content=body, headers=HEADERS)
            proto.response_bytes(
                resp.status_code, [("content-type", "application/json")], resp.content
            )
            return
        async with self.session.post(UPSTREAM, data=body, headers=HEADERS) as r:
            data = await r.read()
            proto.response_bytes(r.status, [("content-type", "application/json")], data)


app = App()
