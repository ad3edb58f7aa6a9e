"""Metrics shared by several worker processes (no prometheus_client import here on purpose:
prometheus_client picks its storage when first imported, which must be after this runs)."""

from __future__ import annotations

import os
import shutil
import tempfile

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A file each worker appends one byte to when it starts: its size less the workers asked for
# is how many were started again after dying.
STARTS_ENV = "LLM_PROXY_WORKER_STARTS"
WORKERS_ENV = "LLM_PROXY_WORKERS"


def prepare_worker_starts(workers: int) -> None:
    """Start counting worker starts; call in `serve` before the workers start."""
    fd, path = tempfile.mkstemp(prefix="llm-proxy-starts-")
    os.close(fd)
    os.environ[STARTS_ENV] = path
    os.environ[WORKERS_ENV] = str(workers)


def worker_started() -> None:
    """Count this worker's start (a no-op outside `serve`)."""
    path = os.environ.get(STARTS_ENV)
    if path:
        with open(path, "ab") as f:
            f.write(b".")


def worker_restarts() -> int:
    """Workers started again after one died, since `serve` began."""
    path = os.environ.get(STARTS_ENV)
    if not path:
        return 0
    try:
        started = os.path.getsize(path)
    except OSError:
        return 0
    return max(0, started - int(os.environ.get(WORKERS_ENV, "1")))


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
