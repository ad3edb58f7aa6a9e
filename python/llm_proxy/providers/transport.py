"""The upstream HTTP client: one pooled keep-alive client per provider.

aiohttp's client measured ~10x httpx's throughput through the same proxy on this machine
(see benchmarks/upstream_clients.py); it sits behind this small interface so it stays swappable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import aiohttp

from ..errors import GatewayError

# Upstream response headers worth passing to the client (rate limits, retry hints, ids).
PASS_HEADERS = ("retry-after", "retry-after-ms", "x-request-id")
PASS_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")


def passed_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    out = []
    for name, value in headers.items():
        low = name.lower()
        if low in PASS_HEADERS or low.startswith(PASS_PREFIXES):
            out.append((low if low != "x-request-id" else "x-upstream-request-id", value))
    return out


class UpstreamResponse:
    """A whole upstream answer."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class UpstreamStream:
    """An upstream answer whose body is read as it arrives."""

    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except TimeoutError:
            raise GatewayError(504, "upstream went silent mid-stream (timeout)") from None
        except aiohttp.ClientError as exc:
            raise GatewayError(502, f"upstream stream broke: {type(exc).__name__}") from None

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except (aiohttp.ClientError, TimeoutError):
            return b""

    def close(self) -> None:
        """Drop the connection (it is not returned to the pool): cancels the upstream request."""
        self._response.close()

    def release(self) -> None:
        self._response.release()


class UpstreamClient:
    """A pooled keep-alive HTTP client for one provider."""

    def __init__(self, *, max_connections: int, connect_timeout_s: float) -> None:
        self._max_connections = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            ttl_dns_cache=300,
            keepalive_timeout=30,
            enable_cleanup_closed=False,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout_s),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _require(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise GatewayError(503, "upstream client is not started")
        return self._session

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> UpstreamResponse:
        session = self._require()
        timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=self._connect_timeout_s)
        try:
            async with session.post(url, data=body, headers=headers, timeout=timeout) as resp:
                data = await resp.read()
                return UpstreamResponse(resp.status, resp.headers, data)
        except TimeoutError:
            raise GatewayError(504, f"upstream timed out after {timeout_s:g} s") from None
        except aiohttp.ClientConnectorError as exc:
            raise GatewayError(502, f"upstream unreachable: {exc.os_error}") from None
        except aiohttp.ClientError as exc:
            raise GatewayError(502, f"upstream connection failed: {type(exc).__name__}") from None

    async def post_stream(
        self, url: str, headers: Mapping[str, str], body: bytes, silence_s: float
    ) -> UpstreamStream:
        """Start a request whose answer is streamed; `silence_s` bounds the gap between reads."""
        session = self._require()
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._connect_timeout_s, sock_read=silence_s
        )
        try:
            resp = await session.post(url, data=body, headers=headers, timeout=timeout)
        except TimeoutError:
            raise GatewayError(504, f"upstream timed out after {silence_s:g} s") from None
        except aiohttp.ClientConnectorError as exc:
            raise GatewayError(502, f"upstream unreachable: {exc.os_error}") from None
        except aiohttp.ClientError as exc:
            raise GatewayError(502, f"upstream connection failed: {type(exc).__name__}") from None
        return UpstreamStream(resp)
