"""The upstream HTTP client: one pooled keep-alive HTTP/1.1 client per provider.

A small asyncio protocol over llhttp (httptools, the parser uvicorn uses), chosen over aiohttp
and httpx by measurement (benchmarks/scenarios/upstream_clients.py). It does only what the gateway
needs: POST a body, read the answer whole or as it arrives, keep connections alive, cancel by
closing the connection. The interface (`UpstreamClient`, `UpstreamStream`) is small so the
client stays swappable.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence

from ..errors import GatewayError
from .connection import (
    Broken,
    Connection,
    Origin,
    Silent,
    Target,
    expire,
    too_large,
    waiting_failed,
)
from .headers import body_decoder, encode_headers

# Idle connections older than this are not reused (servers drop idle keep-alives).
KEEPALIVE_S = 30.0


class UpstreamResponse:
    """A whole upstream answer; `headers` has lowercase names."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class UpstreamStream:
    """An upstream answer whose body is read as it arrives; `headers` has lowercase names."""

    __slots__ = (
        "_conn",
        "_decoded",
        "_decoder",
        "_finished",
        "_quiet_until",
        "_silence_s",
        "headers",
        "status",
    )

    def __init__(self, conn: Connection, silence_s: float) -> None:
        self._conn = conn
        self._finished = False
        self._silence_s = silence_s
        self._quiet_until = conn.loop.time() + silence_s
        self._decoded = 0
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers
        self._decoder = body_decoder(conn.headers)

    def event_arrived(self) -> None:
        """A whole event arrived: the silence allowed (`silence_s`) starts again.

        Bytes that do not complete an event do not restart it, so an upstream that drips
        a byte at a time without ever finishing an event still times out.
        """
        self._quiet_until = self._conn.loop.time() + self._silence_s

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; what arrived before a failure is delivered first."""
        conn = self._conn
        limit = conn.client.max_response_bytes
        while True:
            if conn.parts:
                data = conn.take()
                if self._decoder is not None:
                    try:
                        data = self._decoder.decompress(data, limit - self._decoded + 1)
                    except zlib.error:
                        self.release()
                        message = "upstream sent a stream that does not decompress"
                        raise GatewayError(502, message) from None
                    self._decoded += len(data)
                    if self._decoded > limit:
                        self.release()
                        raise too_large(limit)
                if data:
                    yield data
                continue
            if conn.complete:
                self.release()
                rest = self._decoder.flush() if self._decoder is not None else b""
                if rest:
                    if self._decoded + len(rest) > limit:
                        raise too_large(limit)
                    yield rest
                return
            try:
                await conn.wait(self._quiet_until - conn.loop.time())
            except Silent:
                self.release()
                raise GatewayError(504, "upstream went silent mid-stream (timeout)") from None
            except Broken as exc:
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
        except (Silent, Broken):
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

    def __init__(
        self,
        *,
        max_connections: int,
        connect_timeout_s: float,
        max_response_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._max_connections = max_connections
        self._connect_timeout_s = connect_timeout_s
        # An answer larger than this, after decompression, is refused with a 502.
        self.max_response_bytes = max_response_bytes
        self._sweeper: asyncio.TimerHandle | None = None
        self._idle: dict[Origin, list[Connection]] = {}
        self._open: set[Connection] = set()
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._targets: dict[tuple[str, int], Target] = {}
        self._ssl: ssl.SSLContext | None = None
        self._started = False

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._started = True
        self._sweeper = self.loop.call_later(KEEPALIVE_S / 2, self._sweep)

    async def close(self) -> None:
        self._started = False
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
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
        method: str = "POST",
    ) -> UpstreamResponse:
        """POST (or `method`) and read the whole answer; `timeout_s` bounds everything,
        connecting included.

        `extra`: headers of this request only (the provider's `headers` are encoded once).
        """
        deadline = self._deadline(timeout_s)
        conn = await self._exchange(
            url, headers, body, timeout_s, deadline, encode_headers(extra), False, method
        )
        try:
            while not conn.complete:
                await conn.wait(deadline - self.loop.time())
        except (Silent, Broken) as exc:
            conn.abort()
            raise waiting_failed(exc, timeout_s) from None
        except BaseException:
            conn.abort()  # cancelled: the upstream request goes with the connection
            raise
        data = conn.take()
        response = UpstreamResponse(conn.status, conn.headers, data)
        if conn.keep_alive:
            self._release(conn)
        else:
            conn.abort()
        decoder = body_decoder(response.headers)
        if decoder is not None:
            limit = self.max_response_bytes
            try:
                body = decoder.decompress(data, limit + 1)
                if len(body) <= limit:
                    body += decoder.flush()
            except zlib.error:
                raise GatewayError(502, "upstream sent a body that does not decompress") from None
            if len(body) > limit:
                raise too_large(limit)
            response.body = body
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
            url, headers, body, silence_s, deadline, encode_headers(extra), streaming=True
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
        method: str = "POST",
    ) -> Connection:
        """Send the request and wait for the answer's head (status and headers)."""
        target = self._target(url, headers, method)
        fresh = False
        while True:
            conn, reused = await self._acquire(target.origin, deadline, fresh)
            conn.send(target, body, streaming, extra)
            try:
                while not conn.head_done:
                    await conn.wait(deadline - self.loop.time())
                return conn
            except (Silent, Broken) as exc:
                conn.abort()
                # A kept-alive connection the server had already closed: try once more on a
                # new one (nothing of this request reached an answer).
                if isinstance(exc, Broken) and reused and not conn.received:
                    fresh = True
                    continue
                raise waiting_failed(exc, timeout_s) from None
            except BaseException:
                conn.abort()
                raise

    def _deadline(self, timeout_s: float) -> float:
        """The loop time by which a request started now must be done."""
        if not self._started:
            raise GatewayError(503, "upstream client is not started")
        return self.loop.time() + timeout_s

    def _target(self, url: str, headers: Mapping[str, str], method: str = "POST") -> Target:
        key = (url, id(headers)) if method == "POST" else (f"{method} {url}", id(headers))
        target = self._targets.get(key)
        if target is None or target.headers is not headers:
            if len(self._targets) > 256:
                self._targets.clear()
            target = self._targets[key] = Target(url, headers, method)
        return target

    # -- the pool --------------------------------------------------------------------------

    async def _acquire(
        self, origin: Origin, deadline: float, fresh: bool
    ) -> tuple[Connection, bool]:
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
            timer = loop.call_later(max(0.0, deadline - loop.time()), expire, waiter)
            try:
                await waiter
            except Silent:
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

    async def _connect(self, origin: Origin, deadline: float) -> Connection:
        host, port, tls = origin
        if tls and self._ssl is None:
            self._ssl = ssl.create_default_context()
        conn = Connection(self, origin)
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

    def _sweep(self) -> None:
        """Close the idle connections kept longer than KEEPALIVE_S (they would not be reused)."""
        now = self.loop.time()
        for idle in self._idle.values():
            stale = [conn for conn in idle if now - conn.idle_since >= KEEPALIVE_S]
            for conn in stale:
                idle.remove(conn)
                conn.abort()
        if self._started:
            self._sweeper = self.loop.call_later(KEEPALIVE_S / 2, self._sweep)

    def _release(self, conn: Connection) -> None:
        """Return a connection whose exchange is complete to the idle pool."""
        conn.idle_since = self.loop.time()
        self._idle.setdefault(conn.origin, []).append(conn)
        self._wake_one()

    def _forget(self, conn: Connection) -> None:
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
