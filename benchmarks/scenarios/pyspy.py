"""Where the gateway's time goes: py-spy on its processes under 64 clients, by own time."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..harness import OTHER_CPUS, llm_proxy, pin
from ..load import BODY, CHAT, warm, wrk


def profile(upstream: str, tmp: Path, seconds: int) -> dict[str, Any]:
    """py-spy on the gateway's processes under 64 clients: top functions by own time."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    raw = tmp / "profile.txt"
    with llm_proxy(upstream, tmp) as gw:
        warm(gw)
        load_thread = threading.Thread(
            target=wrk, args=(gw.url + CHAT, BODY), kwargs={"connections": 64, "seconds": seconds}
        )
        load_thread.start()
        time.sleep(0.5)
        cmd = [*pin(OTHER_CPUS), spy, "record", "--pid", str(gw.proc.pid), "--subprocesses"]
        cmd += ["--duration", str(max(1, seconds - 1)), "--format", "raw", "-o", str(raw)]
        cmd += ["--nonblocking", "--rate", "200", "--function"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        load_thread.join()
    if done.returncode != 0 or not raw.exists():
        return {"skipped": f"py-spy failed: {done.stderr.strip()[-300:]}"}
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return {
        "samples": total,
        "top_own": [(f, n / total) for f, n in own.most_common(20)] if total else [],
        "top_inclusive": [(f, n / total) for f, n in inclusive.most_common(25)] if total else [],
    }
