"""Instructions per call on the gateway's event loop, counted by callgrind: far steadier between
runs than requests/s on a shared machine, so it is the figure for comparing two versions of the
code (how steady: benchmarks/README.md).

Each path runs in `apps/loop_driver.py` (the RSGI app in-process, no Granian, the real mock
upstream over loopback) under `valgrind --tool=callgrind`, once with `--calls` calls and once
with 3x as many; the difference divided by the extra calls is one call's instructions, with
start-up and shutdown cancelled out. User-space instructions only: the kernel's work (socket
reads and writes) and Granian's are not in it. Needs valgrind (Debian: `apt-get install
valgrind`).

    python -m benchmarks.scenarios.instructions [--calls 500] [--paths miss,hit,stream,...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..harness import GATEWAY_CPU, ROOT, mock_upstream, pin

PATHS = {
    "miss": "whole answer, cache off",
    "hit": "whole answer, memory cache hit",
    "stream": "streamed answer (8 events)",
    "bare": "floor: body in, upstream client, answer out",
    "bare-stream": "floor: a stream's bytes relayed as they come",
    "auth": "whole answer, a valid virtual key (auth on)",
    "limits": "whole answer, auth on, the key's rpm, tpm and budget (memory backend)",
    "limits-redis": "whole answer, auth on, the key's rpm, tpm and budget (Redis backend)",
}
# The floor each path is compared with.
FLOORS = {
    "miss": "bare",
    "hit": "bare",
    "stream": "bare-stream",
    "auth": "miss",
    "limits": "auth",
    "limits-redis": "auth",
}


def collected(upstream: str, path: str, calls: int, out: Path) -> int:
    """callgrind's instruction total for one driver run of `calls` calls."""
    cmd = [*pin([GATEWAY_CPU]), "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    cmd += [sys.executable, "-m", "benchmarks.apps.loop_driver", upstream, path, str(calls)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts in every run
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    found = re.search(r"Collected : ([\d,]+)", done.stderr)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"{path}: callgrind run failed: {done.stderr.strip()[-500:]}")
    return int(found.group(1).replace(",", ""))


def run(calls: int, paths: list[str]) -> dict[str, Any]:
    if not shutil.which("valgrind"):
        return {"skipped": "valgrind is not installed (Debian: apt-get install valgrind)"}
    out: dict[str, Any] = {"calls": [calls, 3 * calls], "paths": {}}
    with tempfile.TemporaryDirectory() as tmp, mock_upstream() as up:
        for path in paths:
            few = collected(up, path, calls, Path(tmp) / f"{path}.few")
            many = collected(up, path, 3 * calls, Path(tmp) / f"{path}.many")
            out["paths"][path] = {
                "what": PATHS[path],
                "instructions_per_call": round((many - few) / (2 * calls)),
            }
    for path, row in out["paths"].items():
        floor = out["paths"].get(FLOORS.get(path, ""))
        if floor is not None:
            row["over_floor"] = row["instructions_per_call"] - floor["instructions_per_call"]
    return out


def markdown(r: dict[str, Any]) -> str:
    if "skipped" in r:
        return f"skipped: {r['skipped']}\n"
    lines = ["| path | instructions per call | over its floor |", "|---|---:|---:|"]
    for name, row in r["paths"].items():
        over = f"{row['over_floor']:,} (over {FLOORS[name]})" if "over_floor" in row else ""
        lines.append(f"| {name}: {row['what']} | {row['instructions_per_call']:,} | {over} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    r = run(args.calls, args.paths.split(","))
    print(markdown(r), end="")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
