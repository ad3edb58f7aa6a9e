"""Metrics shared by several worker processes (no prometheus_client import here on purpose:
prometheus_client picks its storage when first imported, which must be after this runs)."""

from __future__ import annotations

import os
import shutil
import tempfile

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess(workers: int) -> str | None:
    """Make `/metrics` sum all `workers`; call in `serve` before the workers start.

    Sets PROMETHEUS_MULTIPROC_DIR (an emptied directory) when workers > 1; returns it.
    """
    if workers <= 1:
        os.environ.pop(MULTIPROC_ENV, None)
        return None
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path, exist_ok=True)
    else:
        path = tempfile.mkdtemp(prefix="llm-proxy-metrics-")
        os.environ[MULTIPROC_ENV] = path
    return path
