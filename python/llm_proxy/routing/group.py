"""A model group: its deployments, their live state, and how the next one is picked."""

from __future__ import annotations

import collections
import random
import time
import zlib
from bisect import bisect_right
from itertools import accumulate

from ..calls import Deployment
from ..config import DeploymentConfig, ModelConfig
from ..providers import Provider
from .breaker import Breaker
from .model_table import model_facts

_EWMA = 0.3  # weight of the newest sample in the latency averages
_INF = float("inf")


class DeploymentState:
    """One deployment of a group and what the gateway has seen of it."""

    __slots__ = (
        "attempts",
        "breaker",
        "context_window",
        "deployment",
        "errors",
        "ewma_total_s",
        "ewma_ttfb_s",
        "failures",
        "id",
        "inflight",
        "last_failure",
        "limit",
        "metered",
        "minute_requests",
        "minute_started",
        "minute_tokens",
        "owner",
        "price",
        "provider",
        "rpm",
        "tpm",
        "weight",
    )

    def __init__(
        self, group: str, config: DeploymentConfig, provider: Provider, model: ModelConfig
    ) -> None:
        self.id = config.name or f"{config.provider}/{config.model}"
        # Named for the group, as the cache and the log know the call.
        self.deployment = Deployment(group, config.provider, config.model)
        self.provider = provider
        self.weight = config.weight
        self.limit = config.max_concurrency
        self.rpm, self.tpm = config.rpm, config.tpm
        self.metered = config.rpm is not None or config.tpm is not None
        self.minute_started = 0.0  # the start of the current minute of counting
        self.minute_requests = self.minute_tokens = 0
        facts = model_facts(config.model)
        self.context_window = config.context_window or (facts.context_window if facts else None)
        if config.price is not None:
            self.price = config.price.input + config.price.output
        elif facts is not None and facts.input is not None and facts.output is not None:
            self.price = facts.input + facts.output
        else:
            self.price = _INF
        self.breaker = Breaker(model.breaker)
        self.owner: ModelGroup | None = None  # set by the group, which counts open breakers
        self.inflight = 0
        self.ewma_ttfb_s = 0.0
        self.ewma_total_s = 0.0
        self.last_failure = 0.0
        self.attempts = 0
        self.failures = 0
        # (unix time, status, kind, message) of the latest failures, newest last.
        self.errors: collections.deque[tuple[float, int, str, str]] = collections.deque(maxlen=5)

    def ready(self, now: float) -> bool:
        """Healthy (breaker closed, or half-open with no trial out) and below its limit."""
        breaker = self.breaker
        if breaker.opened and not breaker.available(now):
            return False
        if self.limit is not None and self.inflight >= self.limit:
            return False
        if self.metered:
            if now - self.minute_started >= 60.0:
                self.minute_started, self.minute_requests, self.minute_tokens = now, 0, 0
            if self.rpm is not None and self.minute_requests >= self.rpm:
                return False
            if self.tpm is not None and self.minute_tokens >= self.tpm:
                return False
        return True

    def count_request(self, now: float) -> None:
        if now - self.minute_started >= 60.0:
            self.minute_started, self.minute_requests, self.minute_tokens = now, 0, 0
        self.minute_requests += 1

    def count_tokens(self, tokens: int) -> None:
        self.minute_tokens += tokens

    def succeeded(self, now: float, ttfb_s: float, total_s: float) -> None:
        breaker = self.breaker
        if breaker.opened:
            breaker.success(now)
            if not breaker.opened and self.owner is not None:
                self.owner.open_breakers -= 1
        else:
            breaker.success(now)
        if self.ewma_total_s == 0.0:
            self.ewma_ttfb_s, self.ewma_total_s = ttfb_s, total_s
        else:
            self.ewma_ttfb_s += _EWMA * (ttfb_s - self.ewma_ttfb_s)
            self.ewma_total_s += _EWMA * (total_s - self.ewma_total_s)

    def failed(
        self, now: float, status: int, kind: str, message: str, retry_after: float | None
    ) -> None:
        self.failures += 1
        self.last_failure = now
        self.errors.append((time.time(), status, kind, message[:200]))
        breaker = self.breaker
        if kind in ("rate_limit", "unavailable", "timeout"):
            was_open = breaker.opened
            breaker.failure(now, retry_after if status == 429 else None)
            if breaker.opened and not was_open and self.owner is not None:
                self.owner.open_breakers += 1
        else:
            breaker.released()

    def score(self, stream: bool) -> float:
        """The latency strategy's figure: EWMA time (to the first byte for streams), scaled by
        the calls in flight; a deployment not yet measured scores 0, so it gets tried."""
        base = self.ewma_ttfb_s if stream else self.ewma_total_s
        return base * (self.inflight + 1)


class ModelGroup:
    """The deployments serving one model name, with its strategy, retries and fallbacks."""

    def __init__(self, name: str, config: ModelConfig, providers: dict[str, Provider]) -> None:
        self.name = name
        self.config = config
        self.deployments = [
            DeploymentState(name, d, providers[d.provider], config) for d in config.routes()
        ]
        for d in self.deployments:
            d.owner = self
        # Deployments whose breaker is open or half-open: while none is and none has a
        # limit (concurrency, rpm, tpm), every deployment is a candidate and picking skips
        # the checks.
        self.open_breakers = 0
        self.limited = any(d.limit is not None or d.metered for d in self.deployments)
        self.retries = (
            config.retries if config.retries is not None else 2 if config.deployments else 0
        )
        self.timeout_s = config.timeout_s
        self.strategy = config.strategy
        self._cumulative = list(accumulate(d.weight for d in self.deployments))
        self.total_weight = self._cumulative[-1]
        # The models to fall back to, by reason, in order (groups are linked by the router).
        self.fallbacks: dict[str, list[ModelGroup]] = {}
        self.counts_tokens = any("context_window" in f.on for f in config.fallbacks)

    def ready(self, now: float, need_tokens: int = 0) -> list[DeploymentState]:
        return [
            d
            for d in self.deployments
            if d.ready(now) and (need_tokens == 0 or (d.context_window or _INF) >= need_tokens)
        ]

    def fits(self, need_tokens: int) -> bool:
        return any((d.context_window or _INF) >= need_tokens for d in self.deployments)

    def pick(
        self,
        tried: list[DeploymentState],
        now: float,
        stream: bool,
        session: str | None = None,
        need_tokens: int = 0,
    ) -> DeploymentState:
        """The deployment for the next attempt: a healthy one not tried yet if there is one,
        else a healthy one, else the one that failed longest ago (never none at all)."""
        deployments = self.deployments
        if not (tried or self.open_breakers or self.limited or need_tokens or session):
            return deployments[0] if len(deployments) == 1 else self._choose(deployments, stream)
        candidates = self.ready(now, need_tokens)
        if tried and candidates:
            fresh = [d for d in candidates if d not in tried]
            if fresh:
                candidates = fresh
        if not candidates:
            pool = [
                d
                for d in deployments
                if need_tokens == 0 or (d.context_window or _INF) >= need_tokens
            ] or deployments
            untried = [d for d in pool if d not in tried] or pool
            chosen = min(untried, key=_last_failure)
        elif len(candidates) == 1:
            chosen = candidates[0]
        elif session is not None:
            chosen = max(candidates, key=lambda d: zlib.crc32(f"{session}\0{d.id}".encode()))
        else:
            chosen = self._choose(candidates, stream)
        chosen.breaker.picked(now)
        if chosen.metered:
            chosen.count_request(now)
        return chosen

    def _choose(self, candidates: list[DeploymentState], stream: bool) -> DeploymentState:
        strategy = self.strategy
        if strategy == "weighted":
            if len(candidates) == len(self.deployments):
                index = bisect_right(self._cumulative, random.random() * self.total_weight)
                return self.deployments[min(index, len(self.deployments) - 1)]
            return _weighted(candidates)
        if strategy == "least-inflight":
            least = min(d.inflight for d in candidates)
            return _weighted([d for d in candidates if d.inflight == least])
        if strategy == "latency":
            a, b = random.sample(candidates, 2)
            return a if a.score(stream) <= b.score(stream) else b
        cheapest = min(d.price for d in candidates)
        return _weighted([d for d in candidates if d.price == cheapest])


def _last_failure(d: DeploymentState) -> float:
    return d.last_failure


def _weighted(candidates: list[DeploymentState]) -> DeploymentState:
    if len(candidates) == 1:
        return candidates[0]
    total = sum(d.weight for d in candidates)
    if total <= 0:
        return random.choice(candidates)
    r = random.random() * total
    for d in candidates:
        r -= d.weight
        if r < 0:
            return d
    return candidates[-1]
