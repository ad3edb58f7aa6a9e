"""Attempts at a group's deployments, retries and fallbacks, all inside the call's deadline.

A whole call is retried until an answer; a streamed one until its first event, which is held
back until then, so a stream that fails before it reaches the client is served whole by the
next deployment. After the first event a failure ends the stream (one error event).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..calls import Call, EventStream, Reply, StreamSummary
from ..errors import GatewayError
from .attempts import RETRYABLE, Attempt, RouteState, failure_kind, retry_after_s
from .group import DeploymentState, ModelGroup

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 2.0


class _Failed(Exception):
    """An attempt that failed before the client saw anything."""

    def __init__(self, exc: GatewayError) -> None:
        self.exc = exc


def _backoff(retry: int) -> float:
    """Full jitter: a random wait up to the exponential step."""
    return random.random() * min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0**retry)


async def run(
    call: Call,
    route: RouteState,
    attempt: Callable[[Call, DeploymentState, RouteState], Awaitable[Any]],
) -> Any:
    """Try deployments until one answers; the error of the last attempt if none does."""
    group = route.group
    if group.timeout_s is not None:
        limit = time.monotonic() + group.timeout_s
        if call.deadline is None or limit < call.deadline:
            call.deadline = limit
    session = call.headers.get("x-llm-proxy-session")
    session = str(session) if session else None
    retries_left = group.retries
    retry = 0
    tried: list[DeploymentState] = []
    used: list[ModelGroup] | None = None  # the models tried, once one attempt failed
    while True:
        now = time.monotonic()
        deployment = group.pick(tried, now, call.stream, session, route.need_tokens)
        try:
            return await attempt(call, deployment, route)
        except _Failed as failed:
            exc = failed.exc
        kind = failure_kind(exc)
        now = time.monotonic()
        if deployment not in tried:
            tried.append(deployment)
        wait = None
        if kind in RETRYABLE and retries_left > 0:
            others = any(d not in tried for d in group.ready(now, route.need_tokens))
            wait = 0.0 if others else _backoff(retry)
            if not others and exc.status == 429:
                after = retry_after_s(exc)
                if after is not None:
                    wait = max(wait, after)
            if call.deadline is not None and now + wait >= call.deadline:
                wait = None  # no time left for it: fall back instead, or give up
        if wait is not None:
            retries_left -= 1
            retry += 1
            if wait > 0:
                await asyncio.sleep(wait)
                call.upstream_s += wait  # waiting on the upstream, not the gateway's own time
            continue
        if used is None:
            used = [route.asked, group]
        target = _fallback(route, kind, used) if kind is not None else None
        if target is None or (call.deadline is not None and time.monotonic() >= call.deadline):
            exc.headers = [*exc.headers, *route.headers(deployment.id)]
            raise exc
        used.append(target)
        group = target
        route.fallback = target.name
        retries_left, retry, tried = target.retries, 0, []


def _fallback(route: RouteState, kind: str, used: list[ModelGroup]) -> ModelGroup | None:
    for target in route.asked.fallbacks.get(kind, ()):
        if target not in used and (route.need_tokens == 0 or target.fits(route.need_tokens)):
            return target
    return None


async def attempt_whole(call: Call, deployment: DeploymentState, route: RouteState) -> Reply:
    """One try at a whole answer."""
    call.deployment = deployment.deployment
    deployment.attempts += 1
    deployment.inflight += 1
    started = time.perf_counter()
    try:
        reply = await deployment.provider.complete(call, deployment.deployment)
    except GatewayError as exc:
        _note_failure(deployment, route, exc, started)
        raise _Failed(exc) from None
    except BaseException:
        deployment.breaker.released()
        raise
    finally:
        deployment.inflight -= 1
    took = time.perf_counter() - started
    deployment.succeeded(time.monotonic(), took, took)
    if deployment.metered and reply.usage is not None:
        deployment.count_tokens(reply.usage.prompt_tokens + reply.usage.completion_tokens)
    route.attempts.append(Attempt(deployment.id, reply.status, took * 1000.0, None, route.fallback))
    reply.headers = [*reply.headers, *route.headers(deployment.id)]
    return reply


def _note_failure(
    deployment: DeploymentState, route: RouteState, exc: GatewayError, started: float
) -> None:
    took = time.perf_counter() - started
    kind = failure_kind(exc) or "error"
    route.attempts.append(Attempt(deployment.id, exc.status, took * 1000.0, kind, route.fallback))
    deployment.failed(time.monotonic(), exc.status, kind, exc.message, retry_after_s(exc))


async def attempt_stream(
    call: Call, deployment: DeploymentState, route: RouteState
) -> RoutedStream:
    """One try at a stream, up to its first event (held back for the client)."""
    call.deployment = deployment.deployment
    deployment.attempts += 1
    deployment.inflight += 1
    started = time.perf_counter()
    inner: EventStream | None = None
    events: Any = None
    try:
        inner = await deployment.provider.stream(call, deployment.deployment)
        events = inner.__aiter__()
        try:
            first: bytes | None = await anext(events)
        except StopAsyncIteration:
            first = None
    except GatewayError as exc:
        deployment.inflight -= 1
        await _close(events, inner)
        _note_failure(deployment, route, exc, started)
        raise _Failed(exc) from None
    except BaseException:
        deployment.inflight -= 1
        deployment.breaker.released()
        await _close(events, inner)
        raise
    ttfb = time.perf_counter() - started
    route.attempts.append(Attempt(deployment.id, 200, ttfb * 1000.0, None, route.fallback))
    return RoutedStream(inner, events, first, deployment, route, started, ttfb)


async def _close(events: Any, inner: EventStream | None) -> None:
    try:
        if events is not None:
            await events.aclose()
        if inner is not None:
            await inner.aclose()
    except Exception:  # the attempt's own error is the one that matters
        pass


class RoutedStream:
    """A stream whose first event is already in hand; the deployment's state is kept as it
    runs (in flight until it ends; a failure after the first event counts for the breaker)."""

    def __init__(
        self,
        inner: EventStream,
        events: AsyncIterator[bytes],
        first: bytes | None,
        deployment: DeploymentState,
        route: RouteState,
        started: float,
        ttfb_s: float,
    ) -> None:
        self._inner = inner
        self._events = events
        self._first = first
        self._deployment = deployment
        self._route = route
        self._started = started
        self._ttfb_s = ttfb_s
        self._done = False
        self.headers = [*inner.headers, *route.headers(deployment.id)]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        deployment = self._deployment
        finished = False
        try:
            if self._first is not None:
                yield self._first
                async for event in self._events:
                    yield event
            finished = True
        except GatewayError as exc:
            if not self._done:
                self._done = True
                deployment.inflight -= 1
                attempt = self._route.attempts[-1]
                attempt.status, attempt.error = exc.status, failure_kind(exc) or "error"
                deployment.failed(
                    time.monotonic(), exc.status, attempt.error, exc.message, retry_after_s(exc)
                )
            raise
        finally:
            self._end(ok=finished)

    def _end(self, ok: bool) -> None:
        if self._done:
            return
        self._done = True
        deployment = self._deployment
        deployment.inflight -= 1
        if ok:
            total = time.perf_counter() - self._started
            deployment.succeeded(time.monotonic(), self._ttfb_s, total)
        if deployment.metered:
            summary = self._inner.summary()
            if summary is not None:
                deployment.count_tokens(summary.prompt_tokens + summary.completion_tokens)
        else:
            deployment.breaker.released()

    def summary(self) -> StreamSummary | None:
        return self._inner.summary()

    async def aclose(self) -> None:
        events = self._events
        self._end(ok=False)
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
        await self._inner.aclose()
