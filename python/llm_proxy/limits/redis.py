"""The shared backend: one Lua script call reserves every item of a call in Redis."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

from ..credentials import safe_url
from .backend import Args, BackendError, SettleArgs, Verdict
from .lua import RESERVE, SETTLE, USAGE

log = logging.getLogger("llm_proxy.limits")

_SHA = {name: hashlib.sha1(text.encode()).hexdigest() for name, text in
        (("reserve", RESERVE), ("settle", SETTLE), ("usage", USAGE))}  # fmt: skip
_TEXT = {"reserve": RESERVE, "settle": SETTLE, "usage": USAGE}
_ERRORS = (OSError, TimeoutError, aioredis.RedisError)
# Settles waiting to go are flushed in one pipeline at most this many at a time.
_SETTLE_BATCH = 256


def _flat(lease: str, items: list[Args] | list[SettleArgs]) -> tuple[list[str], list[Any]]:
    keys = []
    argv: list[Any] = [lease]
    for kind, key, limit, cost, a, b in items:
        keys.append(key)
        argv += (kind, limit, cost, a, b)
    return keys, argv


class RedisBackend:
    """Every gateway instance shares the counters; Redis's clock is the one clock.

    While one reservation is on the wire, the next ones queue and go together in one
    pipeline. Settles never make a call wait: they are queued and flushed in the background.
    After a failure the backend answers BackendError at once for `retry_after_s`.
    """

    name = "redis"

    def __init__(self, url: str, timeout_s: float, retry_after_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self._client: aioredis.Redis | None = None
        self._down_until = 0.0
        self._busy = False
        self._waiting: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self._settles: list[tuple[list[str], list[Any]]] = []
        self._settle_futures: list[asyncio.Future[list[int]]] = []
        self._flushing: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._client = aioredis.Redis.from_url(
            self.url,
            socket_connect_timeout=self.timeout_s * 4,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
        )

    async def close(self) -> None:
        if self._settles and self._client is not None:
            try:
                await self._flush()
            except Exception:  # the counters lapse by themselves
                log.warning(
                    "limits: %d settles not written to Redis at shutdown", len(self._settles)
                )
        for task in list(self._tasks):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _ready(self) -> aioredis.Redis:
        client = self._client
        if client is None:
            raise BackendError("the redis limits backend is not started")
        if self._down_until and time.monotonic() < self._down_until:
            raise BackendError(f"redis {safe_url(self.url)} failed less than "
                               f"{self.retry_after_s} s ago")  # fmt: skip
        return client

    def _failed(self, exc: BaseException) -> BackendError:
        self._down_until = time.monotonic() + self.retry_after_s
        text = (
            f"timed out after {self.timeout_s} s"
            if isinstance(exc, TimeoutError)
            else (f"{type(exc).__name__}: {exc}")
        )
        return BackendError(f"redis {safe_url(self.url)}: {text}")

    async def reserve(self, lease: str, items: list[Args]) -> Verdict:
        client = self._ready()
        keys, argv = _flat(lease, items)
        if self._busy:
            waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._waiting.append((keys, argv, waiter))
            reply = await waiter
        else:
            self._busy = True
            try:
                reply = (await self._run(client, [(keys, argv)]))[0]
            finally:
                self._next_batch()
        return _verdict(reply)

    async def _run(self, client: aioredis.Redis, calls: list[tuple[list[str], list[Any]]]) -> Any:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._eval_many(client, "reserve", calls)
        except _ERRORS as exc:
            raise self._failed(exc) from None

    async def _eval_many(
        self, client: aioredis.Redis, script: str, calls: list[tuple[list[str], list[Any]]]
    ) -> list[Any]:
        sha = _SHA[script]
        for attempt in (0, 1):
            try:
                if len(calls) == 1:
                    keys, argv = calls[0]
                    return [await client.evalsha(sha, len(keys), *keys, *argv)]
                pipe = client.pipeline(transaction=False)
                for keys, argv in calls:
                    pipe.evalsha(sha, len(keys), *keys, *argv)
                return list(await pipe.execute())
            except NoScriptError:
                if attempt:
                    raise
                await client.script_load(_TEXT[script])
        raise AssertionError("unreachable")

    def _next_batch(self) -> None:
        if not self._waiting:
            self._busy = False
            return
        batch, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._run_batch(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_batch(
        self, batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]]
    ) -> None:
        try:
            replies = await self._run(self._ready(), [(k, a) for k, a, _ in batch])
        except BaseException as exc:
            error = exc if isinstance(exc, BackendError) else BackendError("reservation cancelled")
            for _, _, waiter in batch:
                if not waiter.done():
                    waiter.set_exception(BackendError(str(error)))
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, _, waiter), reply in zip(batch, replies, strict=True):
                if not waiter.done():
                    waiter.set_result(reply)
        finally:
            self._next_batch()

    def settle(self, lease: str, items: list[SettleArgs]) -> asyncio.Future[list[int]]:
        """Queue a settle; the future has each item's amount afterwards (for alerts)."""
        keys, argv = _flat(lease, items)
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._settles.append((keys, argv))
        self._settle_futures.append(future)
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush_soon())
        return future

    async def _flush_soon(self) -> None:
        try:
            while self._settles:
                await self._flush()
        finally:
            self._flushing = None

    async def _flush(self) -> None:
        calls, self._settles = self._settles[:_SETTLE_BATCH], self._settles[_SETTLE_BATCH:]
        futures = self._settle_futures[: len(calls)]
        del self._settle_futures[: len(calls)]
        try:
            client = self._client
            if client is None:
                raise BackendError("the redis limits backend is closed")
            async with asyncio.timeout(self.timeout_s * 4):
                replies = await self._eval_many(client, "settle", calls)
        except (*_ERRORS, BackendError) as exc:
            error = self._failed(exc) if not isinstance(exc, BackendError) else exc
            for future in futures:
                if not future.done():
                    future.set_exception(BackendError(str(error)))
            return
        for future, reply in zip(futures, replies, strict=True):
            if not future.done():
                future.set_result([int(v) for v in reply])

    async def usage(self, items: list[Args]) -> tuple[int, list[int]]:
        client = self._ready()
        keys, argv = _flat("", items)
        try:
            async with asyncio.timeout(self.timeout_s * 4):
                reply = (await self._eval_many(client, "usage", [(keys, argv)]))[0]
        except _ERRORS as exc:
            raise self._failed(exc) from None
        return int(reply[0]), [int(v) for v in reply[1:]]

    async def mark_once(self, key: str, ttl_ms: int) -> bool:
        """SET NX: True for the one instance that marks `key` first (alerts fire once)."""
        client = self._ready()
        try:
            async with asyncio.timeout(self.timeout_s * 4):
                return bool(await client.set(key, b"1", nx=True, px=max(1, ttl_ms)))
        except _ERRORS as exc:
            raise self._failed(exc) from None


def _verdict(reply: list[Any]) -> Verdict:
    if int(reply[0]) == 1:
        return Verdict(True, int(reply[1]), [int(v) for v in reply[2:]])
    return Verdict(False, int(reply[1]), [int(reply[4])], int(reply[2]) - 1, int(reply[3]))
