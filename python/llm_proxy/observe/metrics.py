"""Prometheus metrics, `llm_proxy_` prefixed, correct with one worker or many.

With several workers, `PROMETHEUS_MULTIPROC_DIR` must be set (by
`multiproc.prepare_multiprocess`, in `serve` before the workers start) so that a scrape of any
worker sums the values of all of them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from ..logstore.record import LogRecord
from ..routing.attempts import Attempt, RouteState
from .loop_metrics import LoopCollector, LoopFamily, WorkerRestarts
from .multiproc import MULTIPROC_ENV

# The model label of calls to a model no deployment serves (their log records keep the name).
UNKNOWN_MODEL = "(unknown)"
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


class _CallKind:
    """The series one kind of call feeds (one model, provider, door, status and cache status),
    looked up once. Its counts add up in plain numbers over a batch and go to the counters at
    the batch's end: with several workers, each increment is a write to the worker's
    memory-mapped file, under a lock."""

    __slots__ = (
        "batch",
        "cached",
        "calls",
        "completion",
        "completion_tokens",
        "cost",
        "cost_usd",
        "failed",
        "latency",
        "model",
        "overhead",
        "prompt",
        "prompt_tokens",
        "provider",
        "requests",
        "ttft",
        "upstream",
    )

    def __init__(
        self,
        model: str,
        provider: str,
        histograms: tuple[Any, Any, Any, Any],
        requests: Any,
        cached: Any,
        failed: bool,
    ) -> None:
        self.model, self.provider = model, provider
        self.latency, self.overhead, self.upstream, self.ttft = histograms
        self.requests, self.cached, self.failed = requests, cached, failed
        self.prompt: Any = None
        self.completion: Any = None
        self.cost: Any = None
        self.batch = 0  # the last batch this kind was fed in
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_usd = 0.0

    def flush(self, metrics: GatewayMetrics) -> None:
        """Add this batch's counts to the counters (made when first counted into). The sums
        start again from zero first: a counter that fails loses one batch's counts, no more."""
        calls, prompt_tokens = self.calls, self.prompt_tokens
        completion_tokens, cost_usd = self.completion_tokens, self.cost_usd
        self.calls = self.prompt_tokens = self.completion_tokens = 0
        self.cost_usd = 0.0
        self.requests.inc(calls)
        if self.cached is not None:
            self.cached.inc(calls)
        if prompt_tokens:
            if self.prompt is None:
                self.prompt = metrics._counter(("tokens", self.model, self.provider, "prompt"))
            self.prompt.inc(prompt_tokens)
        if completion_tokens:
            if self.completion is None:
                key = ("tokens", self.model, self.provider, "completion")
                self.completion = metrics._counter(key)
            self.completion.inc(completion_tokens)
        if cost_usd:
            if self.cost is None:
                self.cost = metrics._counter(("cost", self.model, self.provider))
            self.cost.inc(cost_usd)


class GatewayMetrics:
    """The gateway's counters and histograms. The per-call ones are fed on the event loop, a
    batch of records at a time (observe_batch); the log writer's own on its thread."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        # Labelled children, looked up once: `labels()` costs more than the increment.
        self._counters: dict[tuple[Any, ...], Any] = {}
        self._kinds: dict[tuple[str, str | None, str, int, str], _CallKind] = {}
        self._batch = 0
        r = self.registry = CollectorRegistry(auto_describe=True)
        r.register(WorkerRestarts())
        fed_on_loop: list[LoopFamily] = []

        def on_loop(
            name: str, doc: str, labels: list[str], buckets: Sequence[float] | None = None
        ) -> Any:
            """A metric only the event loop feeds (through observe_batch)."""
            if self.multiprocess:
                if buckets is None:
                    return Counter(name, doc, labels, registry=r)
                return Histogram(name, doc, labels, buckets=buckets, registry=r)
            family = LoopFamily(name, doc, labels, buckets)
            fed_on_loop.append(family)
            return family

        self.requests = on_loop(
            "llm_proxy_requests",
            "Calls answered, by model, provider, status, front door and cache status.",
            ["model", "provider", "status", "door", "cache"],
        )
        self.latency = on_loop(
            "llm_proxy_request_duration_seconds",
            "Total time from request to the last byte of the answer.",
            ["model", "provider", "door"],
            _LATENCY,
        )
        self.upstream = on_loop(
            "llm_proxy_upstream_duration_seconds",
            "Time spent waiting on the upstream provider.",
            ["model", "provider"],
            _LATENCY,
        )
        self.overhead = on_loop(
            "llm_proxy_overhead_seconds",
            "Time the gateway itself added (total minus upstream).",
            ["model", "door"],
            _OVERHEAD,
        )
        self.ttft = on_loop(
            "llm_proxy_time_to_first_token_seconds",
            "Time to the first streamed event.",
            ["model", "provider"],
            _LATENCY,
        )
        self.tokens = on_loop(
            "llm_proxy_tokens",
            "Tokens, by kind (prompt, completion).",
            ["model", "provider", "kind"],
        )
        self.cost = on_loop(
            "llm_proxy_cost_usd", "Spend in USD (calls with a known price).", ["model", "provider"]
        )
        self.cache_hits = on_loop(
            "llm_proxy_cache_hits", "Calls answered from the cache.", ["model"]
        )
        # Only calls with a virtual key (auth.mode: keys) count here: one series per key.
        self.key_requests = on_loop(
            "llm_proxy_key_requests",
            "Calls by virtual key (public id), its team and status.",
            ["key_id", "team", "status"],
        )
        self.key_cost = on_loop(
            "llm_proxy_key_cost_usd", "Spend in USD by virtual key and team.", ["key_id", "team"]
        )
        self.cache_misses = on_loop(
            "llm_proxy_cache_misses", "Cache lookups that found nothing.", ["model"]
        )
        self.upstream_errors = on_loop(
            "llm_proxy_upstream_errors",
            "Failed upstream calls, by provider and error kind.",
            ["provider", "kind", "status"],
        )
        self.route_attempts = on_loop(
            "llm_proxy_route_attempts",
            "Attempts at a model group's deployments, by result (ok or the failure's kind).",
            ["model", "deployment", "result"],
        )
        self.route_retries = on_loop(
            "llm_proxy_route_retries",
            "Retries of a model group's calls, by the deployment they went to.",
            ["model", "deployment"],
        )
        self.route_fallbacks = on_loop(
            "llm_proxy_route_fallbacks",
            "Calls that fell back to another model, by the deployment that served it.",
            ["model", "to", "deployment"],
        )
        if fed_on_loop:
            r.register(LoopCollector(fed_on_loop))
        self.limit_refusals = Counter(
            "llm_proxy_limit_refusals",
            "Calls refused by a rate limit or budget, by scope kind and what ran out.",
            ["scope", "metric"],
            registry=r,
        )
        self.limits_backend_errors = Counter(
            "llm_proxy_limits_backend_errors",
            "Reservations the limits backend could not answer (then on_backend_error applied).",
            ["backend", "action"],
            registry=r,
        )
        self.budget_alerts = Counter(
            "llm_proxy_budget_alerts",
            "Budget thresholds crossed (one per threshold, period and scope across instances).",
            ["scope", "threshold"],
            registry=r,
        )
        self.log_written = Counter(
            "llm_proxy_log_records_written", "Log records written to the store.", registry=r
        )
        self.log_dropped = Counter(
            "llm_proxy_log_records_dropped",
            "Log records lost because the queue was full (never silently).",
            registry=r,
        )
        self.log_dead_lettered = Counter(
            "llm_proxy_log_records_dead_lettered",
            "Log records the store refused even alone, set aside in the dead-letter file.",
            registry=r,
        )
        self.log_store_errors = Counter(
            "llm_proxy_log_store_errors", "Failed writes or connects to the log store.", registry=r
        )
        self.queue_depth = Gauge(
            "llm_proxy_log_queue_depth",
            "Finished calls waiting to be recorded.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_bytes = Gauge(
            "llm_proxy_log_queue_bytes",
            "Bytes of the records waiting to be recorded (bounded by logging.queue_max_bytes).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.spooled = Gauge(
            "llm_proxy_log_spooled_records",
            "Log records waiting in the local spool for the store to come back.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.store_up = Gauge(
            "llm_proxy_log_store_up",
            "1 when the log store takes writes, else 0.",
            registry=r,
            multiprocess_mode="livemin",
        )

    def observe_batch(self, records: Sequence[LogRecord]) -> None:
        """Count a batch of records: histograms per record, counters once per batch and kind
        of call. A call to a model no deployment serves counts as model UNKNOWN_MODEL: names
        clients make up must not make series without end.

        On the event loop only (the per-call metrics of one worker are not locked)."""
        kinds = self._kinds
        batch = self._batch = self._batch + 1
        fed: list[_CallKind] = []
        errors: dict[tuple[Any, ...], float] | None = None
        keyed: dict[tuple[Any, ...], float] | None = None
        try:
            for rec in records:
                model = rec.model if rec.provider is not None else UNKNOWN_MODEL
                key = (model, rec.provider, rec.door, rec.status, rec.cache_status)
                kind = kinds.get(key)
                if kind is None:
                    kind = kinds[key] = self._kind(key)
                if kind.batch != batch:
                    kind.batch = batch
                    fed.append(kind)
                kind.calls += 1
                kind.latency.observe(rec.latency_ms / 1000.0)
                kind.overhead.observe(rec.overhead_ms / 1000.0)
                if rec.upstream_ms > 0:
                    kind.upstream.observe(rec.upstream_ms / 1000.0)
                if rec.ttft_ms is not None:
                    kind.ttft.observe(rec.ttft_ms / 1000.0)
                # Counters only go up: negative usage or cost from an upstream is not counted.
                if rec.prompt_tokens is not None and rec.prompt_tokens > 0:
                    kind.prompt_tokens += rec.prompt_tokens
                if rec.completion_tokens is not None and rec.completion_tokens > 0:
                    kind.completion_tokens += rec.completion_tokens
                if rec.cost_usd is not None and rec.cost_usd > 0:
                    kind.cost_usd += rec.cost_usd
                if rec.key_id is not None:
                    keyed = keyed if keyed is not None else {}
                    by_key = ("key", rec.key_id, rec.team or "", rec.status)
                    keyed[by_key] = keyed.get(by_key, 0) + 1
                    if rec.cost_usd is not None and rec.cost_usd > 0:
                        spent = ("key_cost", rec.key_id, rec.team or "")
                        keyed[spent] = keyed.get(spent, 0) + rec.cost_usd
                if kind.failed:
                    errors = errors if errors is not None else {}
                    error = ("errors", kind.provider, rec.error_type or "error", rec.status)
                    errors[error] = errors.get(error, 0) + 1
        finally:
            # What was counted before a failure still reaches the counters.
            for kind in fed:
                kind.flush(self)
            if errors is not None:
                self._add(errors)
            if keyed is not None:
                self._add(keyed)

    def observe_route(self, model: str, route: RouteState) -> None:
        """Count one routed call's attempts, retries and fallback (on the event loop)."""
        previous: Attempt | None = None
        counter = self._counter
        for attempt in route.attempts:
            result = "ok" if attempt.error is None else attempt.error
            counter(("attempts", model, attempt.deployment, result)).inc()
            if previous is not None:
                if attempt.model == previous.model:
                    counter(("retries", model, attempt.deployment)).inc()
                else:
                    counter(("fallbacks", model, attempt.model or model, attempt.deployment)).inc()
            elif attempt.model is not None:  # fell back before the first attempt (context)
                counter(("fallbacks", model, attempt.model, attempt.deployment)).inc()
            previous = attempt

    def _kind(self, key: tuple[str, str | None, str, int, str]) -> _CallKind:
        model, provider, door, status, cache = key
        name = provider or ""
        histograms = (
            self.latency.labels(model, name, door),
            self.overhead.labels(model, door),
            self.upstream.labels(model, name),
            self.ttft.labels(model, name),
        )
        requests = self._counter(("requests", model, name, status, door, cache))
        cached = self._counter((cache, model)) if cache in ("hit", "miss") else None
        failed = status >= 400 and status != 499 and provider is not None
        return _CallKind(model, name, histograms, requests, cached, failed)

    def _counter(self, key: tuple[Any, ...]) -> Any:
        child = self._counters.get(key)
        if child is None:
            child = self._counters[key] = self._counter_child(key)
        return child

    def _add(self, counts: dict[tuple[Any, ...], float]) -> None:
        for key, amount in counts.items():
            self._counter(key).inc(amount)

    def _counter_child(self, key: tuple[Any, ...]) -> Any:
        """The labelled counter a batch key counts into (looked up once, then kept)."""
        name, *labels = key
        metric = {
            "requests": self.requests,
            "tokens": self.tokens,
            "cost": self.cost,
            "hit": self.cache_hits,
            "miss": self.cache_misses,
            "errors": self.upstream_errors,
            "key": self.key_requests,
            "key_cost": self.key_cost,
            "attempts": self.route_attempts,
            "retries": self.route_retries,
            "fallbacks": self.route_fallbacks,
        }[name]
        return metric.labels(*(str(label) for label in labels))

    def exposition(self) -> tuple[str, bytes]:
        """(content type, Prometheus text) for GET /metrics; on the event loop only."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            registry.register(WorkerRestarts())
            return CONTENT_TYPE_LATEST, generate_latest(registry)
        return CONTENT_TYPE_LATEST, generate_latest(self.registry)

    def process_exited(self) -> None:
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
