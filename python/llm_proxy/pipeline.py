"""The pipeline: the one place that knows the order of the stages.

authenticate -> policy -> route -> cache lookup -> provider -> relay -> cache store -> log
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Protocol

from .cache import CacheTicket, ResponseCache, build_cache
from .calls import Call, Deployment, EventStream, Outcome, Reply, StreamSummary
from .config import Config
from .errors import GatewayError, model_not_found
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
    ) -> None:
        self._pipeline = pipeline
        self._call = call
        self._inner = inner
        # Set when the finished stream should be stored in the cache.
        self._ticket = cache_ticket if cache_ticket is not None and cache_ticket.store else None
        self.headers = inner.headers
        self.request_id = call.request_id

    async def __aiter__(self) -> AsyncGenerator[bytes, None]:
        call = self._call
        outcome = Outcome(status=499, error_type="client_closed")
        first = True
        kept: list[bytes] | None = [] if self._ticket is not None else None
        budget = self._pipeline.cache.max_bytes if self._pipeline.cache is not None else 0
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
                cache.store_stream(call, self._ticket, kept, outcome.summary)
            self._pipeline.observer.finished(call, outcome)

    def summary(self) -> StreamSummary | None:
        return self._inner.summary()

    async def aclose(self) -> None:
        await self._inner.aclose()


class Pipeline:
    """Runs a Call through the stages; shared by the HTTP and gRPC front doors."""

    def __init__(self, config: Config, observer: Observer | None = None) -> None:
        self.config = config
        self.providers = {name: build_provider(name, p) for name, p in config.providers.items()}
        self.router = Router(config, self.providers)
        self.observer: Observer = observer or NullObserver()
        self.cache: ResponseCache | None = build_cache(config.cache)
        self.ready = False

    async def start(self) -> None:
        for provider in self.providers.values():
            await provider.start()
        if self.cache is not None:
            await self.cache.start()
        self.ready = True

    async def close(self) -> None:
        self.ready = False
        if self.cache is not None:
            await self.cache.close()
        for provider in self.providers.values():
            await provider.close()

    def model_names(self) -> list[str]:
        return self.router.names()

    async def complete(self, call: Call) -> Reply:
        """A whole answer."""
        cache = self.cache
        try:
            # Routing is a dict lookup: done first so a hit is logged with its deployment.
            deployment, provider = self.router.route(call)
            ticket = None
            if cache is not None:
                ticket, hit = await cache.lookup_reply(call)
                if hit is not None:
                    self.observer.finished(
                        call, Outcome(hit.status, usage=hit.usage, response_body=hit.body)
                    )
                    return hit
            if cache is not None and ticket is not None:
                reply = await cache.fill(call, ticket, lambda: provider.complete(call, deployment))
            else:
                reply = await provider.complete(call, deployment)
        except GatewayError as exc:
            self.observer.finished(call, Outcome(exc.status, exc.type, exc.message))
            raise
        self.observer.finished(
            call, Outcome(reply.status, usage=reply.usage, response_body=reply.body)
        )
        return reply

    async def stream(self, call: Call) -> PipelineStream:
        """A streamed answer; errors before the first event are raised here."""
        ticket = None
        try:
            deployment, provider = self.router.route(call)
            if self.cache is not None:
                ticket, hit = await self.cache.lookup_stream(call)
                if hit is not None:
                    return PipelineStream(self, call, hit)
            inner = await provider.stream(call, deployment)
        except GatewayError as exc:
            self.observer.finished(call, Outcome(exc.status, exc.type, exc.message))
            raise
        return PipelineStream(self, call, inner, ticket)
