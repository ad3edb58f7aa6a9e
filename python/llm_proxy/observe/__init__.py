"""Watching calls: the recorder stage (metrics, and records for the log store) and tracing.

`build_recorder(config)` gives the pipeline's last stage; `prepare_multiprocess(workers)` must
run in `serve` before workers start. prometheus_client is imported only by `build_recorder`;
OpenTelemetry only by `tracing.build_tracer`, when `telemetry.otlp_endpoint` is set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .multiproc import prepare_multiprocess, prepare_worker_starts, worker_started
from .tracing import ObserveConfigError
from .tracing import validate as validate_tracing

if TYPE_CHECKING:
    from ..config import Config
    from .recorder import CallRecorder

__all__ = [
    "ObserveConfigError",
    "build_recorder",
    "prepare_multiprocess",
    "prepare_worker_starts",
    "validate",
    "worker_started",
]


def build_recorder(config: Config) -> CallRecorder:
    """The recorder for `config`: log store (if logging.enabled), metrics, spool."""
    validate(config)
    from .recorder import CallRecorder

    return CallRecorder(config)


def validate(config: Config) -> None:
    """Raise ObserveConfigError for settings that cannot work (call in `serve`, early)."""
    validate_tracing(config.telemetry)
