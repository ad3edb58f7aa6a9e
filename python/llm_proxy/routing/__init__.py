"""Routing: model groups of several deployments, strategies, retries and fallbacks inside one
deadline, passive circuit breakers, and the shipped model table."""

from __future__ import annotations

from .attempts import Attempt, RouteState
from .router import Router

__all__ = ["Attempt", "RouteState", "Router"]
