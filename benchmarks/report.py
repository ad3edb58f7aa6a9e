"""The markdown report of a run (`<date>-<host>.md`), written from its results JSON."""

from __future__ import annotations

import os
from typing import Any

from .figures import (
    AUTHED,
    DIRECT,
    FLOOR,
    GATEWAY,
    LIMITED,
    LIMITED_REDIS,
    LOGGED,
    PEERS,
    PROXY_FLOOR,
    added,
)
from .scenarios import instructions, messages_bench

LABELS = {
    "clients_1": "1 client",
    "clients_16": "16 clients",
    "clients_64": "64 clients",
    "stream_64": "stream, 64 clients",
    "cache_hit_1": "cache hit, 1 client",
    "cache_hit_64": "cache hit, 64 clients",
    "cache_hit_stream_1": "stream cache hit, 1 client",
    "cache_hit_stream_64": "stream cache hit, 64 clients",
    "delay100_64": "upstream +100 ms, 64 clients",
}


def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return ""
    if isinstance(x, float) and abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _pct(new: float, old: float) -> str:
    return f"{new / old - 1:+.0%}" if old > 0 else ""


def markdown(r: dict[str, Any]) -> str:
    """The whole report: the run's conditions, then one section per scenario."""
    sc = r["scenarios"]
    names = [
        n
        for n in (
            DIRECT,
            FLOOR,
            PROXY_FLOOR,
            GATEWAY,
            LOGGED,
            AUTHED,
            LIMITED,
            LIMITED_REDIS,
            *PEERS,
        )
        if n in sc["clients_1"]
    ]
    out = _conditions(r) + _targets(r) + _http(sc, names) + _logging(sc) + _limits(r)
    out += _streaming(sc, names)
    peers = [n for n in PEERS if n in names]
    if peers:
        out += _peers(sc, peers)
    out += _messages(sc) + _grpc(sc) + _memory(r) + _instructions(r) + _capacity(r) + _profile(r)
    return "\n".join(out) + "\n"


def _conditions(r: dict[str, Any]) -> list[str]:
    m, sc = r["meta"], r["scenarios"]
    steal = ""
    if m.get("cpu_steal_end") and m.get("wall_seconds"):
        ticks = m["cpu_steal_end"] - m["cpu_steal_start"]
        share = ticks / os.sysconf("SC_CLK_TCK") / (m["wall_seconds"] * len(m["usable_cpus"]))
        steal = f"; CPU time taken by the hypervisor for other guests (steal): {share:.0%}"
    out = [
        f"# Benchmarks {m['date']} on {m['host']}",
        "",
        f"{m['cores']} cores ({m['cpu']}), Python {m['python']}, git {m['git_rev']}. Gateway "
        f"(and each peer) pinned to core {m['gateway_cpu']}; wrk and the mock upstream on "
        f"{','.join(map(str, m['load_cpus']))}. {m['runs']} run(s) of {m['seconds']:g} s per "
        f"scenario ({len(sc['clients_1'][DIRECT].get('runs', []))} for one client, "
        f"{len(sc['stream_ttfb'][DIRECT].get('runs', []))} for streams' first byte), median run "
        "shown, spread = (max-min)/median of requests/s; added = the median over the rounds of "
        f"(target minus direct in the same round). Load average "
        f"{m['loadavg_start'][0]:.1f} at the start, {m['loadavg_end'][0]:.1f} at the end{steal}. "
        f"Logging off except for the `{LOGGED}` rows. `{m['command']}`",
        "",
    ]
    for name, p in r["peers"].items():
        streams = f"; streams {p['streams']}" if p.get("streams") else ""
        out.append(f"Peer {name}: {p.get('version', '')} {p['status']}{streams}")
    gen = r["generator"]
    out += [
        "",
        f"Load generator alone (wrk, 64 connections, against the mock on the gateway's core), "
        f"median run: GET /v1/models {gen['get_models_64']['rps']:,.0f} req/s, repeated POST "
        f"{gen['post_chat_64']['rps']:,.0f} req/s"
        + (
            f", POST with 16 pipelined requests per connection "
            f"{gen['post_chat_64_pipelined_16']['rps']:,.0f} req/s"
            if "post_chat_64_pipelined_16" in gen
            else ""
        )
        + f"; best run {gen['best_rps']:,.0f} req/s. The mock's core was "
        f"{gen['post_chat_64'].get('cpu_busy', 0):.0%} busy in the unpipelined POST runs: "
        "there the figure is the mock's ceiling, not wrk's.",
    ]
    return out


def _targets(r: dict[str, Any]) -> list[str]:
    out = ["", "## Targets", "", "| target | goal | measured | |", "|---|---|---:|---|"]
    for t in r["targets"]:
        verdict = "met" if t["met"] else "**MISSED**"
        out.append(f"| {t['name']} | {t['goal']} | {_f(t['value'], 2)} | {verdict} |")
    return out


def _http(sc: dict[str, Any], names: list[str]) -> list[str]:
    out = [
        "",
        "## HTTP, whole answers",
        "",
        "| scenario | target | req/s | p50 ms | p90 ms | p99 ms | added p50 ms | added p99 ms "
        "| CPU µs/req | errors | spread |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in LABELS.items():
        rows = sc.get(key, {})
        direct = rows.get(DIRECT)
        for name in names:
            x = rows.get(name)
            if x is None:
                continue
            a50 = added(rows, name, "p50_ms") if direct and name != DIRECT else None
            a99 = added(rows, name, "p99_ms") if direct and name != DIRECT else None
            cpu = x["cpu_us_per_request"] if name != DIRECT else None
            out.append(
                f"| {label} | {name} | {x['rps']:,.0f} | {x['p50_ms']:.3f} | {x['p90_ms']:.3f} "
                f"| {x['p99_ms']:.3f} | {_f(a50)} | {_f(a99)} | {_f(cpu, 0)} | {x['errors']} "
                f"| {x['spread']:.0%} |"
            )
    return out


def _logging(sc: dict[str, Any]) -> list[str]:
    if LOGGED not in sc["clients_1"]:
        return []
    out = [
        "",
        "## Logging: `full` into SQLite vs off (same rounds, same core)",
        "",
        "| scenario | added p50 ms, off | full | change | added p99 ms, off | full | "
        "req/s, off | full | change | CPU µs/req, off | full | added |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in ("clients_1", "clients_16", "clients_64"):
        a, b = sc[key][GATEWAY], sc[key][LOGGED]
        pa, pb = added(sc[key], GATEWAY, "p50_ms"), added(sc[key], LOGGED, "p50_ms")
        qa, qb = added(sc[key], GATEWAY, "p99_ms"), added(sc[key], LOGGED, "p99_ms")
        ca, cb = a["cpu_us_per_request"] or 0, b["cpu_us_per_request"] or 0
        out.append(
            f"| {LABELS[key]} | {pa:.3f} | {pb:.3f} | {_pct(pb, pa)} | {qa:.3f} | {qb:.3f} "
            f"| {a['rps']:,.0f} | "
            f"{b['rps']:,.0f} | {_pct(b['rps'], a['rps'])} | {ca:,.0f} | {cb:,.0f} | "
            f"{cb - ca:+,.0f} |"
        )
    return out


def _limits(r: dict[str, Any]) -> list[str]:
    """Limits on (memory, Redis) against auth on, in the same rounds; the stage in process."""
    sc = r["scenarios"]
    out = []
    cost = r.get("limits_cost")
    if cost and "memory" in cost:
        redis = cost.get("redis", {})
        out += [
            "",
            f"The limits stage in process (a key with rpm, tpm and a budget; reserve and settle): "
            f"memory backend {cost['memory']['cpu_us_per_call']:.1f} µs CPU per call (target <= "
            f"{cost['target_memory_us']:g}); Redis backend "
            + (
                f"{redis['cpu_us_per_call']:.1f} µs CPU per call, admission p50 "
                f"{redis['admission_p50_ms']:.3f} ms (target <= {cost['target_redis_p50_ms']:g})."
                if "cpu_us_per_call" in redis
                else f"{redis.get('skipped', 'not measured')}."
            ),
        ]
    if AUTHED not in sc["clients_1"]:
        return out
    shown = [n for n in (LIMITED, LIMITED_REDIS) if n in sc["clients_1"]]
    if not shown:
        return out
    out += [
        "",
        "## Limits: a key with rpm, tpm and a budget vs auth on (same rounds, same core)",
        "",
        "Targets (issue 19): memory adds <= 10 µs CPU per call; Redis adds <= 0.1 ms p50 at one "
        "client and keeps >= 80% of the requests/s of auth on.",
        "",
        "| scenario | target | added p50 ms vs auth on | req/s vs auth on | CPU µs/req added |",
        "|---|---|---:|---:|---:|",
    ]
    for key in ("clients_1", "clients_16", "clients_64"):
        base = sc[key][AUTHED]
        for name in shown:
            x = sc[key][name]
            delta = added(sc[key], name, "p50_ms") - added(sc[key], AUTHED, "p50_ms")
            cpu = (x["cpu_us_per_request"] or 0) - (base["cpu_us_per_request"] or 0)
            out.append(
                f"| {LABELS[key]} | {name} | {delta:+.3f} | {x['rps'] / base['rps']:.0%} "
                f"| {cpu:+,.0f} |"
            )
    return out


def _streaming(sc: dict[str, Any], names: list[str]) -> list[str]:
    s = sc["stream_ttfb"]
    out = [
        "",
        "## Streaming, one client (fresh connection per request)",
        "",
        "| target | time to first byte p50 ms | added | total p50 ms | added | spread |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        x = s.get(name)
        if x is None:
            continue
        a = added(s, name, "ttfb_p50_ms") if name != DIRECT else None
        b = added(s, name, "total_p50_ms") if name != DIRECT else None
        out.append(
            f"| {name} | {x['ttfb_p50_ms']:.3f} | {_f(a)} | {x['total_p50_ms']:.3f} | {_f(b)} "
            f"| {x['spread']:.0%} |"
        )
    return out


def _x(ratio: float | None) -> str:
    if ratio is None:
        return ""
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x"


def _peers(sc: dict[str, Any], peers: list[str]) -> list[str]:
    """Our gateway beside each peer: a value and a ratio column per peer."""
    titles = [PEERS[p] for p in peers]
    out = [
        "",
        f"## Side by side with {' and '.join(titles)} (same run, same core, same mock)",
        "",
        "| | llm-proxy | " + " | ".join(f"{t} | {t} / llm-proxy" for t in titles) + " |",
        "|---|---:|" + "---:|---:|" * len(peers),
    ]

    def row(label: str, ours: str, cells: list[tuple[str, str]]) -> None:
        values = " | ".join(f"{v} | {r}" for v, r in cells)
        out.append(f"| {label} | {ours} | {values} |")

    for rows, field, label in (
        (sc["clients_1"], "p50_ms", "added p50, 1 client (ms)"),
        (sc["clients_1"], "p99_ms", "added p99, 1 client (ms)"),
    ):
        ours = added(rows, GATEWAY, field)
        cells = []
        for p in peers:
            theirs = added(rows, p, field)
            cells.append((f"{theirs:.3f}", _x(theirs / ours) if ours > 0 else ""))
        row(label, f"{ours:.3f}", cells)
    for key, label in (("clients_16", "16"), ("clients_64", "64"), ("delay100_64", "64*")):
        a = sc.get(key, {}).get(GATEWAY)
        if not a or not any(p in sc[key] for p in peers):
            continue
        rps, cpu = [], []
        for p in peers:
            b = sc[key].get(p)
            if not b:
                rps.append(("", ""))
                cpu.append(("", ""))
                continue
            fewer = a["rps"] / max(b["rps"], 1e-9)
            rps.append((f"{b['rps']:,.0f}", f"{b['rps'] / a['rps']:.3f} ({_x(fewer)} fewer)"))
            theirs = b["cpu_us_per_request"] or 0
            cpu.append((f"{theirs:,.0f}", _x(theirs / a["cpu_us_per_request"])))
        row(f"requests/s, {label} clients", f"{a['rps']:,.0f}", rps)
        row(f"CPU µs/request, {label} clients", f"{a['cpu_us_per_request']:,.0f}", cpu)
    st = sc["stream_ttfb"]
    ours = added(st, GATEWAY, "ttfb_p50_ms")
    row(
        "stream TTFB added (ms)",
        f"{ours:.3f}",
        [
            (f"{added(st, p, 'ttfb_p50_ms'):.3f}", "") if p in st else ("not measured", "")
            for p in peers
        ],
    )
    ceiling = 64 / 0.1
    out.append(
        f"\n(*) the mock answering after 100 ms: 64 clients can make at most {ceiling:,.0f} "
        "requests/s, so this row shows queueing (latency added under load), not CPU."
    )
    return out


def _messages(sc: dict[str, Any]) -> list[str]:
    m = sc.get("messages")
    if not m:
        return []
    out = ["", "## Anthropic Messages in, OpenAI-format upstream out (messages_bench)", ""]
    if "skipped" in m:
        return [*out, f"Skipped: {m['skipped']}"]
    return [*out, messages_bench.markdown(m).rstrip("\n")]


def _grpc(sc: dict[str, Any]) -> list[str]:
    g = sc.get("grpc", {})
    out = ["", "## gRPC (grpc_bench.run, one run)", ""]
    if "skipped" in g:
        return [*out, f"Skipped: {g['skipped']}"]
    out += [
        "| call | p50 ms | p99 ms | added p50 ms (vs HTTP direct) | calls/s at 64 | "
        "p99 ms at 64 | CPU µs/call at 64 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in ("unary", "stream"):
        if f"{kind}_grpc" not in g:
            continue
        x, d, lo = g[f"{kind}_grpc"], g[f"{kind}_direct"], g[f"{kind}_load_64"]
        out.append(
            f"| {kind} | {x['p50']:.3f} | {x['p99']:.3f} | {x['p50'] - d['p50']:.3f} | "
            f"{lo['rps']:,.0f} | {lo['p99']:.2f} | {lo['cpu_us_per_call']:,.0f} |"
        )
    return out


def _memory(r: dict[str, Any]) -> list[str]:
    mem = r.get("memory")
    if not mem:
        return []
    a, b = mem["samples"]
    return [
        "",
        "## Memory (VmRSS of the gateway's processes, fresh instance, 64 clients)",
        "",
        f"idle {mem['idle_rss_bytes'] / 2**20:.1f} MiB; after {a['requests']:,} requests "
        f"{a['rss_bytes'] / 2**20:.1f} MiB; after {b['requests']:,} requests "
        f"{b['rss_bytes'] / 2**20:.1f} MiB ({mem['growth_second_half']:+.1%} in the second "
        "half).",
    ]


def _instructions(r: dict[str, Any]) -> list[str]:
    ins = r.get("instructions")
    if not ins:
        return []
    return [
        "",
        "## Instructions per call on the event loop (callgrind)",
        "",
        "The gateway's RSGI app in-process (no Granian, no kernel), one call after another "
        "against the mock, under `valgrind --tool=callgrind` (`instructions.py`): a figure "
        "that moves by ~1-2 % between runs where requests/s moves by up to 2x, for "
        "comparing versions of the code.",
        "",
        instructions.markdown(ins).rstrip("\n"),
    ]


def _capacity(r: dict[str, Any]) -> list[str]:
    cap = r["capacity"]["cpu_us_per_request"]
    return [
        "",
        "## Capacity figures (`llm-proxy capacity` reads these)",
        "",
        "CPU µs per request on one worker: "
        + ", ".join(f"{k} {_f(v, 0)}" for k, v in cap.items())
        + ".",
    ]


def _profile(r: dict[str, Any]) -> list[str]:
    prof = r.get("profile")
    if not prof:
        return []
    out = ["", "## Where the time goes (py-spy, 64 clients, own time)", ""]
    if "skipped" in prof:
        return [*out, f"Skipped: {prof['skipped']}"]
    out += [
        f"{prof['samples']:,} samples. Granian's worker thread shows as "
        "`_spawn_rsgi_worker` while it runs in Rust (the HTTP server itself).",
        "",
        "| function | own time |",
        "|---|---:|",
    ]
    return out + [f"| `{f}` | {share:.1%} |" for f, share in prof["top_own"][:15]]
