"""Metrics fed only on the event loop: plain numbers exposed through a prometheus-client
collector (no lock and no checks per observation, which the loop would pay per call)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .multiproc import worker_restarts


class Series:
    """One labelled histogram series in plain numbers (the event loop is its only writer)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le: value <= bound
        self.sum += value


class Total:
    """One labelled counter in a plain number (the event loop is its only writer)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class LoopFamily:
    """A counter or histogram fed only on the event loop, exposed through prometheus-client's
    collector API: no lock and no checks per observation, which the event loop would pay per
    call. Fed and scraped on the event loop only. One worker only: with several,
    each value must go through prometheus-client's multiprocess files, so GatewayMetrics uses
    its metrics there."""

    def __init__(
        self, name: str, doc: str, labels: Sequence[str], buckets: Sequence[float] | None = None
    ) -> None:
        if buckets is not None and (not buckets or list(buckets) != sorted(set(buckets))):
            raise ValueError(f"{name}: buckets must be increasing and not empty")
        self.name, self.doc, self.labelnames = name, doc, list(labels)
        self.bounds = tuple(buckets) if buckets is not None else None
        self.series: dict[tuple[str, ...], Series | Total] = {}

    def labels(self, *values: object) -> Any:
        key = tuple(str(v) for v in values)
        child = self.series.get(key)
        if child is None:
            child = self.series[key] = Total() if self.bounds is None else Series(self.bounds)
        return child

    def family(self) -> Metric:
        if self.bounds is None:
            counter = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
            for key, total in list(self.series.items()):
                assert isinstance(total, Total)
                counter.add_metric(list(key), total.value)
            return counter
        histogram = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        edges = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        for key, series in list(self.series.items()):
            assert isinstance(series, Series)
            running, buckets = 0.0, []
            for edge, count in zip(edges, series.counts, strict=True):
                running += count
                buckets.append((edge, running))
            histogram.add_metric(list(key), buckets, series.sum)
        return histogram


class LoopCollector(Collector):
    def __init__(self, families: list[LoopFamily]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            yield family.family()


class WorkerRestarts(Collector):
    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "llm_proxy_worker_restarts",
            "Workers started again after one died (an OOM kill, a crash).",
            value=worker_restarts(),
        )
