"""Figures derived from a run's measurements: added latency, the targets, capacity figures."""

from __future__ import annotations

import statistics
from typing import Any

# The names of the targets in the results.
GATEWAY = "llm-proxy"
DIRECT = "direct"
FLOOR = "granian no-op"
# Granian plus the gateway's upstream client and nothing else (`apps/min_proxy.py`): what one
# HTTP hop through a bare Python proxy on Granian costs, before the gateway's own work.
PROXY_FLOOR = "minimal proxy"
# The same gateway with logging at its default, `full` (content kept), into SQLite.
LOGGED = "llm-proxy, logging full"
# The peer gateways (`--peers`), by their names in the results, with their names in the report.
PEERS = {"litellm": "LiteLLM", "portkey": "Portkey"}
# A valid virtual key on every call (auth.mode: keys, the key declared in the YAML).
AUTHED = "llm-proxy, auth on"
# Auth on, and the key has limits (rpm, tpm) and a monthly budget that never run out: every
# call is reserved and settled, on the memory backend and on Redis (loopback).
LIMITED = "llm-proxy, limits on (memory)"
LIMITED_REDIS = "llm-proxy, limits on (redis)"

# The goals; each is shown met or MISSED in the table.
TARGETS = {
    "added_p50_1": 0.3,
    "added_p99_1": 1.0,
    "rps_64": 8000.0,
    "hits_64": 15000.0,
    "ttfb_added": 0.3,
    "vs_litellm_rps": 50.0,
    "vs_litellm_latency": 30.0,
    "generator_rps": 30000.0,
    "logging_added_p50": 0.10,  # full logging vs off, relative
    "messages_added_cpu_us": 30.0,  # /v1/messages over /v1/chat/completions, per call
}


def dig(d: dict[str, Any], *path: str) -> Any:
    """`d[path[0]][path[1]]...`, or None where a key is missing."""
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def added(rows: dict[str, Any], name: str, field: str) -> float:
    """What `name` adds to `field` over calling the mock directly: the median over the rounds
    of (target minus direct in the same round), so one slow round moves it little. Results
    without rounds fall back to the median runs."""
    mine, direct = rows[name].get("runs"), rows[DIRECT].get("runs")
    if mine and direct and len(mine) == len(direct):
        return statistics.median(a[field] - b[field] for a, b in zip(mine, direct, strict=True))
    return float(rows[name][field] - rows[DIRECT][field])


def targets_table(r: dict[str, Any]) -> list[dict[str, Any]]:
    sc = r["scenarios"]
    rows: list[dict[str, Any]] = []

    def add(name: str, goal: str, value: float | None, met: bool | None, gateway: bool) -> None:
        rows.append({"name": name, "goal": goal, "value": value, "met": met, "gateway": gateway})

    one = sc["clients_1"]
    p50 = added(one, GATEWAY, "p50_ms")
    p99 = added(one, GATEWAY, "p99_ms")
    add("added p50, 1 client (ms)", "≤ 0.3", p50, p50 <= TARGETS["added_p50_1"], True)
    add("added p99, 1 client (ms)", "≤ 1", p99, p99 <= TARGETS["added_p99_1"], True)
    rps = sc["clients_64"][GATEWAY]["rps"]
    add("requests/s, 64 clients, misses", "≥ 8,000", rps, rps >= TARGETS["rps_64"], True)
    if "cache_hit_64" in sc:  # not with `--only` leaving the cache out
        hits = sc["cache_hit_64"][GATEWAY]["rps"]
        add("cache hits/s, 64 clients", "≥ 15,000", hits, hits >= TARGETS["hits_64"], True)
    ttfb = added(sc["stream_ttfb"], GATEWAY, "ttfb_p50_ms")
    add("stream TTFB added, p50 (ms)", "≤ 0.3", ttfb, ttfb <= TARGETS["ttfb_added"], True)
    if "litellm" in sc["clients_64"]:
        ratio = rps / max(sc["clients_64"]["litellm"]["rps"], 1e-9)
        add("throughput vs LiteLLM, 64 clients", "≥ 50x", ratio, ratio >= 50, True)
        peer = added(one, "litellm", "p50_ms")
        lat = peer / p50 if p50 > 0 else float("inf")
        add("added p50 vs LiteLLM (LiteLLM / ours)", "≥ 30x", lat, lat >= 30, True)
    if LOGGED in one:
        logged = added(one, LOGGED, "p50_ms")
        change = logged / p50 - 1 if p50 > 0 else 0.0
        goal = TARGETS["logging_added_p50"]
        name = "added p50, logging full vs off, 1 client (%)"
        add(name, "≤ +10", change * 100, change <= goal, True)
    rows_ = dig(sc, "messages", "rows")
    if rows_:
        worst = max(row["added_cpu_us"] for row in rows_.values())
        goal = TARGETS["messages_added_cpu_us"]
        add("/v1/messages CPU added per call, worst row (µs)", "≤ 30", worst, worst <= goal, True)
    gen = r["generator"]["best_rps"]
    add("load generator against the mock", "≥ 30,000", gen, gen >= TARGETS["generator_rps"], False)
    mem = r.get("memory")
    if mem:
        growth = mem["growth_second_half"]
        add("RSS growth, second half of the requests", "≤ 5%", growth * 100, growth <= 0.05, False)
    return rows


def peer_comparison(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each peer of the run against our gateway, same rounds: requests/s at 64 clients and
    added p50/p99 at one client, both sides, and the ratios (ours / theirs for requests/s,
    theirs / ours for latency: above 1 means ours is better)."""
    sc = r["scenarios"]
    out: dict[str, dict[str, Any]] = {}
    one, many = sc["clients_1"], sc["clients_64"]
    for peer in PEERS:
        if peer not in one or peer not in many:
            continue
        ours_rps, rps = many[GATEWAY]["rps"], many[peer]["rps"]
        row: dict[str, Any] = {"rps_64": rps, "gateway_rps_64": ours_rps}
        row["rps_64_gateway_over_peer"] = ours_rps / rps if rps > 0 else None
        for field in ("p50_ms", "p99_ms"):
            ours, theirs = added(one, GATEWAY, field), added(one, peer, field)
            key = f"added_{field.removesuffix('_ms')}_1_ms"
            row[key], row["gateway_" + key] = theirs, ours
            row[f"added_{field.removesuffix('_ms')}_1_peer_over_gateway"] = (
                theirs / ours if ours > 0 else None
            )
        out[peer] = row
    return out


def capacity_figures(r: dict[str, Any]) -> dict[str, Any]:
    """CPU per request of each kind, for `llm-proxy capacity`: the worse of 16 and 64 clients."""
    sc = r["scenarios"]

    def worst(*keys: str) -> float | None:
        values = [dig(sc, k, GATEWAY, "cpu_us_per_request") for k in keys]
        present = [v for v in values if v]
        return max(present) if present else None

    # What full logging into SQLite adds to a request's CPU: same scenarios, same rounds.
    logging_cpu = []
    for key in ("clients_16", "clients_64"):
        logged, plain = (
            dig(sc, key, LOGGED, "cpu_us_per_request"),
            dig(sc, key, GATEWAY, "cpu_us_per_request"),
        )
        if logged and plain:
            logging_cpu.append(logged - plain)
    logging_full = max(0.0, max(logging_cpu)) if logging_cpu else None

    return {
        "cpu_us_per_request": {
            "miss": worst("clients_16", "clients_64"),
            "stream": worst("stream_64"),
            "hit": worst("cache_hit_64"),
            "hit_stream": worst("cache_hit_stream_64"),
            "logging_full": logging_full,
        },
        "measured_with": (
            "one Granian worker pinned to one core, 16 and 64 clients; logging off, and "
            "logging_full: what logging at `full` into SQLite adds to each request"
        ),
        "max_rps_per_core": {
            "miss": dig(sc, "clients_64", GATEWAY, "rps"),
            "stream": dig(sc, "stream_64", GATEWAY, "rps"),
            "hit": dig(sc, "cache_hit_64", GATEWAY, "rps"),
        },
    }
