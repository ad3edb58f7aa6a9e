"""The upstream HTTP client: one pooled keep-alive HTTP/1.1 client per provider.

A small asyncio protocol over llhttp (httptools, the parser uvicorn uses). Through the same
minimal Granian proxy it costs a fraction of aiohttp's client per request, which cost ~10x less
than httpx's (benchmarks/upstream_clients.py compares all three). It does only what the
gateway needs: POST a body, read the answer whole or as it arrives, keep connections alive,
cancel by closing the connection. The interface (`UpstreamClient`, `UpstreamStream`) is small
so the client stays swappable.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import cast
from urllib.parse import urlsplit

import httptools

from ..errors import GatewayError

# Upstream response headers worth passing to the client (rate limits, retry hints, ids).
PASS_HEADERS = ("retry-after", "retry-after-ms", "x-request-id")
PASS_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")

# Idle connections older than this are not reused (servers drop idle keep-alives).
KEEPALIVE_S = 30.0
# A stream whose reader falls this far behind stops reading the socket until it catches up.
HIGH_WATER = 1 << 20
_USER_AGENT = "llm-proxy"


def passed_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    out = []
    for name, value in headers.items():
        low = name.lower()
        if low in PASS_HEADERS or low.startswith(PASS_PREFIXES):
            out.append((low if low != "x-request-id" else "x-upstream-request-id", value))
    return out


class UpstreamResponse:
    """A whole upstream answer; `headers` has lowercase names."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Broken(Exception):
    """The connection failed mid-exchange; the name says how (for the client's message)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(detail or kind)
        self.kind = kind


class _Silent(Exception):
    """No byte arrived within the allowed time."""


def _waiting_failed(exc: _Silent | _Broken, timeout_s: float) -> GatewayError:
    """The client's error for a request whose connection went silent or broke."""
    if isinstance(exc, _Silent):
        return GatewayError(504, f"upstream timed out after {timeout_s:g} s")
    return GatewayError(502, f"upstream connection failed: {exc.kind}")


Origin = tuple[str, int, bool]


class _Target:
    """A URL and header set, pre-encoded: the request head up to the per-request lines."""

    __slots__ = ("head", "headers", "origin")

    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise GatewayError(502, f"upstream URL {url!r} is not an http(s) URL")
        port = parts.port or (443 if tls else 80)
        self.origin: Origin = (parts.hostname, port, tls)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rpartition("@")[2]
        lines = [f"POST {path} HTTP/1.1", f"host: {host}", f"user-agent: {_USER_AGENT}"]
        lines.append("accept-encoding: gzip, deflate")
        self.head = ("\r\n".join(lines) + "\r\n").encode("latin-1") + _encode(headers.items())
        self.headers = headers


class _Connection(asyncio.Protocol):
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

    def send(self, target: _Target, body: bytes, streaming: bool, extra: bytes) -> None:
        self._begin(streaming)
        assert self.transport is not None
        tail = b"%scontent-length: %d\r\n\r\n" % (extra, len(body))
        self.transport.writelines((target.head, tail, body))

    async def wait(self, timeout: float) -> None:
        """Until something new arrives (head, body, end, error) or `timeout` passes."""
        if self.error is not None:
            raise self.error
        waiter = self.waiter = self.loop.create_future()
        timer = self.loop.call_later(timeout, _expire, waiter)
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
            self._fail(_Broken("malformed response", str(exc)))
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
            self._fail(_Broken(kind, str(exc or kind)))
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


def _encode(extra: Iterable[tuple[str, str]] | None) -> bytes:
    """Header lines, each ending in CRLF; a line break inside a name or value is refused."""
    if not extra:
        return b""
    lines = []
    for name, value in extra:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise GatewayError(502, f"upstream header {name!r} holds a line break")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(_Silent())


def _decoder(headers: Mapping[str, str]) -> zlib._Decompress | None:
    coding = headers.get("content-encoding", "").strip().lower()
    if coding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if coding == "deflate":
        return zlib.decompressobj()
    return None


class UpstreamStream:
    """An upstream answer whose body is read as it arrives; `headers` has lowercase names."""

    __slots__ = ("_conn", "_decoder", "_finished", "_silence_s", "headers", "status")

    def __init__(self, conn: _Connection, silence_s: float) -> None:
        self._conn = conn
        self._finished = False
        self._silence_s = silence_s
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers
        self._decoder = _decoder(conn.headers)

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; what arrived before a failure is delivered first."""
        conn = self._conn
        while True:
            if conn.parts:
                data = conn.take()
                if self._decoder is not None:
                    try:
                        data = self._decoder.decompress(data)
                    except zlib.error:
                        self.release()
                        message = "upstream sent a stream that does not decompress"
                        raise GatewayError(502, message) from None
                if data:
                    yield data
                continue
            if conn.complete:
                self.release()
                rest = self._decoder.flush() if self._decoder is not None else b""
                if rest:
                    yield rest
                return
            try:
                await conn.wait(self._silence_s)
            except _Silent:
                self.release()
                raise GatewayError(504, "upstream went silent mid-stream (timeout)") from None
            except _Broken as exc:
                if conn.parts:
                    continue  # deliver what arrived; the error comes back on the next wait
                self.release()
                raise GatewayError(502, f"upstream stream broke: {exc.kind}") from None

    async def read(self) -> bytes:
        """The rest of the body (an error answer's, say); empty if it cannot be read."""
        conn = self._conn
        try:
            while not conn.complete:
                await conn.wait(self._silence_s)
        except (_Silent, _Broken):
            self.release()
            return b""
        except BaseException:
            self.release()  # cancelled (the client left): drop the unfinished answer
            raise
        data = conn.take()
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error:
                return b""
        return data

    def close(self) -> None:
        """Finish with the answer: an unfinished one drops the connection (cancels upstream)."""
        self.release()

    def release(self) -> None:
        if self._finished:
            return
        self._finished = True
        conn = self._conn
        if conn.complete and conn.keep_alive and not conn.closed:
            conn.client._release(conn)
        else:
            conn.abort()


class UpstreamClient:
    """A pooled keep-alive HTTP/1.1 client for one provider."""

    loop: asyncio.AbstractEventLoop  # the loop `start` ran on; connections belong to it

    def __init__(self, *, max_connections: int, connect_timeout_s: float) -> None:
        self._max_connections = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._targets: dict[tuple[str, int], _Target] = {}
        self._ssl: ssl.SSLContext | None = None
        self._started = False

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._started = True

    async def close(self) -> None:
        self._started = False
        for conn in list(self._open):
            conn.abort()
        self._idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(GatewayError(503, "upstream client is closed"))
        self._waiters.clear()

    # -- requests --------------------------------------------------------------------------

    async def post(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        timeout_s: float,
        extra: Sequence[tuple[str, str]] | None = None,
    ) -> UpstreamResponse:
        """POST and read the whole answer; `timeout_s` bounds everything, connecting included.

        `extra`: headers of this request only (the provider's `headers` are encoded once).
        """
        deadline = self._deadline(timeout_s)
        conn = await self._exchange(
            url, headers, body, timeout_s, deadline, _encode(extra), streaming=False
        )
        try:
            while not conn.complete:
                await conn.wait(deadline - self.loop.time())
        except (_Silent, _Broken) as exc:
            conn.abort()
            raise _waiting_failed(exc, timeout_s) from None
        except BaseException:
            conn.abort()  # cancelled: the upstream request goes with the connection
            raise
        data = conn.take()
        response = UpstreamResponse(conn.status, conn.headers, data)
        if conn.keep_alive:
            self._release(conn)
        else:
            conn.abort()
        decoder = _decoder(response.headers)
        if decoder is not None:
            try:
                response.body = decoder.decompress(data) + decoder.flush()
            except zlib.error:
                raise GatewayError(502, "upstream sent a body that does not decompress") from None
        return response

    async def post_stream(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        silence_s: float,
        extra: Sequence[tuple[str, str]] | None = None,
    ) -> UpstreamStream:
        """Start a request whose answer is streamed; `silence_s` bounds the gap between reads."""
        deadline = self._deadline(silence_s)
        conn = await self._exchange(
            url, headers, body, silence_s, deadline, _encode(extra), streaming=True
        )
        return UpstreamStream(conn, silence_s)

    async def _exchange(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        timeout_s: float,
        deadline: float,
        extra: bytes,
        streaming: bool,
    ) -> _Connection:
        """Send the request and wait for the answer's head (status and headers)."""
        target = self._target(url, headers)
        fresh = False
        while True:
            conn, reused = await self._acquire(target.origin, deadline, fresh)
            conn.send(target, body, streaming, extra)
            try:
                while not conn.head_done:
                    await conn.wait(deadline - self.loop.time())
                return conn
            except (_Silent, _Broken) as exc:
                conn.abort()
                # A kept-alive connection the server had already closed: try once more on a
                # new one (nothing of this request reached an answer).
                if isinstance(exc, _Broken) and reused and not conn.received:
                    fresh = True
                    continue
                raise _waiting_failed(exc, timeout_s) from None
            except BaseException:
                conn.abort()
                raise

    def _deadline(self, timeout_s: float) -> float:
        """The loop time by which a request started now must be done."""
        if not self._started:
            raise GatewayError(503, "upstream client is not started")
        return self.loop.time() + timeout_s

    def _target(self, url: str, headers: Mapping[str, str]) -> _Target:
        key = (url, id(headers))
        target = self._targets.get(key)
        if target is None or target.headers is not headers:
            if len(self._targets) > 256:
                self._targets.clear()
            target = self._targets[key] = _Target(url, headers)
        return target

    # -- the pool --------------------------------------------------------------------------

    async def _acquire(
        self, origin: Origin, deadline: float, fresh: bool
    ) -> tuple[_Connection, bool]:
        loop = self.loop
        while True:
            idle = self._idle.get(origin)
            while idle and not fresh:
                conn = idle.pop()
                if not conn.closed and loop.time() - conn.idle_since < KEEPALIVE_S:
                    return conn, True
                conn.abort()
            if len(self._open) < self._max_connections:
                return await self._connect(origin, deadline), False
            waiter = loop.create_future()
            self._waiters.append(waiter)
            timer = loop.call_later(max(0.0, deadline - loop.time()), _expire, waiter)
            try:
                await waiter
            except _Silent:
                raise GatewayError(
                    504, f"no upstream connection free within the timeout ({origin[0]})"
                ) from None
            except BaseException:
                # Cancelled (the client left) after being woken: pass the free slot on.
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._wake_one()
                raise
            finally:
                timer.cancel()

    async def _connect(self, origin: Origin, deadline: float) -> _Connection:
        host, port, tls = origin
        if tls and self._ssl is None:
            self._ssl = ssl.create_default_context()
        conn = _Connection(self, origin)
        self._open.add(conn)
        timeout = max(0.0, min(self._connect_timeout_s, deadline - self.loop.time()))
        try:
            async with asyncio.timeout(timeout):
                await self.loop.create_connection(
                    lambda: conn,
                    host,
                    port,
                    ssl=self._ssl if tls else None,
                    server_hostname=host if tls else None,
                )
        except TimeoutError:
            self._forget(conn)
            raise GatewayError(504, f"upstream timed out connecting to {host}:{port}") from None
        except OSError as exc:
            self._forget(conn)
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise GatewayError(502, f"upstream unreachable: {host}:{port}: {reason}") from None
        except BaseException:
            self._forget(conn)
            raise
        return conn

    def _release(self, conn: _Connection) -> None:
        """Return a connection whose exchange is complete to the idle pool."""
        conn.idle_since = self.loop.time()
        self._idle.setdefault(conn.origin, []).append(conn)
        self._wake_one()

    def _forget(self, conn: _Connection) -> None:
        if conn in self._open:
            self._open.discard(conn)
            conn.closed = True
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
