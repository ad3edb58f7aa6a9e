"""The cache stage: lookup before the provider, store after, identical misses coalesced."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import _core
from ..calls import Call, Reply, StreamSummary
from ..config import CacheConfig
from ..errors import GatewayError
from .entry import CacheBackend, CacheEntry, stream_entry
from .replay import ReplayStream, entry_usage, replay_events, whole_body

if TYPE_CHECKING:
    pass

log = logging.getLogger("llm_proxy.cache")

_WRITE_QUEUE = 4096
_WRITE_BATCH = 256


@dataclass(slots=True)
class CacheTicket:
    """What the lookup decided for one call, carried to the store after the response."""

    key: str
    store: bool
    ttl_s: float
    coalesce: bool


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    bypasses: int = 0
    coalesced: int = 0
    writes: int = 0
    errors: int = 0
    dropped_writes: int = 0


@dataclass(slots=True)
class _StreamCapture:
    events: list[bytes]
    summary: StreamSummary
    created: float
    # To count the prompt when the upstream reported no usage (the client did not ask).
    endpoint: str
    prompt_json: bytes
    model: str

    def prompt_tokens(self) -> int:
        if not self.summary.usage_counted or self.summary.prompt_tokens:
            return self.summary.prompt_tokens
        try:
            if self.endpoint == "chat":
                return int(_core.count_chat_tokens(self.prompt_json, self.model))
            text = self.prompt_json.decode()
            return int(_core.count_tokens(text, _core.encoding_for_model(self.model)))
        except Exception:
            return 0


_Pending = tuple[str, float, CacheEntry | _StreamCapture]


class FailureLog:
    """Counts backend failures and logs them at most once per interval, not per request."""

    def __init__(self, what: str, interval_s: float) -> None:
        self.what = what
        self.interval_s = interval_s
        self.total = 0
        self._unlogged = 0
        self._last_logged = -float("inf")

    def record(self, exc: BaseException) -> None:
        self.total += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._last_logged >= self.interval_s:
            log.warning(
                "%s failing (%d failure(s) since last report, %d in all); requests go to the "
                "upstream as misses. Last error: %s",
                self.what,
                self._unlogged,
                self.total,
                exc,
            )
            self._last_logged = now
            self._unlogged = 0


def _parse_cache_control(value: str) -> tuple[bool, bool, float | None]:
    """(look up, store, max age) from a Cache-Control request header."""
    lookup, store, max_age = True, True, None
    for part in value.lower().split(","):
        token = part.strip()
        if token == "no-cache":
            lookup = False
        elif token == "no-store":
            store = False
        elif token.startswith("max-age="):
            with contextlib.suppress(ValueError):
                max_age = max(0.0, float(token[8:].strip().strip('"')))
    return lookup, store, max_age


class ResponseCache:
    """Exact-match response cache over one backend, for the endpoints the config names."""

    def __init__(self, config: CacheConfig, backend: CacheBackend) -> None:
        self.config = config
        self.backend = backend
        self.ttl_s = config.ttl_s
        self.max_bytes = config.max_bytes
        self.scope = config.scope or "global"
        self.endpoints = frozenset(config.endpoints)
        self.stats = CacheStats()
        self.failures = FailureLog(f"cache backend `{config.backend}`", config.log_interval_s)
        self._inflight: dict[str, asyncio.Future[Reply | GatewayError | None]] = {}
        self._queue: asyncio.Queue[_Pending] | None = None
        self._writer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.backend.start()
        self._queue = asyncio.Queue(_WRITE_QUEUE)
        self._writer = asyncio.get_running_loop().create_task(self._drain())

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        if self._queue is not None and not self._queue.empty():
            with contextlib.suppress(Exception):
                await self._write(self._take_all(self._queue))
        await self.backend.close()

    # -- lookup ----------------------------------------------------------------------------

    def _namespace(self, call: Call) -> str:
        deployment = call.deployment
        base = call.endpoint + ":" + (deployment.name if deployment is not None else call.model)
        if self.scope == "global":
            return base
        if self.scope == "team":
            if call.key_id is not None:  # an authenticated caller's team is its key's
                return base + "|team:" + (call.team or "")
            team = call.team or call.headers.get("x-llm-proxy-team") or ""
            return base + "|team:" + str(team)
        if call.key_id is not None:  # the authenticated key: stable across its rotations
            return base + "|key:" + call.key_id
        secret = call.headers.get("authorization") or ""
        digest = hashlib.blake2b(str(secret).encode(), digest_size=16).hexdigest()
        return base + "|key:" + digest

    async def _find(self, call: Call) -> tuple[CacheTicket | None, CacheEntry | None]:
        # A passthrough answer is not in OpenAI's format, which entries and replay assume.
        if call.endpoint not in self.endpoints or call.passthrough:
            call.cache_status = "bypass"
            self.stats.bypasses += 1
            return None, None
        headers = call.headers
        lookup, store, max_age = True, True, None
        control = headers.get("cache-control")
        if control:
            lookup, store, max_age = _parse_cache_control(str(control))
        ttl_s = self.ttl_s
        ttl_header = headers.get("x-llm-proxy-cache-ttl")
        if ttl_header:
            with contextlib.suppress(ValueError):
                ttl_s = float(ttl_header)
            if ttl_s <= 0:
                store = False
        try:
            key = _core.cache_key(call.body, self._namespace(call))
        except Exception:  # a body the key cannot read is served uncached, never failed
            call.cache_status = "bypass"
            self.stats.bypasses += 1
            return None, None
        ticket = CacheTicket(key, store, ttl_s, lookup and store)
        if not lookup:
            call.cache_status = "bypass"
            self.stats.bypasses += 1
            return ticket, None
        try:
            entry = await self.backend.get(key)
        except Exception as exc:
            self.stats.errors += 1
            self.failures.record(exc)
            entry = None
        if entry is not None:
            age = time.time() - entry.created
            if max_age is None or age <= max_age:
                call.cache_age_s = max(0.0, age)
                return ticket, entry
        return ticket, None

    def _miss(self, call: Call) -> None:
        call.cache_status = "miss"
        call.cache_age_s = None
        self.stats.misses += 1

    def _hit(self, call: Call) -> None:
        call.cache_status = "hit"
        self.stats.hits += 1

    async def lookup_reply(self, call: Call) -> tuple[CacheTicket | None, Reply | None]:
        """A whole answer from the cache, or the ticket to store the answer under."""
        ticket, entry = await self._find(call)
        if entry is not None:
            body = whole_body(entry, call)
            if body is not None:
                self._hit(call)
                return ticket, Reply(body, usage=entry_usage(entry))
        if ticket is not None and call.cache_status != "bypass":
            self._miss(call)
        return ticket, None

    async def lookup_stream(self, call: Call) -> tuple[CacheTicket | None, ReplayStream | None]:
        """A streamed answer from the cache, or the ticket to store the stream under."""
        ticket, entry = await self._find(call)
        if entry is not None:
            events = replay_events(entry, call)
            if events is not None:
                self._hit(call)
                return ticket, ReplayStream(events, entry)
        if ticket is not None and call.cache_status != "bypass":
            self._miss(call)
        return ticket, None

    # -- fill ------------------------------------------------------------------------------

    async def fill(
        self,
        call: Call,
        ticket: CacheTicket,
        fetch: Callable[[], Awaitable[Reply]],
    ) -> Reply:
        """Call the upstream for a miss (once for concurrent identical misses) and store.

        The store runs as the call span's `cache.store` stage when tracing is on.
        """
        if not ticket.coalesce:
            reply = await fetch()
            self.store_reply(call, ticket, reply)
            return reply
        key = ticket.key
        flight = self._inflight.get(key)
        if flight is not None:
            result = await asyncio.shield(flight)
            if isinstance(result, Reply):
                self.stats.coalesced += 1
                self.stats.misses -= 1
                self._hit(call)
                call.cache_age_s = 0.0
                return result
            if isinstance(result, GatewayError):
                raise result
            return await fetch()  # the first caller went away; answer this one ourselves
        flight = asyncio.get_running_loop().create_future()
        self._inflight[key] = flight
        try:
            reply = await fetch()
        except GatewayError as exc:
            flight.set_result(exc)
            raise
        except BaseException:
            flight.set_result(None)
            raise
        finally:
            del self._inflight[key]
        flight.set_result(reply)
        self.store_reply(call, ticket, reply)
        return reply

    # -- store (off the response path) ------------------------------------------------------

    def store_reply(self, call: Call, ticket: CacheTicket, reply: Reply) -> None:
        if not ticket.store or reply.status != 200 or len(reply.body) > self.max_bytes:
            return
        if call.span is not None:
            call.span.stage("cache.store")
        usage = reply.usage
        entry = CacheEntry(
            created=time.time(),
            body=reply.body,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )
        self._enqueue((ticket.key, ticket.ttl_s, entry))

    def store_stream(
        self,
        call: Call,
        ticket: CacheTicket,
        events: list[bytes],
        summary: StreamSummary,
    ) -> None:
        """Store a stream that finished whole; the entry is built by the writer."""
        if not ticket.store or not summary.done or summary.error is not None:
            return
        if call.span is not None:
            call.span.stage("cache.store")
        model = call.deployment.model if call.deployment is not None else call.model
        capture = _StreamCapture(
            events, summary, time.time(), call.endpoint, call.prompt_json, model
        )
        self._enqueue((ticket.key, ticket.ttl_s, capture))

    def _enqueue(self, item: _Pending) -> None:
        queue = self._queue
        if queue is None:
            return
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:
            self.stats.dropped_writes += 1
            self.failures.record(RuntimeError("cache write queue is full; dropped a write"))

    @staticmethod
    def _take_all(queue: asyncio.Queue[_Pending]) -> list[_Pending]:
        batch: list[_Pending] = []
        while not queue.empty() and len(batch) < _WRITE_BATCH:
            batch.append(queue.get_nowait())
        return batch

    async def _drain(self) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            first = await queue.get()
            batch = [first, *self._take_all(queue)]
            try:
                await self._write(batch)
            except Exception as exc:
                self.stats.errors += 1
                self.failures.record(exc)

    async def _write(self, batch: list[_Pending]) -> None:
        items: list[tuple[str, CacheEntry, float]] = []
        for key, ttl_s, value in batch:
            if isinstance(value, _StreamCapture):
                built = stream_entry(
                    value.events, value.summary, value.created, value.prompt_tokens()
                )
                if built is None:
                    continue
                value = built
            items.append((key, value, ttl_s))
        if items:
            await self.backend.set_many(items)
            self.stats.writes += len(items)
