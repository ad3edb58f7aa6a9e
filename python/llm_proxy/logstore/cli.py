"""`llm-proxy logs` and `llm-proxy stats`: read the request log from the store serve writes."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time
from typing import Any

import msgspec

from ..config import Config, ConfigError, load_config
from . import LogStore, StoreError, open_store

_LIST_COLUMNS = (
    "seq",
    "ts",
    "request_id",
    "door",
    "key_id",
    "team",
    "model",
    "provider",
    "provider_model",
    "endpoint",
    "stream",
    "status",
    "error_type",
    "error_message",
    "latency_ms",
    "upstream_ms",
    "overhead_ms",
    "ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "tokens_counted",
    "cost_usd",
    "cache_status",
)
_GROUPS = {"model": "model", "key": "key_id", "provider": "provider", "team": "team"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_encoder = msgspec.json.Encoder()


def add_arguments(logs: argparse.ArgumentParser, stats: argparse.ArgumentParser) -> None:
    """Add the options of `llm-proxy logs` and `llm-proxy stats` to their subparsers."""
    logs.add_argument("--config", help="the config file serve uses (default: built-in config)")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new calls")
    logs.add_argument("--model", help="only this requested model")
    logs.add_argument("--status", help="only this status (200, 4xx, 5xx, error)")
    logs.add_argument("--key", help="only this client key id")
    logs.add_argument("--since", default="1h", help="how far back: 30s, 15m, 1h, 7d (default 1h)")
    logs.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    logs.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    logs.add_argument("--content", action="store_true", help="include prompt and completion")
    stats.add_argument("--config", help="the config file serve uses (default: built-in config)")
    stats.add_argument("--since", default="24h", help="how far back (default 24h)")
    stats.add_argument("--by", choices=sorted(_GROUPS), default="model")
    stats.add_argument("--json", action="store_true", help="JSON lines instead of a table")


def parse_since(text: str) -> float:
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"--since: cannot read {text!r}; use e.g. 30s, 15m, 1h, 7d")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def _open(args: argparse.Namespace) -> tuple[Config, LogStore] | int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(
            f"llm-proxy: bad config ({args.config or 'the default config'}): {exc}", file=sys.stderr
        )
        return 2
    store = open_store(config.logging.store, max(config.logging.store_timeout_s, 5.0))
    try:
        store.connect()
    except StoreError as exc:
        print(f"llm-proxy: cannot open the log store: {exc}", file=sys.stderr)
        return 1
    return config, store


def _status_filter(status: str) -> tuple[str, list[Any]]:
    s = status.strip().lower()
    if s == "error":
        return "status >= ?", [400]
    if re.fullmatch(r"[1-5]xx", s):
        base = int(s[0]) * 100
        return "status >= ? AND status < ?", [base, base + 100]
    if s.isdigit():
        return "status = ?", [int(s)]
    raise ValueError(f"--status: cannot read {status!r}; use 200, 4xx, 5xx or error")


# -- logs ---------------------------------------------------------------------------------


def logs_command(args: argparse.Namespace) -> int:
    """Print recent calls, newest last; with --follow keep printing new ones."""
    try:
        window = parse_since(args.since)
        where = ["ts >= ?"]
        params: list[Any] = [time.time() - window]
        if args.model:
            where.append("model = ?")
            params.append(args.model)
        if args.key:
            where.append("key_id = ?")
            params.append(args.key)
        if args.status:
            clause, values = _status_filter(args.status)
            where.append(clause)
            params.extend(values)
    except ValueError as exc:
        print(f"llm-proxy: {exc}", file=sys.stderr)
        return 2
    opened = _open(args)
    if isinstance(opened, int):
        return opened
    _, store = opened
    columns = list(_LIST_COLUMNS) + (["prompt", "completion", "tool_calls"] if args.content else [])
    select = f"SELECT {', '.join(columns)} FROM requests WHERE {' AND '.join(where)}"
    try:
        rows = store.fetch(select + " ORDER BY seq DESC LIMIT ?", [*params, args.limit])
        rows.reverse()
        _print_rows(columns, rows, args.json, header=True)
        last = rows[-1][0] if rows else _max_seq(store)
        while args.follow:
            time.sleep(0.5)
            try:
                rows = store.fetch(
                    f"SELECT {', '.join(columns)} FROM requests WHERE seq > ? AND "
                    f"{' AND '.join(where[1:]) or 'TRUE'} ORDER BY seq LIMIT 1000",
                    [last, *params[1:]],
                )
            except StoreError as exc:
                print(f"llm-proxy: log store: {exc}; retrying", file=sys.stderr)
                time.sleep(2)
                continue
            if rows:
                last = rows[-1][0]
                _print_rows(columns, rows, args.json, header=False)
    except KeyboardInterrupt:
        return 0
    except StoreError as exc:
        print(f"llm-proxy: log store: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


def _max_seq(store: LogStore) -> int:
    row = store.fetch("SELECT MAX(seq) FROM requests")
    return int(row[0][0] or 0) if row else 0


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _print_rows(columns: list[str], rows: list[Any], as_json: bool, *, header: bool) -> None:
    out = sys.stdout
    if as_json:
        for row in rows:
            record = dict(zip(columns, row, strict=True))
            for flag in ("stream", "tokens_counted"):
                record[flag] = bool(record[flag])
            out.write(_encoder.encode(record).decode() + "\n")
        out.flush()
        return
    widths = (19, 7, 22, 4, 6, 9, 9, 13, 11, 6, 5)
    if header:
        titles = (
            "time",
            "door",
            "model",
            "s",
            "status",
            "total ms",
            "ovh ms",
            "tokens",
            "cost $",
            "cache",
            "key",
        )
        out.write("  ".join(t.ljust(w) for t, w in zip(titles, widths, strict=True)) + "\n")
    for row in rows:
        r = dict(zip(columns, row, strict=True))
        tokens = "-"
        if r["prompt_tokens"] is not None:
            mark = "~" if r["tokens_counted"] else ""
            tokens = f"{mark}{r['prompt_tokens']}+{r['completion_tokens']}"
        status = str(r["status"]) + (f" {r['error_type']}" if r["error_type"] else "")
        cells = (
            _when(r["ts"]),
            r["door"],
            r["model"][:22],
            "S" if r["stream"] else "-",
            status[:6],
            _fmt(r["latency_ms"]),
            _fmt(r["overhead_ms"], 2),
            tokens,
            _fmt(r["cost_usd"], 6),
            (r["cache_status"] or "-")[:6],
            r["key_id"] or "-",
        )
        out.write("  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + "\n")
        if "prompt" in r:
            out.write(f"    prompt: {r['prompt']}\n    completion: {r['completion']}\n")
    out.flush()


# -- stats --------------------------------------------------------------------------------


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def stats_command(args: argparse.Namespace) -> int:
    """Calls, error rate, p50/p99 latency, tokens, cost and cache hit rate per group."""
    try:
        since = time.time() - parse_since(args.since)
    except ValueError as exc:
        print(f"llm-proxy: {exc}", file=sys.stderr)
        return 2
    opened = _open(args)
    if isinstance(opened, int):
        return opened
    config, store = opened
    group = _GROUPS[args.by]
    try:
        totals = store.fetch(
            f"SELECT {group}, COUNT(*), "
            "SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), "
            "SUM(COALESCE(prompt_tokens, 0)), SUM(COALESCE(completion_tokens, 0)), "
            "SUM(cost_usd), COUNT(cost_usd), "
            "SUM(CASE WHEN cache_status = 'hit' THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN cache_status IN ('hit', 'miss') THEN 1 ELSE 0 END) "
            f"FROM requests WHERE ts >= ? GROUP BY {group} ORDER BY COUNT(*) DESC",
            [since],
        )
        latencies: dict[Any, list[float]] = {}
        for key, latency in store.fetch(
            f"SELECT {group}, latency_ms FROM requests WHERE ts >= ? ORDER BY latency_ms",
            [since],
        ):
            latencies.setdefault(key, []).append(float(latency))
        policies = _policies(config, args.by, store) if args.by in ("key", "team") else {}
    except StoreError as exc:
        print(f"llm-proxy: log store: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    results = []
    for key, calls, errors, p_tok, c_tok, cost, priced, hits, lookups in totals:
        values = latencies.get(key, [])
        results.append(
            {
                args.by: key,
                "calls": int(calls),
                "errors": int(errors or 0),
                "error_rate": (errors or 0) / calls if calls else 0.0,
                "p50_ms": _percentile(values, 0.50),
                "p99_ms": _percentile(values, 0.99),
                "prompt_tokens": int(p_tok or 0),
                "completion_tokens": int(c_tok or 0),
                "cost_usd": float(cost) if priced else None,
                "cache_hit_rate": (hits or 0) / lookups if lookups else None,
                **policies.get(key, {}),
            }
        )
    if args.json:
        for result in results:
            sys.stdout.write(_encoder.encode(result).decode() + "\n")
        return 0
    titles = (
        args.by,
        "calls",
        "errors",
        "p50 ms",
        "p99 ms",
        "prompt tok",
        "compl tok",
        "cost $",
        "cache hit",
    )
    widths = (28, 8, 8, 9, 9, 11, 11, 11, 9)
    lines = ["  ".join(t.ljust(w) for t, w in zip(titles, widths, strict=True))]
    for r in results:
        cells = (
            str(r[args.by] if r[args.by] is not None else "-")[:28],
            r["calls"],
            f"{r['error_rate']:.1%}",
            _fmt(r["p50_ms"]),
            _fmt(r["p99_ms"]),
            r["prompt_tokens"],
            r["completion_tokens"],
            _fmt(r["cost_usd"], 6),
            "-" if r["cache_hit_rate"] is None else f"{r['cache_hit_rate']:.1%}",
        )
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)))
    if not results:
        lines.append(f"(no calls in the last {args.since})")
    lines += _policy_lines(results, args.by)
    print("\n".join(lines))
    return 0


def _policies(config: Config, by: str, store: LogStore) -> dict[Any, dict[str, Any]]:
    """Each key's or team's limits and budgets (from the key store), with the spend of each
    budget's current period from the log (the history the live counters settle to)."""
    from ..keys import store_url
    from ..keys.store import KeyStore
    from ..limits.plan import Periods

    try:
        keys = KeyStore(store_url(config))
    except Exception:
        return {}
    try:
        snapshot = keys.snapshot()
    except Exception:
        return {}
    finally:
        keys.close()
    if by == "key":
        owners: dict[str, Any] = {k.id: k for k in snapshot.keys}
        column = "key_id"
    else:
        owners = dict(snapshot.teams)
        for name, declared in config.auth.teams.items():
            owners.setdefault(name, declared)
        column = "team"
    periods = Periods(config.limits.timezone)
    now = time.time()
    out: dict[Any, dict[str, Any]] = {}
    for name, owner in owners.items():
        limits = getattr(owner, "limits", None)
        budgets = getattr(owner, "budgets", None) or []
        if limits is None and not budgets:
            continue
        entry: dict[str, Any] = {"limits": msgspec.to_builtins(limits) if limits else None}
        rows = []
        for budget in budgets:
            if budget.period == "rolling":
                start = now - budget.window_s()
            else:
                start = periods.current(budget.period)[0] / 1000
            ((spent,),) = store.fetch(
                f"SELECT SUM(cost_usd) FROM requests WHERE {column} = ? AND ts >= ?",
                [name, start],
            )
            rows.append(
                {
                    **msgspec.to_builtins(budget),
                    "period_start": start,
                    "spent_usd": float(spent or 0.0),
                }
            )
        entry["budgets"] = rows
        out[name] = entry
    return out


def _policy_lines(results: list[dict[str, Any]], by: str) -> list[str]:
    lines = []
    for r in results:
        if "limits" not in r:
            continue
        parts = []
        limits = r["limits"] or {}
        for name in ("rpm", "tpm", "max_parallel"):
            if limits.get(name) is not None:
                parts.append(f"{name}={limits[name]}")
        for model, per in (limits.get("models") or {}).items():
            parts.append(f"{model}: " + " ".join(f"{k}={v}" for k, v in per.items()))
        for b in r.get("budgets", []):
            period = b["period"] if b["period"] != "rolling" else f"last {b['window']}"
            parts.append(f"${b['spent_usd']:.4f} of ${b['usd']:g} ({period})")
        lines.append(f"{by} {r[by]}: " + ("; ".join(parts) or "no limits"))
    if lines:
        lines.insert(0, "limits and budgets (spend of the current period, from the log):")
    return lines
