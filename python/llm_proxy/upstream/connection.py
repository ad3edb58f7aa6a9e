"""One keep-alive HTTP/1.1 connection to an upstream, parsed by llhttp (httptools)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

import httptools

from ..errors import GatewayError
from .headers import encode_headers

if TYPE_CHECKING:
    from .client import UpstreamClient

# A stream whose reader falls this far behind stops reading the socket until it catches up.
HIGH_WATER = 1 << 20
_USER_AGENT = "llm-proxy"


class Broken(Exception):
    """The connection failed mid-exchange; the name says how (for the client's message)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(detail or kind)
        self.kind = kind


class Silent(Exception):
    """No byte arrived within the allowed time."""


class TooLarge(Broken):
    """The answer passed the client's max_response_bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__("too large")
        self.limit = limit


def too_large(limit: int) -> GatewayError:
    return GatewayError(
        502, f"the upstream's answer is larger than {limit} bytes (max_response_bytes)"
    )


def waiting_failed(exc: Silent | Broken, timeout_s: float) -> GatewayError:
    """The client's error for a request whose connection went silent or broke."""
    if isinstance(exc, Silent):
        return GatewayError(504, f"upstream timed out after {timeout_s:g} s")
    if isinstance(exc, TooLarge):
        return too_large(exc.limit)
    return GatewayError(502, f"upstream connection failed: {exc.kind}")


Origin = tuple[str, int, bool]


class Target:
    """A URL and header set, pre-encoded: the request head up to the per-request lines."""

    __slots__ = ("head", "headers", "origin")

    def __init__(self, url: str, headers: Mapping[str, str], method: str = "POST") -> None:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise GatewayError(502, f"upstream URL {url!r} is not an http(s) URL")
        port = parts.port or (443 if tls else 80)
        self.origin: Origin = (parts.hostname, port, tls)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rpartition("@")[2]
        lines = [f"{method} {path} HTTP/1.1", f"host: {host}", f"user-agent: {_USER_AGENT}"]
        lines.append("accept-encoding: gzip, deflate")
        head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        self.head = head + encode_headers(headers.items())
        self.headers = headers


class Connection(asyncio.Protocol):
    """One keep-alive connection; carries one exchange at a time."""

    def __init__(self, client: UpstreamClient, origin: Origin) -> None:
        self.client = client
        self.origin = origin
        self.loop = client.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._begin(False)

    def _begin(self, streaming: bool) -> None:
        self.streaming = streaming
        self.status = 0
        self.headers: dict[str, str] = {}
        self.parts: list[bytes] = []
        self.buffered = 0
        self.body_bytes = 0
        self.paused = False
        self.received = False
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.informational = False
        self.until_eof = False
        self.error: BaseException | None = None
        # Woken when the head, a body part, the end or an error arrives.
        self.waiter: asyncio.Future[None] | None = None

    # -- the exchange ----------------------------------------------------------------------

    def send(self, target: Target, body: bytes, streaming: bool, extra: bytes) -> None:
        self._begin(streaming)
        assert self.transport is not None
        tail = b"%scontent-length: %d\r\n\r\n" % (extra, len(body))
        self.transport.writelines((target.head, tail, body))

    async def wait(self, timeout: float) -> None:
        """Until something new arrives (head, body, end, error) or `timeout` passes."""
        if self.error is not None:
            raise self.error
        waiter = self.waiter = self.loop.create_future()
        timer = self.loop.call_later(timeout, expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None

    def take(self) -> bytes:
        """The body parts received so far."""
        parts = self.parts
        self.parts = []
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def abort(self) -> None:
        """Drop the connection: the upstream sees the request cancelled."""
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            self.client._forget(self)

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(Broken("malformed response", str(exc)))
            self.abort()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        was_closed = self.closed
        self.closed = True
        if self.until_eof and self.head_done and not self.complete:
            self.on_message_complete()  # a body delimited by the end of the connection
        elif not self.complete:
            kind = "connection reset" if exc is not None else "server disconnected"
            self._fail(Broken(kind, str(exc or kind)))
        if not was_closed:
            self.client._forget(self)

    # -- llhttp callbacks ------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        prev = self.headers.get(key)
        self.headers[key] = text if prev is None else f"{prev}, {text}"

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            self.informational = True
            self.headers = {}
            return
        self.status = status
        self.head_done = True
        headers = self.headers
        if "content-length" not in headers and "transfer-encoding" not in headers:
            self.until_eof = status not in (204, 304)
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > self.client.max_response_bytes:
            self._fail(TooLarge(self.client.max_response_bytes))
            self.abort()
            return
        self.parts.append(body)
        if self.streaming:
            self.buffered += len(body)
            if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()
            self._wake()

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        self.complete = True
        self.keep_alive = not self.until_eof and self.parser.should_keep_alive()
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


def expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(Silent())
