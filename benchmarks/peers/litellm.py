"""LiteLLM's proxy as a peer: installed into its own venv, configured like our gateway.

The config is the equivalent of `harness.bench_config`: one model, `gpt-4o-mini`, forwarded to
`openai/gpt-4o-mini` at the mock upstream, with LiteLLM's own logging, telemetry and database
off so both gateways do the same work per request.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from ..harness import GATEWAY_CPU, Served, free_port, pin, served

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".bench-venv-litellm"
PACKAGE = "litellm[proxy]"


def python() -> Path:
    return VENV / "bin" / "python"


def install() -> str:
    """Install LiteLLM's proxy into its venv if missing; return its version (raises on failure)."""
    if not python().exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    probe = [str(python()), "-c", "import litellm.proxy.proxy_server"]
    found = subprocess.run(probe, capture_output=True, env=environment(), check=False)
    if found.returncode != 0:
        done = subprocess.run(
            [str(python()), "-m", "pip", "install", "-q", PACKAGE],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"pip install '{PACKAGE}' failed: {' / '.join(tail)}")
    version = subprocess.run(
        [str(python()), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return version.stdout.strip()


def config(upstream: str) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": "gpt-4o-mini",
                "litellm_params": {
                    "model": "openai/gpt-4o-mini",
                    "api_base": upstream + "/v1",
                    "api_key": "sk-b",
                },
            }
        ],
        "litellm_settings": {"set_verbose": False, "telemetry": False, "cache": False},
        "general_settings": {},
    }


def command(config_path: Path, port: int) -> list[str]:
    return [
        str(VENV / "bin" / "litellm"),
        "--config",
        str(config_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
        "--telemetry",
        "False",
    ]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "LITELLM_LOG": "ERROR",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price list at startup
            "LITELLM_TELEMETRY": "False",
            # Our gateway runs with no keys in the benchmark; LiteLLM refuses that unless told.
            "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
            "VIRTUAL_ENV": str(VENV),
            "PATH": f"{VENV / 'bin'}:{env.get('PATH', '')}",
        }
    )
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    return env


@contextmanager
def serve(upstream: str, tmp: Path) -> Iterator[Served]:
    """LiteLLM's proxy on the gateway's core, forwarding to `upstream`, until the block ends."""
    port = free_port()
    path = tmp / f"litellm-{port}.yaml"
    path.write_text(yaml.safe_dump(config(upstream)))
    url = f"http://127.0.0.1:{port}"
    cmd = [*pin([GATEWAY_CPU]), *command(path, port)]
    with served(
        cmd,
        url + "/health/liveliness",
        url,
        cwd=str(tmp),
        env=environment(),
        timeout=180,
        log=tmp / "litellm.log",
    ) as proc:
        yield proc
