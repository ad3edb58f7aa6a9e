"""The admin listener: a small HTTP/1.1 server (llhttp via httptools) on the worker's loop.

Bound with SO_REUSEPORT, so every worker of a gateway listens on the same admin port.
Requests on one connection are answered in order; bodies are capped at MAX_BODY.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import cast

import httptools

log = logging.getLogger("llm_proxy.admin")

MAX_BODY = 1024 * 1024
_REASONS = {s.value: s.phrase for s in HTTPStatus}


@dataclass(slots=True)
class AdminRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(slots=True)
class AdminResponse:
    status: int
    body: bytes
    content_type: str = "application/json"


Handler = Callable[[AdminRequest], Awaitable[AdminResponse]]


def _frame(response: AdminResponse, keep_alive: bool) -> bytes:
    head = [
        f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}",
        f"content-type: {response.content_type}",
        f"content-length: {len(response.body)}",
        "cache-control: no-store",
    ]
    if not keep_alive:
        head.append("connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body


class _Connection(asyncio.Protocol):
    def __init__(self, handler: Handler, tasks: set[asyncio.Task[None]]) -> None:
        self.handler = handler
        self.tasks = tasks
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.request: AdminRequest | None = None
        self._url = b""
        self._body = bytearray()
        self._header: bytes | None = None
        self._queue: asyncio.Queue[tuple[AdminRequest, bool] | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    # -- transport -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)
        self._worker = asyncio.ensure_future(self._serve())
        self.tasks.add(self._worker)
        self._worker.add_done_callback(self.tasks.discard)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(400, f"malformed HTTP request: {exc}")
        except _TooLarge:
            self._fail(413, f"the request body is larger than {MAX_BODY} bytes")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._queue.put_nowait(None)

    def _fail(self, status: int, message: str) -> None:
        if self.transport is not None:
            body = b'{"error":{"message":"' + message.replace('"', "'").encode() + b'"}}'
            self.transport.write(_frame(AdminResponse(status, body), keep_alive=False))
            self.transport.close()

    # -- parser callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._body = bytearray()
        self.request = AdminRequest("", "", "")

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.request is not None
        self.request.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        request = self.request
        expect = request.headers.get("expect", "") if request is not None else ""
        if expect.lower() == "100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body += body
        if len(self._body) > MAX_BODY:
            raise _TooLarge

    def on_message_complete(self) -> None:
        request = self.request
        assert request is not None
        parsed = httptools.parse_url(self._url)
        request.method = self.parser.get_method().decode()
        request.path = (parsed.path or b"/").decode("utf-8", "replace")
        request.query = (parsed.query or b"").decode("utf-8", "replace")
        request.body = bytes(self._body)
        self._queue.put_nowait((request, self.parser.should_keep_alive()))

    # -- answering -------------------------------------------------------------------------

    async def _serve(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None or self.transport is None:
                return
            request, keep_alive = item
            try:
                response = await self.handler(request)
            except Exception:
                log.exception("admin request %s %s failed", request.method, request.path)
                response = AdminResponse(500, b'{"error":{"message":"internal error"}}')
            if self.transport is None:
                return
            self.transport.write(_frame(response, keep_alive))
            if not keep_alive:
                self.transport.close()
                return


class _TooLarge(Exception):
    pass


class AdminServer:
    """The listening socket and its open connections."""

    def __init__(self, server: asyncio.Server, tasks: set[asyncio.Task[None]]) -> None:
        self.server = server
        self.tasks = tasks

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 2.0)


async def serve(handler: Handler, host: str, port: int) -> AdminServer:
    """Listen on host:port (shared with the other workers through SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(handler, tasks), sock=sock)
    return AdminServer(server, tasks)
