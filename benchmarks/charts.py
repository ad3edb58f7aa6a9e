"""The PNG charts of a run (`<date>-<host>-latency.png`, `-throughput.png`), with matplotlib."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .figures import DIRECT, GATEWAY, PEERS, dig


def charts(r: dict[str, Any], stem: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    sc = r["scenarios"]
    names = [n for n in (DIRECT, GATEWAY, *PEERS) if n in sc["clients_1"]]
    colors = {DIRECT: "#999999", GATEWAY: "#1f77b4", "litellm": "#d62728", "portkey": "#2ca02c"}
    written = []

    keys = [("clients_1", "1 client"), ("clients_16", "16 clients"), ("clients_64", "64 clients")]
    keys.append(("delay100_64", "64 clients, upstream +100 ms"))
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 4))
    for ax, (key, title) in zip(axes, keys, strict=True):
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            x = sc[key].get(name)
            if x is None:
                continue
            values = [x["p50_ms"], x["p90_ms"], x["p99_ms"]]
            pos = [j + i * width for j in range(3)]
            ax.bar(pos, values, width, label=name, color=colors[name])
        ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(3)], ["p50", "p90", "p99"])
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_ylabel("latency, ms (log)")
    axes[0].legend()
    fig.suptitle(f"Latency percentiles — {r['meta']['host']} {r['meta']['date'][:10]}")
    fig.tight_layout()
    path = stem.with_name(stem.name + "-latency.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    scenarios = [
        ("clients_16", "16 clients"),
        ("clients_64", "64 clients"),
        ("stream_64", "stream, 64"),
        ("cache_hit_64", "cache hit, 64"),
        ("cache_hit_stream_64", "stream hit, 64"),
        ("delay100_64", "+100 ms, 64"),
    ]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [dig(sc, k, name, "rps") or 0 for k, _ in scenarios]
        pos = [j + i * width for j in range(len(scenarios))]
        ax.bar(pos, values, width, label=name, color=colors[name])
        for p, v in zip(pos, values, strict=True):
            if v:
                ax.text(p, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=7)
    g = sc.get("grpc", {})
    if "unary_load_64" in g:
        for j, kind in enumerate(("unary", "stream")):
            v = g[f"{kind}_load_64"]["rps"]
            pos = len(scenarios) + j + width * (names.index(GATEWAY))
            ax.bar([pos], [v], width, color=colors[GATEWAY])
            ax.text(pos, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=7)
        scenarios += [("grpc", "gRPC unary, 64"), ("grpc", "gRPC stream, 64")]
    centre = width * (len(names) - 1) / 2
    ax.set_xticks([j + centre for j in range(len(scenarios))], [s for _, s in scenarios])
    ax.set_yscale("log")
    ax.set_ylabel("requests/s (log)")
    ax.legend()
    ax.set_title("Requests/s per scenario, gateway on one core")
    fig.tight_layout()
    path = stem.with_name(stem.name + "-throughput.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written
