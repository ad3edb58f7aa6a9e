"""Request logs, spend and metrics: every call recorded, nothing lost, never in the way.

`build_observer(config)` gives the pipeline's observer; `prepare_multiprocess(workers)` must run
in `serve` before workers start. prometheus_client is imported only by `build_observer`;
OpenTelemetry only by `tracing.build_tracer`, when `telemetry.otlp_endpoint` is set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .multiproc import prepare_multiprocess

if TYPE_CHECKING:
    from ..config import Config
    from .observer import CallRecorder

__all__ = ["ObserveConfigError", "build_observer", "prepare_multiprocess", "validate"]


class ObserveConfigError(Exception):
    """A logging or telemetry setting that cannot be honoured; stops startup."""


def build_observer(config: Config) -> CallRecorder:
    """The recorder for `config`: log store (if logging.enabled), metrics, spool."""
    validate(config)
    from .observer import CallRecorder

    return CallRecorder(config)


def validate(config: Config) -> None:
    """Raise ObserveConfigError for settings that cannot work (call in `serve`, early)."""
    from .tracing import validate as validate_tracing

    validate_tracing(config.telemetry)
