"""The passive circuit breaker of one deployment: closed, open, half-open."""

from __future__ import annotations

from typing import Literal

from ..config import BreakerConfig

BreakerState = Literal["closed", "open", "half_open"]


class Breaker:
    """Opens after `consecutive_failures` failures in a row, or when the failed share of the
    calls over the rolling window reaches `failure_ratio`, or at once on a 429 until its
    retry-after; after the open time one trial call goes through (half-open): its success
    closes the breaker, its failure opens it again.

    The window is two halves (this one and the last), so it rolls without a per-call list.
    """

    __slots__ = (
        "_half",
        "_half_s",
        "calls",
        "config",
        "failures",
        "last_calls",
        "last_failures",
        "open_until",
        "opened",
        "run",
        "trial",
    )

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self._half_s = config.window_s / 2
        self._half = 0  # index of the current half-window
        self.calls = self.failures = 0
        self.last_calls = self.last_failures = 0
        self.run = 0  # failures in a row
        self.opened = False
        self.open_until = 0.0
        self.trial = False  # the half-open trial call is in flight

    def available(self, now: float) -> bool:
        """May a call go to this deployment now (a half-open one takes one trial at a time)?"""
        if not self.opened:
            return True
        return now >= self.open_until and not self.trial

    def state(self, now: float) -> BreakerState:
        if not self.opened:
            return "closed"
        return "half_open" if now >= self.open_until else "open"

    def picked(self, now: float) -> None:
        if self.opened and now >= self.open_until:
            self.trial = True

    def _roll(self, now: float) -> None:
        half = int(now / self._half_s)
        if half != self._half:
            if half == self._half + 1:
                self.last_calls, self.last_failures = self.calls, self.failures
            else:
                self.last_calls = self.last_failures = 0
            self.calls = self.failures = 0
            self._half = half

    def success(self, now: float) -> None:
        if now - self._half * self._half_s >= self._half_s:
            self._roll(now)
        self.calls += 1
        self.run = 0
        if self.opened:  # the half-open trial succeeded: a fresh start
            self.opened = self.trial = False
            self.calls = 1
            self.failures = self.last_calls = self.last_failures = 0

    def failure(self, now: float, retry_after_s: float | None = None) -> None:
        self._roll(now)
        self.calls += 1
        self.failures += 1
        self.run += 1
        config = self.config
        if retry_after_s is not None and retry_after_s > 0:
            self._open(now, retry_after_s)
            return
        if self.opened:  # the half-open trial failed
            self._open(now, config.cooldown_s)
            return
        calls = self.calls + self.last_calls
        if self.run >= config.consecutive_failures or (
            calls >= config.min_calls
            and (self.failures + self.last_failures) >= config.failure_ratio * calls
        ):
            self._open(now, config.cooldown_s)

    def _open(self, now: float, for_s: float) -> None:
        self.opened = True
        self.trial = False
        self.open_until = max(self.open_until, now + for_s)

    def released(self) -> None:
        """A trial call ended without a verdict (cancelled): let another one through."""
        self.trial = False
