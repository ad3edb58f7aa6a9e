"""The shared backend: entries in Redis (msgpack values, TTL set by SET PX)."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..credentials import safe_url
from .entry import CacheEntry, CacheUnavailable, decode_entry, encode_entry

_TIMEOUTS_TO_BACK_OFF = 3


class RedisBackend:
    """Several gateway processes share one Redis; any failure is `CacheUnavailable`.

    After a connection failure, or a few timeouts in a row, the backend answers
    `CacheUnavailable` at once for `retry_after_s` instead of making every request wait out
    the timeout; then the next command tries again (the pool reconnects by itself). A single
    timeout does not: under a load spike the event loop itself is late, and sending every
    request to the upstream then would make the spike worse.
    """

    def __init__(
        self, url: str, prefix: str, timeout_s: float, retry_after_s: float, max_bytes: int
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.max_bytes = max_bytes
        self._down_until = 0.0
        self._timeouts_in_a_row = 0
        self._client: aioredis.Redis | None = None
        # Lookups waiting for the round trip on the wire to finish (auto-pipelining).
        self._busy = False
        self._waiting: list[tuple[str, asyncio.Future[bytes | None]]] = []
        self._batches: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._client = aioredis.Redis.from_url(
            self.url,
            # Reads are bounded by our own asyncio.timeout; a socket timeout on top would
            # wrap every read in another timer.
            socket_connect_timeout=self.timeout_s * 4,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
        )

    async def close(self) -> None:
        for task in list(self._batches):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _ready(self) -> aioredis.Redis:
        client = self._client
        if client is None:
            raise CacheUnavailable("redis backend is not started")
        if self._down_until and time.monotonic() < self._down_until:
            raise CacheUnavailable("redis backend is backing off after a failure")
        return client

    def _failed(self, exc: BaseException) -> CacheUnavailable:
        if isinstance(exc, TimeoutError):
            self._timeouts_in_a_row += 1
            text = f"timed out after {self.timeout_s} s"
        else:
            self._timeouts_in_a_row = _TIMEOUTS_TO_BACK_OFF
            text = f"{type(exc).__name__}: {exc}"
        if self._timeouts_in_a_row >= _TIMEOUTS_TO_BACK_OFF:
            self._down_until = time.monotonic() + self.retry_after_s
        password = urlsplit(self.url).password
        if password:
            text = text.replace(password, "***")
        return CacheUnavailable(f"redis {safe_url(self.url)}: {text}")

    def _succeeded(self) -> None:
        self._down_until = 0.0
        self._timeouts_in_a_row = 0

    async def get(self, key: str) -> CacheEntry | None:
        """One lookup. While a round trip is on the wire, lookups queue and go as one MGET."""
        client = self._ready()
        if self._busy:
            waiter: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
            self._waiting.append((self.prefix + key, waiter))
            data = await waiter
        else:
            self._busy = True
            try:
                data = (await self._fetch(client, [self.prefix + key]))[0]
            finally:
                self._next_batch()
        if data is None:
            return None
        return decode_entry(data)

    async def _fetch(self, client: aioredis.Redis, keys: list[str]) -> list[bytes | None]:
        try:
            async with asyncio.timeout(self.timeout_s):
                if len(keys) == 1:
                    values = [await client.get(keys[0])]
                else:
                    values = await client.mget(keys)
        except (OSError, TimeoutError, aioredis.RedisError) as exc:
            raise self._failed(exc) from None
        if self._timeouts_in_a_row:
            self._succeeded()
        return [v.encode() if isinstance(v, str) else v for v in values]

    def _next_batch(self) -> None:
        if not self._waiting:
            self._busy = False
            return
        batch, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._run_batch(batch))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _run_batch(self, batch: list[tuple[str, asyncio.Future[bytes | None]]]) -> None:
        try:
            values = await self._fetch(self._ready(), [key for key, _ in batch])
        except CacheUnavailable as exc:
            for _, waiter in batch:
                if not waiter.done():
                    waiter.set_exception(CacheUnavailable(str(exc)))
        except BaseException:
            for _, waiter in batch:
                if not waiter.done():
                    waiter.set_exception(CacheUnavailable("redis lookup cancelled"))
            raise
        else:
            for (_, waiter), value in zip(batch, values, strict=True):
                if not waiter.done():
                    waiter.set_result(value)
        finally:
            self._next_batch()

    async def set_many(self, items: list[tuple[str, CacheEntry, float]]) -> None:
        client = self._ready()
        pipe = client.pipeline(transaction=False)
        for key, entry, ttl_s in items:
            if entry.size() > self.max_bytes or ttl_s <= 0:
                continue
            pipe.set(self.prefix + key, encode_entry(entry), px=max(1, int(ttl_s * 1000)))
        if not len(pipe):
            return
        try:
            async with asyncio.timeout(self.timeout_s * 4):
                await pipe.execute()
        except (OSError, TimeoutError, aioredis.RedisError) as exc:
            raise self._failed(exc) from None
        self._succeeded()
