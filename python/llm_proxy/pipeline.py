"""The pipeline: the one place that knows the order of the stages.

authenticate -> policy -> cache lookup -> route -> provider -> relay -> cache store -> log
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Protocol

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

    def __init__(self, pipeline: Pipeline, call: Call, inner: EventStream) -> None:
        self._pipeline = pipeline
        self._call = call
        self._inner = inner
        self.headers = inner.headers
        self.request_id = call.request_id

    async def __aiter__(self) -> AsyncGenerator[bytes, None]:
        call = self._call
        outcome = Outcome(status=499, error_type="client_closed")
        first = True
        try:
            async for event in self._inner:
                if first:
                    call.first_token_s = time.perf_counter() - call.started
                    first = False
                yield event
            outcome = Outcome(status=200)
        except GatewayError as exc:
            outcome = Outcome(exc.status, exc.type, exc.message)
            raise
        finally:
            await self._inner.aclose()
            outcome.summary = self._inner.summary()
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
        self.ready = False

    async def start(self) -> None:
        for provider in self.providers.values():
            await provider.start()
        self.ready = True

    async def close(self) -> None:
        self.ready = False
        for provider in self.providers.values():
            await provider.close()

    def model_names(self) -> list[str]:
        return self.router.names()

    async def complete(self, call: Call) -> Reply:
        """A whole answer."""
        try:
            deployment, provider = self.router.route(call)
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
        try:
            deployment, provider = self.router.route(call)
            inner = await provider.stream(call, deployment)
        except GatewayError as exc:
            self.observer.finished(call, Outcome(exc.status, exc.type, exc.message))
            raise
        return PipelineStream(self, call, inner)
