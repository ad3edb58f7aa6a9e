"""What a limit and a budget say, as configured on keys, teams, projects, models and globally.

The same Structs are read from the YAML (`limits:`, `models.<name>.limits`) and from the
admin API and CLI (`limits` and `budgets` fields of a key, team or project).
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

Period = Literal["daily", "weekly", "monthly", "rolling"]
_WINDOW = re.compile(r"\A(\d+)\s*([hd])\Z")


class RateLimits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Requests per minute, tokens per minute and calls in flight; None is no limit."""

    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "max_parallel"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive integer or null")

    @property
    def empty(self) -> bool:
        return self.rpm is None and self.tpm is None and self.max_parallel is None


class Limits(RateLimits, kw_only=True, omit_defaults=True):
    """A scope's limits, and per-model limits under it (key x model, team x model)."""

    models: dict[str, RateLimits] = {}

    @property
    def empty(self) -> bool:
        return (
            self.rpm is None
            and self.tpm is None
            and self.max_parallel is None
            and all(m.empty for m in self.models.values())
        )


class Budget(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """At most `usd` of spend per period; an alert as each share in `alert_at` is passed.

    Calendar periods (daily, weekly from Monday, monthly) start at midnight in
    `limits.timezone`; `rolling` is the last `window` (`24h`, `30d`).
    """

    usd: float
    period: Period = "monthly"
    window: str | None = None
    alert_at: list[float] = []

    def __post_init__(self) -> None:
        if not self.usd > 0:
            raise ValueError("usd must be greater than 0")
        if self.period == "rolling":
            if self.window is None or window_seconds(self.window) is None:
                raise ValueError("a rolling budget needs `window` such as `24h` or `30d`")
        elif self.window is not None:
            raise ValueError("`window` is only for period `rolling`")
        for share in self.alert_at:
            if not 0 < share <= 1:
                raise ValueError("alert_at holds shares of the budget, each in (0, 1]")
        self.alert_at = sorted(set(self.alert_at))

    def window_s(self) -> int:
        """The length of a rolling budget's window, in seconds."""
        seconds = window_seconds(self.window or "")
        assert seconds is not None
        return seconds


def window_seconds(text: str) -> int | None:
    m = _WINDOW.match(text.strip())
    if m is None or int(m.group(1)) < 1:
        return None
    return int(m.group(1)) * (3600 if m.group(2) == "h" else 86400)


class SpecError(ValueError):
    """A `limits` or `budgets` value that cannot be used; the message says why."""


def parse_limits(value: Any) -> Limits | None:
    """A `limits` object from JSON-like data (admin API, CLI, store), or None for null/{}."""
    if value is None:
        return None
    try:
        limits = msgspec.convert(value, Limits)
    except msgspec.ValidationError as exc:
        raise SpecError(str(exc)) from None
    return None if limits.empty else limits


def parse_budgets(value: Any) -> list[Budget]:
    """A `budgets` list from JSON-like data; null is no budget."""
    if value is None:
        return []
    try:
        return msgspec.convert(value, list[Budget])
    except msgspec.ValidationError as exc:
        raise SpecError(str(exc)) from None


def to_builtins(value: Limits | list[Budget] | None) -> Any:
    """The JSON-ready form the store and the admin API keep."""
    return msgspec.to_builtins(value) if value is not None else None
