"""The per-call metrics kept on the event loop expose what prometheus-client's own would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from llm_proxy.logstore.record import LogRecord
from llm_proxy.observe.metrics import _LATENCY, _OVERHEAD, UNKNOWN_MODEL, GatewayMetrics
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: bytes, prefix: str = "llm_proxy_") -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            if s.name.startswith(prefix) and not s.name.endswith("_created"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def record(i: int, **kw: object) -> LogRecord:
    fields: dict[str, object] = {
        "id": "",
        "ts": 0.0,
        "request_id": f"r{i}",
        "door": "http" if i % 3 else "grpc",
        "model": "gpt-4o-mini" if i % 2 else "claude",
        "provider": "up",
        "endpoint": "chat",
        "status": 200,
        # on, between and far past the bucket bounds (le: a value equal to a bound counts in it)
        "latency_ms": [0.2, 5.0, 7.5, 1000.0, 400_000.0][i % 5],
        "upstream_ms": [0.0, 4.0, 100.0][i % 3],
        "overhead_ms": [0.1, 0.25, 3.0, 2000.0][i % 4],
        "prompt_tokens": 10 + i,
        "completion_tokens": i,
        "cost_usd": 0.001 * i,
        "cache_status": ["off", "hit", "miss"][i % 3],
    }
    fields.update(kw)
    return LogRecord(**fields)  # type: ignore[arg-type]


def fed_records() -> list[LogRecord]:
    records = [record(i) for i in range(40)]
    records += [
        record(40, status=502, error_type="upstream_error", prompt_tokens=-5, cost_usd=-1.0),
        record(41, status=499),
        record(42, ttft_ms=12.0, stream=True),
        record(43, ttft_ms=0.5, stream=True, provider=None, status=400),
        record(44, model="made-up-1", provider=None, status=404),
        record(45, model="made-up-2", provider=None, status=404),
    ]
    return records


def feed(metrics: GatewayMetrics, records: list[LogRecord]) -> bytes:
    metrics.observe_batch(records[:7])
    for rec in records[7:]:  # a batch of one, and many batches, count alike
        metrics.observe_batch([rec])
    return metrics.exposition()[1]


def reference(records: list[LogRecord]) -> bytes:
    """The same observations through prometheus-client's own metrics, in one process."""
    r = CollectorRegistry()
    requests = Counter(
        "llm_proxy_requests",
        "",
        ["model", "provider", "status", "door", "cache"],
        registry=r,
    )
    latency = Histogram(
        "llm_proxy_request_duration_seconds",
        "",
        ["model", "provider", "door"],
        buckets=_LATENCY,
        registry=r,
    )
    upstream = Histogram(
        "llm_proxy_upstream_duration_seconds",
        "",
        ["model", "provider"],
        buckets=_LATENCY,
        registry=r,
    )
    overhead = Histogram(
        "llm_proxy_overhead_seconds", "", ["model", "door"], buckets=_OVERHEAD, registry=r
    )
    ttft = Histogram(
        "llm_proxy_time_to_first_token_seconds",
        "",
        ["model", "provider"],
        buckets=_LATENCY,
        registry=r,
    )
    tokens = Counter("llm_proxy_tokens", "", ["model", "provider", "kind"], registry=r)
    cost = Counter("llm_proxy_cost_usd", "", ["model", "provider"], registry=r)
    hits = Counter("llm_proxy_cache_hits", "", ["model"], registry=r)
    misses = Counter("llm_proxy_cache_misses", "", ["model"], registry=r)
    errors = Counter("llm_proxy_upstream_errors", "", ["provider", "kind", "status"], registry=r)
    for rec in records:
        provider = rec.provider or ""
        # calls to a model no deployment serves share one model label
        model = rec.model if rec.provider is not None else UNKNOWN_MODEL
        requests.labels(model, provider, rec.status, rec.door, rec.cache_status).inc()
        # The gateway makes the four histogram series of a label set together (a series
        # made is exposed, at zero if never observed).
        latency.labels(model, provider, rec.door).observe(rec.latency_ms / 1000)
        overhead.labels(model, rec.door).observe(rec.overhead_ms / 1000)
        up, first = upstream.labels(model, provider), ttft.labels(model, provider)
        if rec.upstream_ms > 0:
            up.observe(rec.upstream_ms / 1000)
        if rec.ttft_ms is not None:
            first.observe(rec.ttft_ms / 1000)
        # (an upstream reporting negative usage is not counted: counters only go up)
        if rec.prompt_tokens and rec.prompt_tokens > 0:
            tokens.labels(model, provider, "prompt").inc(rec.prompt_tokens)
        if rec.completion_tokens and rec.completion_tokens > 0:
            tokens.labels(model, provider, "completion").inc(rec.completion_tokens)
        if rec.cost_usd and rec.cost_usd > 0:
            cost.labels(model, provider).inc(rec.cost_usd)
        if rec.cache_status == "hit":
            hits.labels(model).inc()
        if rec.cache_status == "miss":
            misses.labels(model).inc()
        if rec.status >= 400 and rec.status != 499 and rec.provider is not None:
            errors.labels(provider, rec.error_type or "error", rec.status).inc()

    return generate_latest(r)


def assert_same(text: bytes, want_text: bytes, records: list[LogRecord]) -> None:
    types = {f.name: f.type for f in text_string_to_metric_families(text.decode())}
    for family in text_string_to_metric_families(want_text.decode()):
        if not family.name.endswith("_created"):
            assert types[family.name] == family.type, family.name
    want = samples(want_text)
    names = {name for name, _ in want}
    ours = {k: v for k, v in samples(text).items() if k[0] in names}
    assert ours.keys() == want.keys()
    for key, value in want.items():
        assert ours[key] == pytest.approx(value), key
    # a value equal to a bound is in that bound's bucket: 5 ms latencies in le="0.005"
    five_ms = sum(1 for rec in records if rec.latency_ms == 5.0)
    at_bound = sum(
        v
        for (name, labels), v in ours.items()
        if name == "llm_proxy_request_duration_seconds_bucket" and ("le", "0.005") in labels
    )
    assert five_ms and at_bound == five_ms + sum(1 for rec in records if rec.latency_ms < 5)
    # made-up model names share one series; the log writer's own metrics are still there
    assert b"made-up" not in text and UNKNOWN_MODEL.encode() in text
    assert b"llm_proxy_log_records_written_total" in text


def test_loop_metrics_expose_what_prometheus_client_metrics_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (prometheus-client picks its own storage when first imported: run without the
    # multiprocess directory set)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics = GatewayMetrics()
    assert not metrics.multiprocess
    records = fed_records()
    assert_same(feed(metrics, records), reference(records), records)


def test_several_workers_metrics_expose_what_prometheus_client_metrics_would(
    tmp_path: Path,
) -> None:
    # prometheus-client's multiprocess values, in a process of their own (it picks its
    # storage when first imported); the reference is made here, in one process.
    script = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_metrics import GatewayMetrics, feed, fed_records\n"
        "metrics = GatewayMetrics()\n"
        "assert metrics.multiprocess\n"
        "sys.stdout.buffer.write(feed(metrics, fed_records()))\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, timeout=60, check=True
    )
    records = fed_records()
    assert_same(done.stdout, reference(records), records)


def test_a_failing_counter_loses_one_batch_not_the_kinds_later_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics = GatewayMetrics()
    rec = record(1, cache_status="off")
    metrics.observe_batch([rec])
    (kind,) = metrics._kinds.values()
    real, calls = kind.requests, []

    class Failing:
        def inc(self, amount: float = 1) -> None:
            calls.append(amount)
            raise RuntimeError("disk full")

    kind.requests = Failing()
    with pytest.raises(RuntimeError):
        metrics.observe_batch([rec, rec])
    kind.requests = real
    metrics.observe_batch([rec])
    metrics.observe_batch([rec, rec])
    requests = samples(metrics.exposition()[1])
    total = sum(v for (name, _), v in requests.items() if name == "llm_proxy_requests_total")
    assert calls == [2] and total == 1 + 1 + 2
