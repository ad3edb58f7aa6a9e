"""Peer gateways the benchmarks run side by side with llm-proxy, each installed in its own place.

Each module has `install()` (returns the version, raises with the reason) and `serve(upstream,
tmp)` (a `Served` pinned to the gateway's core, routed to the mock like our gateway).
"""

from __future__ import annotations

from types import ModuleType

from ..figures import PEERS as _TITLES
from . import litellm, portkey

PEERS: dict[str, ModuleType] = {"litellm": litellm, "portkey": portkey}
# How each is called in the report.
TITLES = _TITLES
# Where each is installed, for the progress line.
PLACES = {"litellm": ".bench-venv-litellm", "portkey": ".bench-node-portkey (npm)"}
# Seconds of load before the first measured round (LiteLLM is slow for its first seconds;
# Node's JIT warms up too).
WARM_S = {"litellm": 5, "portkey": 3}
