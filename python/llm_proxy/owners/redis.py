"""The shared table: one Redis key per response id (prefix + id -> model), with a TTL.

Each process keeps what it recorded or looked up in memory as well (an id's owner never
changes), so only an id first seen elsewhere costs a round trip. When Redis fails the table
answers from memory alone and the failure is logged at most once per interval: a follow-up
it cannot place goes where its `model` says, as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..credentials import safe_url
from .memory import MemoryOwners

log = logging.getLogger("llm_proxy.responses")
_LOG_INTERVAL_S = 10.0
# After a failure Redis is skipped this long, rather than every call waiting out the timeout.
_RETRY_AFTER_S = 1.0


class RedisOwners(MemoryOwners):
    """Shared through Redis at `url`; keys `prefix + response id`, expiring after `ttl_s`."""

    shared = True

    def __init__(self, url: str, prefix: str, ttl_s: float, timeout_s: float) -> None:
        super().__init__()
        self.url = url
        self.prefix = prefix
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.timeout_s = timeout_s
        self.failures = 0
        self._last_logged = -float("inf")
        self._down_until = 0.0
        self._client: aioredis.Redis | None = None
        self._writes: set[asyncio.Task[None]] = set()

    def _redis(self) -> aioredis.Redis | None:
        """The client, or None while backing off after a failure."""
        if self._down_until and time.monotonic() < self._down_until:
            return None
        # Made on first use, inside the worker (after Granian forked it), on its loop.
        if self._client is None:
            self._client = aioredis.Redis.from_url(
                self.url,
                socket_connect_timeout=self.timeout_s * 4,
                retry=Retry(NoBackoff(), 0),
                decode_responses=True,
            )
        return self._client

    def _failed(self, what: str, exc: BaseException) -> None:
        self.failures += 1
        now = time.monotonic()
        self._down_until = now + _RETRY_AFTER_S
        if now - self._last_logged < _LOG_INTERVAL_S:
            return
        self._last_logged = now
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        password = urlsplit(self.url).password
        if password:
            text = text.replace(password, "***")
        log.warning(
            "response owners in redis %s: %s failed (%d failure(s) in all); follow-ups this "
            "process did not see go where their model says. Last error: %s",
            safe_url(self.url),
            what,
            self.failures,
            text,
        )

    async def record(self, response_id: str, model: str) -> None:
        """Record here and in Redis (awaited: a follow-up elsewhere may come at once)."""
        if not response_id:
            return
        self.remember(response_id, model)
        client = self._redis()
        if client is None:
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                await client.set(self.prefix + response_id, model, px=self.ttl_ms)
        except (OSError, TimeoutError, aioredis.RedisError) as exc:
            self._failed("recording", exc)

    def record_soon(self, response_id: str, model: str) -> None:
        """Record here at once and in Redis on the loop's next turn (for a stream in flight)."""
        if not response_id:
            return
        self.remember(response_id, model)
        task = asyncio.get_running_loop().create_task(self.record(response_id, model))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def owner(self, response_id: str) -> str | None:
        model = self.known(response_id)
        if model is not None:
            return model
        client = self._redis()
        if client is None:
            return None
        try:
            async with asyncio.timeout(self.timeout_s):
                found = await client.get(self.prefix + response_id)
        except (OSError, TimeoutError, aioredis.RedisError) as exc:
            self._failed("a lookup", exc)
            return None
        self._down_until = 0.0
        if found is None:
            return None
        model = found.decode() if isinstance(found, bytes) else str(found)
        self.remember(response_id, model)
        return model

    async def forget(self, response_id: str) -> None:
        await super().forget(response_id)
        client = self._redis()
        if client is None:
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                await client.delete(self.prefix + response_id)
        except (OSError, TimeoutError, aioredis.RedisError) as exc:
            self._failed("forgetting", exc)

    async def close(self) -> None:
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=self.timeout_s)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
