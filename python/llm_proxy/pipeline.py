"""The pipeline: the one place that knows the order of the stages.

authenticate -> policy -> route -> cache lookup -> provider -> relay -> cache store -> log
(each traced as a child of the call's span when `telemetry.otlp_endpoint` is set)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Protocol

from .cache import CacheTicket, ResponseCache, build_cache
from .calls import Call, Deployment, EventStream, Outcome, Reply, StreamSummary
from .config import Config
from .errors import GatewayError, model_not_found
from .observe.tracing import CallSpan, Tracer, build_tracer
from .providers import Provider, build_provider


class Observer(Protocol):
    """Receives every finished call (log records, metrics); must never block."""

    def finished(self, call: Call, outcome: Outcome) -> None: ...


class NullObserver:
    def finished(self, call: Call, outcome: Outcome) -> None:
        return None


class Router:
    """Resolves the model name a client asked for to a deployment and its provider."""

    def __init__(self, config: Config, providers: dict[str, Provider]) -> None:
        self._providers = providers
        self._deployments = {
            name: Deployment(name, model.provider, model.model)
            for name, model in config.models.items()
        }

    def names(self) -> list[str]:
        return list(self._deployments)

    def route(self, call: Call) -> tuple[Deployment, Provider]:
        deployment = self._deployments.get(call.model)
        if deployment is None:
            raise model_not_found(call.model)
        call.deployment = deployment
        return deployment, self._providers[deployment.provider]


class PipelineStream:
    """The provider's event stream as the client sees it, with the stages after the relay."""

    def __init__(
        self,
        pipeline: Pipeline,
        call: Call,
        inner: EventStream,
        cache_ticket: CacheTicket | None = None,
        span: CallSpan | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._call = call
        self._inner = inner
        # Set when the finished stream should be stored in the cache.
        self._ticket = cache_ticket if cache_ticket is not None and cache_ticket.store else None
        self._span = span
        self._recorded = False
        self.headers = inner.headers
        self.request_id = call.request_id

    async def __aiter__(self) -> AsyncGenerator[bytes, None]:
        call = self._call
        span = self._span
        outcome = Outcome(status=499, error_type="client_closed")
        first = True
        kept: list[bytes] | None = [] if self._ticket is not None else None
        budget = self._pipeline.cache.max_bytes if self._pipeline.cache is not None else 0
        if span is not None:
            span.stage("stream.relay")
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
            outcome = Outcome(exc.status, exc.type, exc.message)
            raise
        except Exception:
            # A bug, not the client leaving (that is CancelledError or GeneratorExit): the
            # front door answers it as a failed stream, and the record says so.
            outcome = Outcome(502, "api_error", "stream failed")
            raise
        finally:
            await self._inner.aclose()
            outcome.summary = self._inner.summary()
            cache = self._pipeline.cache
            if (
                kept is not None
                and cache is not None
                and self._ticket is not None
                and outcome.status == 200
                and outcome.summary is not None
            ):
                cache.store_stream(call, self._ticket, kept, outcome.summary, span)
            self._recorded = True
            self._pipeline._ended(call, outcome, span)

    def summary(self) -> StreamSummary | None:
        return self._inner.summary()

    async def aclose(self) -> None:
        await self._inner.aclose()
        if not self._recorded:  # never iterated: the client left before the first event
            self._recorded = True
            outcome = Outcome(status=499, error_type="client_closed")
            outcome.summary = self._inner.summary()
            self._pipeline._ended(self._call, outcome, self._span)


def _abandoned(exc: BaseException) -> Outcome:
    if isinstance(exc, asyncio.CancelledError):
        return Outcome(499, "client_closed", "the client left before the answer")
    return Outcome(500, "internal_error", type(exc).__name__)


class Pipeline:
    """Runs a Call through the stages; shared by the HTTP and gRPC front doors."""

    def __init__(self, config: Config, observer: Observer | None = None) -> None:
        self.config = config
        self.providers = {name: build_provider(name, p) for name, p in config.providers.items()}
        self.router = Router(config, self.providers)
        self.observer: Observer = observer or NullObserver()
        self.cache: ResponseCache | None = build_cache(config.cache)
        # Built by start(), inside the worker: its exporter holds a gRPC channel and a thread.
        self.tracer: Tracer | None = None
        self.ready = False

    async def start(self) -> None:
        for provider in self.providers.values():
            await provider.start()
        if self.cache is not None:
            await self.cache.start()
        self.tracer = build_tracer(self.config)
        self.ready = True

    async def close(self) -> None:
        self.ready = False
        if self.cache is not None:
            await self.cache.close()
        for provider in self.providers.values():
            await provider.close()
        if self.tracer is not None:
            tracer, self.tracer = self.tracer, None
            await asyncio.to_thread(tracer.shutdown)  # exports the spans still queued

    def model_names(self) -> list[str]:
        return self.router.names()

    # Tracing is optional and must cost nothing when off: `span` is None then, and each stage
    # pays one `is not None` check (no context managers, no no-op spans).

    async def complete(self, call: Call) -> Reply:
        """A whole answer."""
        cache = self.cache
        span = self.tracer.start(call) if self.tracer is not None else None
        try:
            # Routing is a dict lookup: done first so a hit is logged with its deployment.
            if span is not None:
                span.stage("route")
            deployment, provider = self.router.route(call)
            ticket = None
            if cache is not None:
                if span is not None:
                    span.stage("cache.lookup")
                ticket, hit = await cache.lookup_reply(call)
                if hit is not None:
                    self._ended(
                        call, Outcome(hit.status, usage=hit.usage, response_body=hit.body), span
                    )
                    return hit
            if span is not None:
                span.upstream(deployment)
            if cache is not None and ticket is not None:
                # Calls the provider and queues the cache write.
                reply = await cache.fill(
                    call, ticket, lambda: provider.complete(call, deployment), span
                )
            else:
                reply = await provider.complete(call, deployment)
        except GatewayError as exc:
            self._ended(call, Outcome(exc.status, exc.type, exc.message), span)
            raise
        except BaseException as exc:
            # Cancelled (the client left, its deadline passed) or a bug: still one log record.
            self._ended(call, _abandoned(exc), span)
            raise
        self._ended(call, Outcome(reply.status, usage=reply.usage, response_body=reply.body), span)
        return reply

    def _ended(self, call: Call, outcome: Outcome, span: CallSpan | None) -> None:
        """The last stage of every call: its log record and metrics, and its span's end."""
        self.observer.finished(call, outcome)
        if span is not None:
            span.finish(outcome)

    async def stream(self, call: Call) -> PipelineStream:
        """A streamed answer; errors before the first event are raised here.

        The call's span, if any, ends when the returned stream finishes or is closed.
        """
        span = self.tracer.start(call) if self.tracer is not None else None
        ticket = None
        try:
            if span is not None:
                span.stage("route")
            deployment, provider = self.router.route(call)
            if self.cache is not None:
                if span is not None:
                    span.stage("cache.lookup")
                ticket, hit = await self.cache.lookup_stream(call)
                if hit is not None:
                    return PipelineStream(self, call, hit, span=span)
            if span is not None:
                span.upstream(deployment)
            inner = await provider.stream(call, deployment)
        except GatewayError as exc:
            self._ended(call, Outcome(exc.status, exc.type, exc.message), span)
            raise
        except BaseException as exc:
            # Cancelled (the client left, its deadline passed) or a bug: still one log record.
            self._ended(call, _abandoned(exc), span)
            raise
        return PipelineStream(self, call, inner, ticket, span)
