"""Prometheus metrics, `llm_proxy_` prefixed, correct with one worker or many.

With several workers, `PROMETHEUS_MULTIPROC_DIR` must be set (by
`multiproc.prepare_multiprocess`, in `serve` before the workers start) so that a scrape of any
worker sums the values of all of them.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from .multiproc import MULTIPROC_ENV
from .record import LogRecord

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


class GatewayMetrics:
    """The gateway's counters and histograms; fed one LogRecord at a time by the writer."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        # Labelled children, looked up once: `labels()` costs more than the increment.
        self._children: dict[tuple[str, str, str], tuple[Any, Any, Any, Any]] = {}
        self._counters: dict[tuple[Any, ...], Any] = {}
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "llm_proxy_requests",
            "Calls answered, by model, provider, status, front door and cache status.",
            ["model", "provider", "status", "door", "cache"],
            registry=r,
        )
        self.latency = Histogram(
            "llm_proxy_request_duration_seconds",
            "Total time from request to the last byte of the answer.",
            ["model", "provider", "door"],
            buckets=_LATENCY,
            registry=r,
        )
        self.upstream = Histogram(
            "llm_proxy_upstream_duration_seconds",
            "Time spent waiting on the upstream provider.",
            ["model", "provider"],
            buckets=_LATENCY,
            registry=r,
        )
        self.overhead = Histogram(
            "llm_proxy_overhead_seconds",
            "Time the gateway itself added (total minus upstream).",
            ["model", "door"],
            buckets=_OVERHEAD,
            registry=r,
        )
        self.ttft = Histogram(
            "llm_proxy_time_to_first_token_seconds",
            "Time to the first streamed event.",
            ["model", "provider"],
            buckets=_LATENCY,
            registry=r,
        )
        self.tokens = Counter(
            "llm_proxy_tokens",
            "Tokens, by kind (prompt, completion).",
            ["model", "provider", "kind"],
            registry=r,
        )
        self.cost = Counter(
            "llm_proxy_cost_usd",
            "Spend in USD (calls with a known price).",
            ["model", "provider"],
            registry=r,
        )
        self.cache_hits = Counter(
            "llm_proxy_cache_hits", "Calls answered from the cache.", ["model"], registry=r
        )
        self.cache_misses = Counter(
            "llm_proxy_cache_misses", "Cache lookups that found nothing.", ["model"], registry=r
        )
        self.upstream_errors = Counter(
            "llm_proxy_upstream_errors",
            "Failed upstream calls, by provider and error kind.",
            ["provider", "kind", "status"],
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
        self.log_writer_yields = Counter(
            "llm_proxy_log_writer_yields",
            "Times the event loop stepped aside for a log writer that fell behind.",
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

    def observe_batch(self, records: list[LogRecord]) -> None:
        """Count a batch of records: counters once per label set, histograms per record."""
        counts: dict[tuple[Any, ...], float] = {}
        children = self._children
        for rec in records:
            model, provider, door = rec.model, rec.provider or "", rec.door
            key: tuple[Any, ...] = ("requests", model, provider, rec.status, door, rec.cache_status)
            counts[key] = counts.get(key, 0) + 1
            hist = children.get((model, provider, door))
            if hist is None:
                hist = children[(model, provider, door)] = (
                    self.latency.labels(model, provider, door),
                    self.overhead.labels(model, door),
                    self.upstream.labels(model, provider),
                    self.ttft.labels(model, provider),
                )
            hist[0].observe(rec.latency_ms / 1000.0)
            hist[1].observe(rec.overhead_ms / 1000.0)
            if rec.upstream_ms > 0:
                hist[2].observe(rec.upstream_ms / 1000.0)
            if rec.ttft_ms is not None:
                hist[3].observe(rec.ttft_ms / 1000.0)
            if rec.prompt_tokens:
                key = ("tokens", model, provider, "prompt")
                counts[key] = counts.get(key, 0) + rec.prompt_tokens
            if rec.completion_tokens:
                key = ("tokens", model, provider, "completion")
                counts[key] = counts.get(key, 0) + rec.completion_tokens
            if rec.cost_usd:
                key = ("cost", model, provider)
                counts[key] = counts.get(key, 0) + rec.cost_usd
            if rec.cache_status == "hit" or rec.cache_status == "miss":
                key = (rec.cache_status, model)
                counts[key] = counts.get(key, 0) + 1
            if rec.status >= 400 and rec.status != 499 and rec.provider is not None:
                key = ("errors", provider, rec.error_type or "error", rec.status)
                counts[key] = counts.get(key, 0) + 1
        counters = self._counters
        for key, amount in counts.items():
            child = counters.get(key)
            if child is None:
                child = counters[key] = self._counter_child(key)
            child.inc(amount)

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
        }[name]
        return metric.labels(*(str(label) for label in labels))

    def exposition(self) -> tuple[str, bytes]:
        """(content type, Prometheus text) for GET /metrics."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return CONTENT_TYPE_LATEST, generate_latest(registry)
        return CONTENT_TYPE_LATEST, generate_latest(self.registry)

    def process_exited(self) -> None:
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
