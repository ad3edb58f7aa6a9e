"""Portkey's open-source gateway as a peer: npm-installed into its own folder, run with Node.

Portkey has no model list to configure: each request names the provider and where it lives in
headers. Every request to it carries `x-portkey-provider: openai`, `x-portkey-custom-host:
<mock>/v1` (Portkey appends `/chat/completions`, so the mock sees the same path as from our
gateway) and the same `Authorization: Bearer sk-b` our gateway sends upstream; the bodies are
the ones every other target gets. `--headless` leaves out its web console.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..harness import GATEWAY_CPU, Served, free_port, pin, served

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / ".bench-node-portkey"
PACKAGE = "@portkey-ai/gateway"
MODULE = FOLDER / "node_modules" / "@portkey-ai" / "gateway"


def _package() -> dict[str, object]:
    return dict(json.loads((MODULE / "package.json").read_text()))


def entry() -> Path:
    """The script of the package's `bin` (build/start-server.js in 1.15)."""
    b = _package().get("bin")
    rel = b if isinstance(b, str) else next(iter(dict(b or {}).values()), None)  # type: ignore[call-overload]
    if not rel:
        raise RuntimeError(f"{PACKAGE} declares no bin")
    return MODULE / str(rel)


def install() -> str:
    """Install the gateway into `.bench-node-portkey` if missing; return its version.

    Raises (with the reason) when Node or npm is missing or the install fails.
    """
    for tool in ("node", "npm"):
        if not shutil.which(tool):
            raise RuntimeError(f"{tool} is not installed (Portkey's gateway runs on Node.js)")
    if not (MODULE / "package.json").exists():
        FOLDER.mkdir(exist_ok=True)
        if not (FOLDER / "package.json").exists():  # keep npm from looking further up
            (FOLDER / "package.json").write_text('{"private": true}\n')
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", PACKAGE],
            cwd=FOLDER,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if done.returncode != 0 or not (MODULE / "package.json").exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"npm install {PACKAGE} failed: {' / '.join(tail)}")
    if not entry().exists():
        raise RuntimeError(f"{entry()} is missing after the install")
    return str(_package().get("version", "?"))


def headers(upstream: str) -> dict[str, str]:
    """What every request to Portkey carries to be routed to the mock like our gateway's."""
    return {
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": upstream + "/v1",
        "authorization": "Bearer sk-b",
    }


def command(port: int) -> list[str]:
    return ["node", str(entry()), f"--port={port}", "--headless"]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["NODE_ENV"] = "production"
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    return env


@contextmanager
def serve(upstream: str, tmp: Path) -> Iterator[Served]:
    """Portkey's gateway on the gateway's core, routed to `upstream`, until the block ends."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [*pin([GATEWAY_CPU]), *command(port)]
    with served(
        cmd,
        url + "/",
        url,
        cwd=str(tmp),
        env=environment(),
        timeout=60,
        log=tmp / "portkey.log",
    ) as proc:
        proc.headers = headers(upstream)
        yield proc
