"""`make bench`'s HTTP scenarios: the gateway against calling the mock directly, two floors,
the gateway with logging on and any peers, in interleaved rounds on the same core.

One client, 16 and 64 (whole answers); streams (first byte, one client; 64 clients); cache
hits, whole and streamed, at 1 and 64 clients; the mock answering after 100 ms at 64 clients;
memory of a fresh gateway under load; and what the load generator drives alone.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ..figures import (
    AUTHED,
    DIRECT,
    FLOOR,
    GATEWAY,
    LIMITED,
    LIMITED_REDIS,
    LOGGED,
    PROXY_FLOOR,
)
from ..harness import (
    CPUS,
    GATEWAY_CPU,
    OTHER_CPUS,
    Served,
    free_port,
    granian_floor,
    llm_proxy,
    mock,
    proxy_floor,
    rss_bytes,
)
from ..load import (
    BODY,
    CHAT,
    STREAM_BODY,
    load,
    mock_requests,
    prime,
    rounds,
    stream_latency,
    stream_problem,
    summarise,
    warm,
    wrk,
)
from ..peers import PEERS, TITLES, WARM_S

# The "auth on" gateway's one key, declared in its YAML by hash (no admin API, no writes).
AUTH_KEY = "sk-lp-bench0000001-" + "s" * 43
AUTH_ON = {
    "mode": "keys",
    "keys": [
        {
            "id": "bench0000001",
            "secret_sha256": hashlib.sha256(b"s" * 43).hexdigest(),
            "team": "bench",
            "allowed_models": ["gpt-4o*"],
        }
    ],
    "teams": {"bench": {"allowed_models": ["gpt-4o-mini"]}},
}


# The "limits on" gateways' key: the same key, with limits and a budget it never reaches.
AUTH_LIMITED = {
    **AUTH_ON,
    "keys": [
        {
            **AUTH_ON["keys"][0],  # type: ignore[index]
            "limits": {"rpm": 10**9, "tpm": 10**12},
            "budgets": [{"usd": 1e9, "period": "monthly"}],
        }
    ],
}


def _redis_for_bench(stack: ExitStack, tmp: Path) -> str | None:
    """REDIS_URL, the local Redis, or a private redis-server; None when there is none."""
    import redis as redis_py

    for url in (os.environ.get("REDIS_URL"), "redis://127.0.0.1:6379/0"):
        if not url:
            continue
        try:
            client = redis_py.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
            client.ping()
            client.close()
            return url
        except (redis_py.RedisError, OSError):
            continue
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stack.callback(lambda: (proc.terminate(), proc.wait(10)))
    time.sleep(0.5)
    return f"redis://127.0.0.1:{port}/0"


def _delete_prefix(url: str, prefix: str) -> None:
    import redis as redis_py

    client = redis_py.Redis.from_url(url, socket_timeout=5)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def generator_check(seconds: float, runs: int) -> dict[str, Any]:
    """What wrk alone can drive: the mock on the gateway's core, wrk on the others.

    A capability, so the best of `runs` runs counts (the median is kept too).
    """
    cpus = [GATEWAY_CPU] if len(CPUS) > 1 else CPUS
    with mock(cpus) as up:
        wrk(up.url + CHAT, BODY, connections=8, seconds=1)  # the mock caches repeated answers
        get, post, piped = [], [], []
        for _ in range(runs):
            get.append(load(up, b"", 64, seconds, path="/v1/models", method="GET"))
            post.append(load(up, BODY, 64, seconds))
            # Pipelined: the mock answers 16 requests per read, so the generator is the limit.
            r = wrk(up.url + CHAT, BODY, connections=64, seconds=seconds, pipeline=16)
            piped.append(dict(r.__dict__))
    best = max(r["rps"] for r in get + post + piped)
    return {
        "get_models_64": summarise(get),
        "post_chat_64": summarise(post),
        "post_chat_64_pipelined_16": summarise(piped),
        "best_rps": best,
    }


def stream_ttfb(targets: dict[str, Served], runs: int, n: int) -> dict[str, dict[str, Any]]:
    """Time to first byte and total time of streams, one client, a fresh connection each."""
    out: dict[str, dict[str, Any]] = {}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
    for _ in range(runs):
        for name, target in targets.items():
            count = n if name in (DIRECT, GATEWAY, PROXY_FLOOR) else max(20, n // 4)
            samples[name].append(stream_latency(target.url, count, target.headers))
    for name, runs_ in samples.items():
        ttfb = [a for a, _ in runs_]
        total = [b for _, b in runs_]
        out[name] = {
            "ttfb_p50_ms": statistics.median(ttfb),
            "total_p50_ms": statistics.median(total),
            "spread": (max(ttfb) - min(ttfb)) / statistics.median(ttfb) if ttfb[0] else 0.0,
            "runs": [{"ttfb_p50_ms": a, "total_p50_ms": b} for a, b in runs_],
        }
    return out


def memory(upstream: str, tmp: Path, rps_hint: float, total: int) -> dict[str, Any]:
    """VmRSS of a fresh gateway idle, after total/2 and after `total` requests at 64 clients."""
    with llm_proxy(upstream, tmp) as gw:
        time.sleep(1.0)
        idle = rss_bytes(gw.pids)
        samples = []
        done = 0
        for goal in (total // 2, total):
            while done < goal:
                # Short of the goal rather than past it; the loop tops up.
                seconds = max(1, min(120, int((goal - done) / max(rps_hint, 50) * 0.9)))
                r = wrk(gw.url + CHAT, BODY, connections=64, seconds=seconds)
                done += r.requests
                rps_hint = r.rps or rps_hint
            samples.append({"requests": done, "rss_bytes": rss_bytes(gw.pids)})
    first, last = samples
    growth = (last["rss_bytes"] - first["rss_bytes"]) / first["rss_bytes"]
    return {"idle_rss_bytes": idle, "samples": samples, "growth_second_half": growth}


def _start_peer(
    stack: ExitStack,
    name: str,
    upstream: str,
    tmp: Path,
    targets: dict[str, Served],
    results: dict[str, Any],
) -> None:
    """Peer `name` among the targets, or the reason it is not, in `results["peers"]`."""
    progress(f"starting {TITLES[name]}")
    try:
        targets[name] = stack.enter_context(PEERS[name].serve(upstream, tmp))
    except Exception as exc:
        log = tmp / f"{name}.log"
        tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
        tail = " ".join(tail.split())[-300:]
        results["peers"][name] = {"status": f"did not start: {exc}; log: {tail}"}
        print(f"{name}: not run: did not start: {exc}", flush=True)


def _warm_all(targets: dict[str, Served]) -> None:
    for name, t in targets.items():
        if name != DIRECT:
            warm(t, WARM_S.get(name, 1))


def _cache_hits(upstream: str, tmp: Path, args: argparse.Namespace, sc: dict[str, Any]) -> None:
    """A gateway with the memory cache; the mock's request counter must stay still."""
    cache = {"enabled": True, "backend": "memory"}
    with llm_proxy(upstream, tmp, cache=cache) as cached:
        for label, body in (("cache_hit", BODY), ("cache_hit_stream", STREAM_BODY)):
            prime(cached.url, body)
            before = mock_requests(upstream)
            for clients in (1, 64):
                sc[f"{label}_{clients}"] = rounds(
                    {GATEWAY: cached},
                    args.runs,
                    lambda name, t, b=body, c=clients: load(t, b, c, args.seconds),
                )
            leaked = mock_requests(upstream) - before
            sc[f"{label}_64"]["upstream_requests_during_run"] = leaked


def run(args: argparse.Namespace, results: dict[str, Any], peers: list[str]) -> None:
    """Every HTTP scenario, into `results["scenarios"]` and `results["memory"]`.

    A peer that does not start is removed from `peers` and reported in `results["peers"]`.
    """
    seconds, runs, sc = args.seconds, args.runs, results["scenarios"]
    with tempfile.TemporaryDirectory(prefix="llm-proxy-bench-") as tmp_, ExitStack() as stack:
        tmp = Path(tmp_)
        up = stack.enter_context(mock(OTHER_CPUS))
        targets: dict[str, Served] = {DIRECT: up}
        gw = stack.enter_context(llm_proxy(up.url, tmp))
        targets[GATEWAY] = gw
        results["meta"]["gateway_rss_bytes_start"] = rss_bytes(gw.pids)
        floor = stack.enter_context(granian_floor())
        hop = stack.enter_context(proxy_floor(up.url))
        warm(hop)
        logging_full = {
            "content": "full",
            "store": f"sqlite:///{tmp / 'bench-log.db'}",
            "spool_path": str(tmp / "bench-log.spool"),
        }
        logged = stack.enter_context(llm_proxy(up.url, tmp, logging=logging_full))
        warm(logged)
        authed = stack.enter_context(
            llm_proxy(up.url, tmp, auth={**AUTH_ON, "store": f"sqlite:///{tmp / 'keys.db'}"})
        )
        authed.headers = {"authorization": f"Bearer {AUTH_KEY}"}
        warm(authed)
        keys_db = {"store": f"sqlite:///{tmp / 'keys-limited.db'}"}
        limited = stack.enter_context(
            llm_proxy(up.url, tmp, auth={**AUTH_LIMITED, **keys_db}, limits={"backend": "memory"})
        )
        limited.headers = authed.headers
        warm(limited)
        extra: dict[str, Served] = {LIMITED: limited}
        redis_url = _redis_for_bench(stack, tmp)
        if redis_url is None:
            results["meta"]["limits_redis"] = "not measured: no Redis and no redis-server"
        else:
            prefix = f"llm-proxy-bench:{os.getpid()}:"
            limited_redis = stack.enter_context(
                llm_proxy(
                    up.url,
                    tmp,
                    auth={**AUTH_LIMITED, "store": f"sqlite:///{tmp / 'keys-redis.db'}"},
                    limits={"backend": "redis", "redis_url": redis_url, "key_prefix": prefix},
                )
            )
            stack.callback(_delete_prefix, redis_url, prefix)
            limited_redis.headers = authed.headers
            warm(limited_redis)
            extra[LIMITED_REDIS] = limited_redis
        # Peers whose streamed answers are measured: not LiteLLM at 64 clients (too slow to
        # finish a stream in the run), none whose streamed request fails (it would hang the
        # one-client loop, which reads until [DONE]).
        streams = {DIRECT, GATEWAY}
        for name in list(peers):
            _start_peer(stack, name, up.url, tmp, targets, results)
            if name not in targets:
                peers.remove(name)
                continue
            problem = stream_problem(targets[name], STREAM_BODY)
            if problem:
                results["peers"][name]["streams"] = f"not measured: {problem}"
                progress(f"{name}: streams not measured: {problem}")
            else:
                streams.add(name)
        _warm_all(targets)

        for clients in (1, 16, 64):
            progress(f"{clients} client(s): {', '.join(targets)}")
            sc[f"clients_{clients}"] = rounds(
                {
                    **targets,
                    FLOOR: floor,
                    PROXY_FLOOR: hop,
                    LOGGED: logged,
                    AUTHED: authed,
                    **extra,
                },
                # One client's rounds have the fewest requests and the noisiest figures: >= 5.
                runs if clients > 1 or args.quick else max(runs, 5),
                lambda name, t, c=clients: load(
                    t, BODY, c, seconds, timeout_s=30 if name in PEERS else 0
                ),
            )
        progress("streaming: time to first byte, one client")
        sc["stream_ttfb"] = stream_ttfb(
            {**{k: v for k, v in targets.items() if k in streams}, PROXY_FLOOR: hop},
            runs if args.quick else max(runs, 5),
            40 if args.quick else 200,
        )
        progress("streaming: 64 clients")
        sc["stream_64"] = rounds(
            {k: v for k, v in targets.items() if k in streams and k != "litellm"},
            runs,
            lambda name, t: load(t, STREAM_BODY, 64, seconds),
        )

        only = getattr(args, "only", {"cache", "memory"})
        if "cache" in only:
            progress("cache hits (memory backend), 1 and 64 clients")
            _cache_hits(up.url, tmp, args, sc)

        if "memory" in only:
            rps_hint = sc["clients_64"][GATEWAY]["rps"]
            total = 10_000 if args.quick else 100_000
            progress(
                f"memory: fresh gateway, RSS idle, after {total // 2:,} and {total:,} requests"
            )
            results["memory"] = memory(up.url, tmp, rps_hint, total)

    with tempfile.TemporaryDirectory(prefix="llm-proxy-bench-") as tmp_, ExitStack() as stack:
        tmp = Path(tmp_)
        progress("upstream delay 100 ms, 64 clients")
        slow = stack.enter_context(mock(OTHER_CPUS, delay_ms=100))
        targets = {DIRECT: slow, GATEWAY: stack.enter_context(llm_proxy(slow.url, tmp))}
        for name in peers:
            targets[name] = stack.enter_context(PEERS[name].serve(slow.url, tmp))
        _warm_all(targets)
        sc["delay100_64"] = rounds(
            targets, runs, lambda name, t: load(t, BODY, 64, seconds, timeout_s=30)
        )
