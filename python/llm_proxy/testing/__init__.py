"""The mock upstream server used by tests and benchmarks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .mock_upstream import MockUpstream, main, start_mock_upstream
    from .routing import MockSettings, MockStats

__all__ = ["MockSettings", "MockStats", "MockUpstream", "main", "start_mock_upstream"]


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m llm_proxy.testing.mock_upstream` does not import the module twice.
    if name in __all__:
        from . import mock_upstream

        return getattr(mock_upstream, name)
    raise AttributeError(name)
