"""`make bench`: run every benchmark in turn and keep their tables.

Each benchmark starts and stops its own processes (mock upstream, gateway pinned to one
core). The combined tables go to benchmarks/results/<date>-<host>.md, the raw JSON of those
that write it to benchmarks/results/<date>-<host>.json.

    python benchmarks/run.py [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one short run of each")
    args = parser.parse_args()
    seconds, runs = ("2", "1") if args.quick else ("5", "3")
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    stem = f"{datetime.date.today().isoformat()}-{socket.gethostname()}"
    tmp = Path(tempfile.mkdtemp())
    benches = [
        ("Hot path (Rust vs Python)", ["hotpath.py", "--json", str(tmp / "hotpath.json")]),
        (
            "HTTP overhead",
            [
                "overhead.py",
                "--seconds",
                seconds,
                "--runs",
                runs,
                "--json",
                str(tmp / "overhead.json"),
            ],
        ),
        ("Cache hits", ["cache_bench.py", "--seconds", seconds, "--runs", runs]),
        ("gRPC", ["grpc_bench.py", "--seconds", seconds, "--json", str(tmp / "grpc.json")]),
        ("Logging overhead", ["logging_overhead.py", "--seconds", seconds, "--runs", runs]),
    ]
    report = [f"# Benchmarks {stem}\n"]
    failed = 0
    for title, argv in benches:
        print(f"== {title}", flush=True)
        done = subprocess.run([sys.executable, *argv], cwd=HERE, capture_output=True, text=True)
        print(done.stdout, flush=True)
        if done.returncode != 0:
            failed += 1
            print(done.stderr[-2000:], file=sys.stderr)
        report.append(f"## {title}\n\n{done.stdout.strip() or '(failed)'}\n")
    raw = {p.stem: json.loads(p.read_text()) for p in tmp.glob("*.json")}
    (results / f"{stem}.json").write_text(json.dumps(raw, indent=2))
    (results / f"{stem}.md").write_text("\n".join(report))
    print(f"wrote {results / stem}.md and .json")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
