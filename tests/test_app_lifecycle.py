"""The RSGI worker's start and stop hooks, run in-process on a real uvloop loop."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref
from pathlib import Path

import uvloop
from llm_proxy.config import load_config
from llm_proxy.worker import GatewayApp


def write_config(tmp_path: Path, models: str) -> Path:
    """A config with one upstream (never called) and `models`, a YAML mapping."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "server: {grpc_port: 0}\n"
        "providers: {up: {kind: openai, base_url: 'http://127.0.0.1:9/v1', api_key: sk-x}}\n"
        f"models: {models}\n"
        "logging: {enabled: false}\n"
    )
    return path


def test_worker_start_freezes_what_it_built_for_the_garbage_collector(tmp_path: Path) -> None:
    path = write_config(tmp_path, "{m: {provider: up, model: m}}")
    app = GatewayApp(load_config(str(path)))
    loop = uvloop.new_event_loop()
    gc.unfreeze()
    gc.disable()  # only the start hook collects: garbage from before it must not be frozen

    class Node:
        pass

    cycle = Node()
    cycle.me = cycle  # type: ignore[attr-defined]
    garbage = weakref.ref(cycle)
    del cycle
    try:
        assert gc.get_freeze_count() == 0
        app.__rsgi_init__(loop)
        assert garbage() is None
        # The app, its pipeline and every module loaded so far are no longer walked by the
        # collector (frozen objects are in no generation).
        assert gc.get_freeze_count() > 1000
        walked = {id(o) for o in gc.get_objects()}
        assert id(app.pipeline) not in walked and id(app.recorder) not in walked
    finally:
        gc.enable()
        gc.unfreeze()
        app.__rsgi_del__(loop)
        loop.close()


def test_worker_start_loads_the_tokenizers_its_models_count_with(tmp_path: Path) -> None:
    # In a process of its own: this one may have loaded them already.
    models = "{mini: {provider: up, model: gpt-4o-mini}, old: {provider: up, model: gpt-4}}"
    path = write_config(tmp_path, models)
    script = f"""
import uvloop
from llm_proxy import _core
from llm_proxy.config import load_config
from llm_proxy.worker import GatewayApp

names = ("o200k_base", "cl100k_base")
app = GatewayApp(load_config({str(path)!r}))
print([_core.encoding_loaded(n) for n in names])
loop = uvloop.new_event_loop()
app.__rsgi_init__(loop)
print([_core.encoding_loaded(n) for n in names])
app.__rsgi_del__(loop)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    # gpt-4o-mini counts with o200k_base, gpt-4 with cl100k_base: both loaded at the start, not
    # by the first call that counts (~130 ms with the event loop held).
    assert done.stdout.split("\n")[:2] == ["[False, False]", "[True, True]"]
