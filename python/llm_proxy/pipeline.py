"""The pipeline: the one place that knows the order of the stages, the same for both doors.

Every call, whole or streamed, runs:

1. admission: each stage of `Pipeline.admission` in order. Today that is `authenticate`
   (with `auth.mode: keys`: the caller's key, its allowed endpoints and models; first, so
   nothing is spent on a refused call), then `route` (the model name to its deployment, or
   to its group of deployments: an unknown model is refused here), then `limits` (when any
   limit or budget can apply: the call's requests, tokens, slot in flight and maximum cost
   reserved in every scope it meets, all or nothing; after `route`, whose deployment
   prices the call). The coming stages (input guardrails, prompt rendering) join this list;
   any stage refuses a call by raising GatewayError.
2. `cache.lookup`: a hit answers the call (replayed as a stream when streamed); 3 is skipped.
3. `upstream`: the deployment's provider answers, whole or as an event stream; for a
   group, the router's runner does (deployments picked by strategy, retries and fallbacks
   inside the deadline; a stream until its first event). A whole answer fills the cache here.
4. relay (streams): each event goes to the client as it arrives (`PipelineStream`); a
   stream that finished whole is stored in the cache when it ends.
5. record: the recorder gets every call exactly once, whatever happened (refused,
   failed, cancelled or answered), after the response is on its way; the limits stage's
   reservation is settled with what the call really used.

With tracing on, the call has a span (`call.span`) and each named step above is a child span.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable
from typing import Protocol

from .cache import CacheTicket, ResponseCache, build_cache
from .calls import (
    Call,
    EventStream,
    Outcome,
    Reply,
    StreamSummary,
    cancelled_outcome,
)
from .config import Config
from .credentials import SecretMask, configured_secrets
from .errors import GatewayError
from .limits.stage import Limiter
from .observe.tracing import Tracer, build_tracer
from .pricing import PriceTable
from .providers import Provider, build_provider
from .routing import Router


class Recorder(Protocol):
    """Receives every finished call (log records, metrics); must never block."""

    def finished(self, call: Call, outcome: Outcome) -> None: ...


class NullRecorder:
    def finished(self, call: Call, outcome: Outcome) -> None:
        return None


class Stage(Protocol):
    """An admission stage: checks or changes the call, or refuses it with GatewayError.

    A stage that needs I/O returns an awaitable; one that does not returns None (and costs
    no coroutine).
    """

    name: str

    def __call__(self, call: Call) -> Awaitable[None] | None: ...


class PipelineStream:
    """The provider's event stream as the client sees it, with the stages after the relay."""

    def __init__(
        self,
        pipeline: Pipeline,
        call: Call,
        inner: EventStream,
        cache_ticket: CacheTicket | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._call = call
        self._inner = inner
        # Set when the finished stream should be stored in the cache.
        self._ticket = cache_ticket if cache_ticket is not None and cache_ticket.store else None
        self._recorded = False
        self.headers = (
            inner.headers if call.rate_headers is None else [*inner.headers, *call.rate_headers]
        )
        self.request_id = call.request_id

    async def __aiter__(self) -> AsyncGenerator[bytes, None]:
        call = self._call
        # None while the stream runs; left None only if it was cancelled.
        outcome: Outcome | None = None
        first = True
        kept: list[bytes] | None = [] if self._ticket is not None else None
        budget = self._pipeline.cache.max_bytes if self._pipeline.cache is not None else 0
        if call.span is not None:
            call.span.stage("stream.relay")
        try:
            async for event in self._inner:
                if first:
                    call.first_token_s = time.perf_counter() - call.started
                    first = False
                if kept is not None:
                    budget -= len(event)
                    kept.append(event)
                    if budget < 0:
                        kept = None  # too big to cache; stop collecting
                yield event
            outcome = Outcome(status=200)
        except GatewayError as exc:
            self._pipeline._secrets.error(exc)
            outcome = Outcome(exc.status, exc.type, exc.message)
            raise
        except Exception:
            # A bug, not the client leaving (that is CancelledError or GeneratorExit): the
            # front door answers it as a failed stream, and the record says so.
            outcome = Outcome(502, "api_error", "stream failed")
            raise
        finally:
            await self._inner.aclose()
            if outcome is None:
                outcome = cancelled_outcome(call)
            outcome.summary = self._inner.summary()
            cache = self._pipeline.cache
            if (
                kept is not None
                and cache is not None
                and self._ticket is not None
                and outcome.status == 200
                and outcome.summary is not None
            ):
                cache.store_stream(call, self._ticket, kept, outcome.summary)
            self._recorded = True
            self._pipeline.ended(call, outcome)

    def summary(self) -> StreamSummary | None:
        return self._inner.summary()

    async def aclose(self) -> None:
        await self._inner.aclose()
        if not self._recorded:  # never iterated: the client left before the first event
            self._recorded = True
            outcome = cancelled_outcome(self._call)
            outcome.summary = self._inner.summary()
            self._pipeline.ended(self._call, outcome)


def _failed(call: Call, exc: BaseException) -> Outcome:
    """The outcome of a call that raised: refused or failed (GatewayError), cancelled (the
    client left, its deadline passed) or a bug; each is still one log record."""
    if isinstance(exc, GatewayError):
        return Outcome(exc.status, exc.type, exc.message)
    if isinstance(exc, asyncio.CancelledError):
        return cancelled_outcome(call)
    return Outcome(500, "internal_error", type(exc).__name__)


class Pipeline:
    """Runs a Call through the stages; shared by the HTTP and gRPC front doors."""

    def __init__(
        self, config: Config, recorder: Recorder | None = None, auth: Stage | None = None
    ) -> None:
        self.config = config
        self.providers = {name: build_provider(name, p) for name, p in config.providers.items()}
        self.router = Router(config, self.providers)
        self.recorder: Recorder = recorder or NullRecorder()
        self.prices = PriceTable.from_config(config)
        self.limiter: Limiter | None = None
        if Limiter.wanted(config):
            self.limiter = Limiter(
                config,
                self.prices,
                keys=getattr(auth, "table", None),
                metrics=getattr(self.recorder, "prometheus", None),
            )
        # Admission stages, in order (see the module docstring).
        self.admission: list[Stage] = [self.router] if auth is None else [auth, self.router]
        if self.limiter is not None:
            self.admission.append(self.limiter)
        # Provider keys an upstream echoes in its error never reach the client or the log.
        self._secrets = SecretMask(configured_secrets(config))
        self.cache: ResponseCache | None = build_cache(config.cache)
        # Built by start(), inside the worker: its exporter holds a gRPC channel and a thread.
        self.tracer: Tracer | None = None
        self.ready = False

    async def start(self) -> None:
        for provider in self.providers.values():
            await provider.start()
        await self.router.start()
        if self.limiter is not None:
            await self.limiter.start()
        if self.cache is not None:
            await self.cache.start()
        self.tracer = build_tracer(self.config)
        self.ready = True

    async def close(self) -> None:
        self.ready = False
        await self.router.close()
        if self.limiter is not None:
            await self.limiter.close()
        if self.cache is not None:
            await self.cache.close()
        for provider in self.providers.values():
            await provider.close()
        if self.tracer is not None:
            tracer, self.tracer = self.tracer, None
            await asyncio.to_thread(tracer.shutdown)  # exports the spans still queued

    def model_names(self) -> list[str]:
        return self.router.names()

    # Tracing must cost nothing when off: `call.span` is None then, and each step pays one
    # `is not None` check (no context managers, no no-op spans).

    async def _admit(self, call: Call) -> Provider | None:
        """Steps 1 (admission) of both paths; the provider of the call's deployment (None for
        a group's call: the router's runner calls the providers)."""
        if self.tracer is not None:
            call.span = self.tracer.start(call)
        span = call.span
        for stage in self.admission:
            if span is not None:
                span.stage(stage.name)
            pending = stage(call)
            if pending is not None:
                await pending
        deployment = call.deployment
        assert deployment is not None, "the route stage sets the deployment"
        if call.routing is not None:
            return None
        return self.providers[deployment.provider]

    async def admit(self, call: Call) -> Provider:
        """Admission alone, for a call answered without the upstream step (a token count);
        the caller records it with `ended`. For a group, its first deployment's provider."""
        call.max_tokens = 0  # nothing is generated: no output tokens to reserve
        provider = await self._admit(call)
        if provider is None:
            deployment = call.deployment
            assert deployment is not None
            return self.providers[deployment.provider]
        return provider

    async def complete(self, call: Call) -> Reply:
        """A whole answer."""
        try:
            provider = await self._admit(call)
            deployment = call.deployment
            assert deployment is not None
            cache = self.cache
            span = call.span
            ticket = None
            if cache is not None:
                if span is not None:
                    span.stage("cache.lookup")
                ticket, hit = await cache.lookup_reply(call)
                if hit is not None:
                    return self._answered(call, hit)
            if span is not None:
                span.upstream(deployment)
            if cache is not None and ticket is not None:
                # Calls the provider and queues the cache write.
                reply = await cache.fill(
                    call,
                    ticket,
                    lambda: (
                        provider.complete(call, deployment)
                        if provider is not None
                        else self.router.complete(call)
                    ),
                )
            elif provider is None:
                reply = await self.router.complete(call)
            else:
                reply = await provider.complete(call, deployment)
        except BaseException as exc:
            self.ended(call, self._failed(call, exc))
            raise
        return self._answered(call, reply)

    def _answered(self, call: Call, reply: Reply) -> Reply:
        """The end of a whole answer, from the cache or the upstream: recorded, and given the
        limits' headers."""
        self.ended(call, Outcome(reply.status, usage=reply.usage, response_body=reply.body))
        if call.rate_headers is not None:
            reply.headers = [*reply.headers, *call.rate_headers]
        return reply

    async def stream(self, call: Call) -> PipelineStream:
        """A streamed answer; errors before the first event are raised here.

        The call's span, if any, ends when the returned stream finishes or is closed.
        """
        try:
            provider = await self._admit(call)
            deployment = call.deployment
            assert deployment is not None
            cache = self.cache
            span = call.span
            ticket = None
            if cache is not None:
                if span is not None:
                    span.stage("cache.lookup")
                ticket, hit = await cache.lookup_stream(call)
                if hit is not None:
                    return PipelineStream(self, call, hit)
            if span is not None:
                span.upstream(deployment)
            if provider is None:
                inner = await self.router.stream(call)
            else:
                inner = await provider.stream(call, deployment)
        except BaseException as exc:
            self.ended(call, self._failed(call, exc))
            raise
        return PipelineStream(self, call, inner, ticket)

    def _failed(self, call: Call, exc: BaseException) -> Outcome:
        """The outcome of a call that raised; a GatewayError's upstream-echoed secrets are
        masked first, so neither the client nor the record sees them."""
        if isinstance(exc, GatewayError):
            self._secrets.error(exc)
        return _failed(call, exc)

    def ended(self, call: Call, outcome: Outcome) -> None:
        """Step 5 of every call: its log record and metrics, and its span's end."""
        if call.limits is not None:
            self.limiter.settle(call, outcome)  # type: ignore[union-attr]
        self.recorder.finished(call, outcome)
        span = call.span
        if span is not None:
            span.finish(outcome)
