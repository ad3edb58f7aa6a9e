"""`make bench`: the gateway's latency overhead, throughput, CPU and memory, beside its peers.

Starts the mock upstream, the gateway (on a config made for the run) and, with `--peers
litellm,portkey`, LiteLLM's proxy and Portkey's gateway; pins the gateway under test to its
own core (the load generator and the mock share the rest); runs every scenario `--runs` times
and keeps the median run and the spread; stops every process it started, by PID; writes
benchmarks/results/<date>-<host>.json, a markdown table (.md) and PNG charts beside it.

    python -m benchmarks.run [--quick] [--runs 3] [--seconds 5] [--peers litellm,portkey]
        [--only http,cache,memory,grpc,instructions,messages]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .charts import charts
from .figures import capacity_figures, peer_comparison, targets_table
from .harness import HERE, OTHER_CPUS, machine, mock, steal_ticks
from .peers import PEERS, PLACES, TITLES
from .report import markdown
from .scenarios import gateway, instructions, limits_cost, messages_bench, pyspy
from .scenarios.gateway import progress


def grpc_scenarios(seconds: float, calls: int) -> dict[str, Any]:
    """gRPC unary and streaming calls (`grpc_bench.run`), or why they were skipped."""
    try:
        from .scenarios import grpc_bench
    except ImportError as exc:
        return {"skipped": f"benchmarks/scenarios/grpc_bench.py not importable: {exc}"}
    try:
        return dict(grpc_bench.run(seconds, calls, ["unary", "stream"]))
    except (Exception, SystemExit) as exc:  # one scenario must not sink the run
        return {"skipped": f"grpc_bench.run failed: {exc}"}


# What `--only` can pick besides the HTTP rounds (1, 16, 64 clients, streams, upstream delay,
# with the peers), which always run: the report is built on them.
PARTS = ("cache", "memory", "grpc", "instructions", "limits", "messages")


def install_peers(names: str, results: dict[str, Any]) -> list[str]:
    """The peers to run; one that cannot be installed is reported (one line) and left out."""
    peers = []
    for name in (p.strip() for p in names.split(",")):
        if not name or name in peers:
            continue
        if name not in PEERS:
            raise SystemExit(f"--peers: unknown peer {name!r} (known: {', '.join(PEERS)})")
        progress(f"installing {TITLES[name]} into {PLACES[name]} (if missing)")
        try:
            results["peers"][name] = {"status": "ok", "version": PEERS[name].install()}
            peers.append(name)
        except Exception as exc:  # report it, go on without the peer
            reason = " ".join(str(exc).split())
            results["peers"][name] = {"status": f"not run: {reason}"}
            print(f"{name}: not run: {reason}", flush=True)
    return peers


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every scenario in order, then the figures derived from them."""
    seconds, runs = args.seconds, args.runs
    results: dict[str, Any] = {
        "meta": {
            **machine(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "runs": runs,
            "seconds": seconds,
            "quick": args.quick,
            "only": sorted(args.only),
            "command": " ".join(["python -m benchmarks.run", *sys.argv[1:]]),
        },
        "peers": {},
        "scenarios": {},
    }
    peers = install_peers(args.peers, results)

    progress("load generator check (wrk against the mock alone)")
    results["generator"] = gateway.generator_check(seconds, runs)
    gateway.run(args, results, peers)

    if "grpc" in args.only:
        progress("gRPC unary and streaming (grpc_bench.run)")
        results["scenarios"]["grpc"] = grpc_scenarios(seconds, 300 if args.quick else 1500)
    else:
        results["scenarios"]["grpc"] = {"skipped": "not in --only"}
    if "messages" in args.only:
        progress("/v1/messages beside /v1/chat/completions, whole and streamed (messages_bench)")
        try:
            # Its figure is a median of paired differences: 3 rounds even with --quick.
            results["scenarios"]["messages"] = messages_bench.run(
                seconds, max(runs, 3), 0.5 if args.quick else 1.0
            )
        except Exception as exc:  # report it, keep the rest of the run
            results["scenarios"]["messages"] = {"skipped": str(exc)}
    else:
        results["scenarios"]["messages"] = {"skipped": "not in --only"}
    if "instructions" in args.only:
        progress("instructions per call on the event loop (instructions.py, callgrind)")
        try:
            results["instructions"] = instructions.run(
                100 if args.quick else 500, list(instructions.PATHS)
            )
        except Exception as exc:  # report it, keep the rest of the run
            results["instructions"] = {"skipped": str(exc)}
    else:
        results["instructions"] = {"skipped": "not in --only"}
    if "limits" in args.only:
        progress("the limits stage in process: CPU per call, memory and Redis (limits_cost.py)")
        try:
            results["limits_cost"] = limits_cost.run(5_000 if args.quick else 20_000, runs)
        except Exception as exc:  # report it, keep the rest of the run
            results["limits_cost"] = {"skipped": str(exc)}
    results["meta"]["loadavg_end"] = os.getloadavg()
    results["meta"]["cpu_steal_end"] = steal_ticks()
    results["targets"] = targets_table(results)
    results["capacity"] = capacity_figures(results)
    results["peers_vs_gateway"] = peer_comparison(results)
    if args.profile == "always" or (
        args.profile == "missed" and any(not t["met"] for t in results["targets"] if t["gateway"])
    ):
        progress("profiling the gateway under 64 clients (py-spy)")
        with (
            tempfile.TemporaryDirectory(prefix="llm-proxy-bench-") as tmp_,
            mock(OTHER_CPUS) as up,
        ):
            results["profile"] = pyspy.profile(up.url, Path(tmp_), 10 if not args.quick else 4)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="1 run of 2 s each (smoke check)")
    parser.add_argument("--runs", type=int, help="runs per scenario (default 3)")
    parser.add_argument("--seconds", type=int, help="seconds per wrk run (default 5)")
    parser.add_argument(
        "--peers", default="", help=f"peer gateways to compare, comma-separated: {','.join(PEERS)}"
    )
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help="the HTTP rounds (with the peers; always run) plus only these of "
        f"{','.join(PARTS)}; 'http' for the rounds alone (default: all)",
    )
    parser.add_argument(
        "--profile",
        choices=["missed", "always", "never"],
        default="missed",
        help="py-spy the gateway at 64 clients (default: when a target is missed)",
    )
    parser.add_argument("--out", default=str(HERE / "results"), help="results directory")
    parser.add_argument("--report", help="only re-render the .md and charts of a results JSON")
    args = parser.parse_args(argv)
    if args.report:
        stem = Path(args.report).with_suffix("")
        results = json.loads(Path(args.report).read_text())
        Path(f"{stem}.md").write_text(markdown(results))
        charts(results, stem)
        print(f"wrote {stem}.md and charts")
        return 0
    only = {p.strip() for p in args.only.split(",") if p.strip()} - {"http"}
    if only - set(PARTS):
        parser.error(f"--only: unknown {', '.join(sorted(only - set(PARTS)))}")
    args.only = only
    args.runs = args.runs or (1 if args.quick else 3)
    args.seconds = args.seconds or (2 if args.quick else 5)
    started = time.monotonic()
    results = run(args)
    results["meta"]["wall_seconds"] = round(time.monotonic() - started)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{datetime.date.today().isoformat()}-{socket.gethostname()}"
    Path(f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    report = markdown(results)
    Path(f"{stem}.md").write_text(report)
    pngs = charts(results, stem)
    print(report)
    print(f"wrote {stem}.json, {stem}.md" + "".join(f", {p.name}" for p in pngs))
    print(f"wall time {results['meta']['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
