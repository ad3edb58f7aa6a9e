"""The shared backend: one Lua script call reserves every item of a call in Redis."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import time
from typing import Any

from ..credentials import safe_url
from .backend import Args, BackendError, SettleArgs, Verdict
from .lua import RESERVE, SETTLE, USAGE
from .plan import PARALLEL
from .resp import RespConnection, RespError, pack_command

log = logging.getLogger("llm_proxy.limits")

_SCRIPTS = {"reserve": RESERVE, "settle": SETTLE, "usage": USAGE}
_SHA = {name: hashlib.sha1(text.encode()).hexdigest() for name, text in _SCRIPTS.items()}
_ERRORS = (OSError, TimeoutError, RespError)


def _command(script: str, lease: str, items: list[Args] | list[SettleArgs]) -> bytes:
    keys = [item[1] for item in items]
    argv: list[Any] = ["EVALSHA", _SHA[script], len(keys), *keys, lease]
    for kind, _key, limit, cost, a, b in items:
        argv += (kind, limit, cost, a, b)
    return pack_command(tuple(argv))


class RedisBackend:
    """Every gateway instance shares the counters; Redis's clock is the one clock.

    Reservations are pipelined on one connection per worker; settles never make a call wait:
    they are written together once per turn of the event loop. After a failure the backend
    answers BackendError at once for `retry_after_s`.
    """

    name = "redis"

    def __init__(self, url: str, timeout_s: float, retry_after_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.connection = RespConnection(url, timeout_s * 4)
        self.connection.setup = [("SCRIPT", "LOAD", text) for text in _SCRIPTS.values()]
        self._down_until = 0.0
        # Lease releases (idempotent) that could not be sent, sent again after the next
        # reservation that succeeds: a slot in flight must not wait out its lease.
        self._releases: collections.deque[tuple[str, list[str], int]] = collections.deque(
            maxlen=10_000
        )

    async def start(self) -> None:
        try:
            await self.connection.protocol()
        except (*_ERRORS, ConnectionError) as exc:
            self._failed(exc)  # calls apply on_backend_error until it answers
            log.warning("limits: redis %s does not answer yet: %s", safe_url(self.url), exc)

    async def close(self) -> None:
        protocol = self.connection._ready()
        if protocol is not None and protocol.waiters:
            await asyncio.wait(list(protocol.waiters), timeout=self.timeout_s * 4)
        self.connection.close()

    def _check(self) -> None:
        if self._down_until and time.monotonic() < self._down_until:
            raise BackendError(
                f"redis {safe_url(self.url)} failed less than {self.retry_after_s} s ago"
            )

    def _failed(self, exc: BaseException) -> BackendError:
        self._down_until = time.monotonic() + self.retry_after_s
        if isinstance(exc, TimeoutError):
            text = f"timed out after {self.timeout_s} s"
            self.connection.close()  # replies still owed would arrive late, for nobody
        else:
            text = f"{type(exc).__name__}: {exc}"
        return BackendError(f"redis {safe_url(self.url)}: {text}")

    async def _call(self, script: str, payload: bytes) -> Any:
        self._check()
        try:
            async with asyncio.timeout(self.timeout_s):
                waiter = self.connection.send_ready(payload)
                if waiter is None:
                    return await self.connection.send(payload)
                return await waiter
        except RespError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise self._failed(exc) from None
        except (*_ERRORS, ConnectionError) as exc:
            raise self._failed(exc) from None
        # The scripts were flushed (SCRIPT FLUSH): load them again, once.
        try:
            async with asyncio.timeout(self.timeout_s * 4):
                await self.connection.send(pack_command(("SCRIPT", "LOAD", _SCRIPTS[script])))
                return await self.connection.send(payload)
        except (*_ERRORS, ConnectionError) as exc:
            raise self._failed(exc) from None

    async def reserve(self, lease: str, items: list[Args]) -> Verdict:
        reply = await self._call("reserve", _command("reserve", lease, items))
        if self._releases:
            self._resend()
        if reply[0] == 1:
            return Verdict(True, reply[1], reply[2:])
        return Verdict(False, reply[1], [reply[4]], reply[2] - 1, reply[3])

    def settle(self, lease: str, items: list[SettleArgs]) -> asyncio.Future[Any] | None:
        """Queue a settle (written with this turn's other commands, never awaited by the
        call); the future has each item's amount afterwards (for alerts). None when there is
        no connection: the reservation then lapses with its window and period."""
        keys = [item[1] for item in items if item[0] == PARALLEL]
        try:
            future = self.connection.send_ready(_command("settle", lease, items))
        except ConnectionError:
            future = None
        if keys:
            if future is None:
                self.release(lease, keys)
            else:
                future.add_done_callback(lambda f: self._released(f, lease, keys, 0))
        return future

    def release(self, lease: str, keys: list[str], attempt: int = 0) -> None:
        """Free a call's slots in flight (a ZREM: harmless if the lease was never taken),
        now if connected, else after the next reservation that succeeds."""
        if attempt >= 3:
            return  # the lease lapses by itself after lease_s
        items: list[SettleArgs] = [(PARALLEL, key, 0, 0, 0, 0) for key in keys]
        try:
            future = self.connection.send_ready(_command("settle", lease, items))
        except ConnectionError:
            future = None
        if future is None:
            self._releases.append((lease, keys, attempt + 1))
        else:
            future.add_done_callback(lambda f: self._released(f, lease, keys, attempt + 1))

    def _released(self, future: asyncio.Future[Any], lease: str, keys: list[str], n: int) -> None:
        if future.cancelled() or future.exception() is not None:
            self._releases.append((lease, keys, n))

    def _resend(self) -> None:
        pending = list(self._releases)
        self._releases.clear()
        for lease, keys, attempt in pending:
            self.release(lease, keys, attempt)

    async def usage(self, items: list[Args]) -> tuple[int, list[int]]:
        reply = await self._call("usage", _command("usage", "", items))
        return int(reply[0]), [int(v) for v in reply[1:]]

    async def mark_once(self, key: str, ttl_ms: int) -> bool:
        """SET NX: True for the one instance that marks `key` first (alerts fire once)."""
        payload = pack_command(("SET", key, "1", "NX", "PX", max(1, ttl_ms)))
        return await self._call("reserve", payload) is not None
