"""`llm-proxy capacity`: how many cores (workers) a load needs, from a benchmark results file.

The figures are the gateway's own CPU time per request, measured by `make bench` on one
Granian worker pinned to one core (written under `capacity` in the results). A load of
R requests/s with a mix of streamed answers and cache hits needs R x (CPU per request of the
mix) core-seconds every second; dividing by the CPU share to plan for (70% by default) and
rounding up gives the workers, one per core. With `--logging full` (the gateway's default)
each request also pays what logging at `full` into SQLite added in the same benchmark run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KINDS = ("miss", "stream", "hit", "hit_stream")


class CapacityError(Exception):
    """A results file that cannot be used, or arguments out of range."""


@dataclass(frozen=True)
class CpuFigures:
    """CPU microseconds of the gateway per request of each kind, from one results file."""

    miss: float
    stream: float
    hit: float
    hit_stream: float
    source: str
    machine: str
    # CPU microseconds full logging into SQLite adds to a request; None if not measured.
    logging_full: float | None = None

    @classmethod
    def from_results(cls, results: dict[str, Any], source: str) -> CpuFigures:
        try:
            cpu = results["capacity"]["cpu_us_per_request"]
        except (KeyError, TypeError):
            raise CapacityError(f"{source}: no capacity.cpu_us_per_request section") from None
        values: dict[str, float] = {}
        for kind in ("miss", "stream", "hit"):
            value = cpu.get(kind)
            if not isinstance(value, int | float) or value <= 0:
                raise CapacityError(f"{source}: capacity.cpu_us_per_request.{kind} is missing")
            values[kind] = float(value)
        hit_stream = cpu.get("hit_stream")
        values["hit_stream"] = (
            float(hit_stream) if isinstance(hit_stream, int | float) and hit_stream > 0 else 0.0
        ) or values["hit"]
        logging_full = cpu.get("logging_full")
        if not isinstance(logging_full, int | float) or logging_full < 0:
            logging_full = None
        meta = results.get("meta", {})
        machine = f"{meta.get('cpu', 'unknown CPU')}, {meta.get('date', 'undated')}"
        return cls(source=source, machine=machine, logging_full=logging_full, **values)


@dataclass(frozen=True)
class CapacityPlan:
    """The workers a load needs and the figures behind the answer."""

    rps: float
    stream_ratio: float
    cache_hit_ratio: float
    target_cpu: float
    logging: str
    # What logging adds to each request (µs), included in cpu_us_per_request.
    logging_us: float
    cpu_us_per_request: float
    busy_cores: float
    workers: int
    rps_per_worker: float
    figures: CpuFigures


def plan(
    figures: CpuFigures,
    rps: float,
    stream_ratio: float = 0.0,
    cache_hit_ratio: float = 0.0,
    target_cpu: float = 0.7,
    logging: str = "off",
) -> CapacityPlan:
    """Workers (cores) for `rps` requests/s of the given mix, each worker kept at `target_cpu`."""
    if not rps > 0:
        raise CapacityError("--rps must be greater than 0")
    for name, value in (("--stream-ratio", stream_ratio), ("--cache-hit-ratio", cache_hit_ratio)):
        if not 0.0 <= value <= 1.0:
            raise CapacityError(f"{name} must be between 0 and 1, got {value}")
    if not 0.0 < target_cpu <= 1.0:
        raise CapacityError(f"--target-cpu must be in (0, 1], got {target_cpu}")
    if logging not in ("off", "full"):
        raise CapacityError(f"--logging must be off or full, got {logging!r}")
    s, h = stream_ratio, cache_hit_ratio
    logging_us = (figures.logging_full or 0.0) if logging == "full" else 0.0
    per_request = (1 - h) * ((1 - s) * figures.miss + s * figures.stream) + h * (
        (1 - s) * figures.hit + s * figures.hit_stream
    )
    per_request += logging_us
    busy = rps * per_request / 1e6
    workers = max(1, math.ceil(busy / target_cpu - 1e-9))
    return CapacityPlan(
        rps=rps,
        stream_ratio=s,
        cache_hit_ratio=h,
        target_cpu=target_cpu,
        logging=logging,
        logging_us=logging_us,
        cpu_us_per_request=per_request,
        busy_cores=busy,
        workers=workers,
        rps_per_worker=target_cpu * 1e6 / per_request,
        figures=figures,
    )


def newest_results(directories: list[Path] | None = None) -> Path:
    """The newest results file (by the date its name starts with) that has capacity figures."""
    if directories is None:
        here = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
        directories = [Path.cwd() / "benchmarks" / "results", here]
    for directory in directories:
        candidates = sorted(
            directory.glob("*.json"), key=lambda p: (p.name[:10], p.stat().st_mtime), reverse=True
        )
        for path in candidates:
            try:
                if "capacity" in json.loads(path.read_text()):
                    return path
            except (OSError, ValueError):
                continue
    where = ", ".join(str(d) for d in directories)
    raise CapacityError(f"no benchmark results with capacity figures in {where}; run `make bench`")


def load_figures(path: Path | None) -> CpuFigures:
    path = path or newest_results()
    try:
        results = json.loads(path.read_text())
    except OSError as exc:
        raise CapacityError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise CapacityError(f"{path} is not JSON: {exc}") from None
    return CpuFigures.from_results(results, str(path))


def _logging_line(p: CapacityPlan) -> str:
    if p.logging == "off":
        return "  logging    off (nothing added)"
    if p.figures.logging_full is None:
        return "  logging    full: NOT counted, this results file has no logging figure"
    return f"  logging    full into SQLite, +{p.logging_us:,.0f} µs per request (included)"


def render(p: CapacityPlan) -> str:
    f = p.figures
    return "\n".join(
        [
            f"load: {p.rps:,.0f} requests/s, {p.stream_ratio:.0%} streamed, "
            f"{p.cache_hit_ratio:.0%} cache hits",
            f"figures from {f.source} ({f.machine}), CPU µs per request on one worker:",
            f"  whole miss {f.miss:,.0f}   stream miss {f.stream:,.0f}   "
            f"cache hit {f.hit:,.0f}   stream cache hit {f.hit_stream:,.0f}",
            _logging_line(p),
            f"  this mix   {p.cpu_us_per_request:,.0f} µs per request",
            f"CPU needed: {p.busy_cores:.2f} cores fully busy; planning for "
            f"{p.target_cpu:.0%} CPU, one worker handles {p.rps_per_worker:,.0f} requests/s",
            f"workers (cores): {p.workers}",
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rps", type=float, required=True, help="requests per second to serve")
    parser.add_argument(
        "--stream-ratio", type=float, default=0.0, help="share of streamed requests, 0-1"
    )
    parser.add_argument(
        "--cache-hit-ratio", type=float, default=0.0, help="share answered from the cache, 0-1"
    )
    parser.add_argument(
        "--target-cpu", type=float, default=0.7, help="CPU share to plan each core for (0.7)"
    )
    parser.add_argument(
        "--logging",
        choices=("full", "off"),
        default="full",
        help="request logging as configured (default full, the gateway's default)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        help="benchmark results JSON (default: newest in benchmarks/results)",
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def capacity_command(args: argparse.Namespace) -> int:
    try:
        figures = load_figures(args.results)
        result = plan(
            figures,
            args.rps,
            args.stream_ratio,
            args.cache_hit_ratio,
            args.target_cpu,
            args.logging,
        )
    except CapacityError as exc:
        print(f"llm-proxy capacity: {exc}", file=sys.stderr)
        return 2
    if args.json:
        out = {k: v for k, v in result.__dict__.items() if k != "figures"}
        out["figures"] = dict(result.figures.__dict__)
        print(json.dumps(out, indent=2))
    else:
        print(render(result))
    return 0
