"""Which limits and budgets a call meets, as backend items, and budget periods."""

from __future__ import annotations

import time
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .spec import Budget, Limits, RateLimits

# Kinds of item (see lua.py): a sliding window, calls in flight, a budget period's counter.
WINDOW, PARALLEL, COUNTER = "w", "p", "c"
MINUTE_SLOT_MS = 1000
MINUTE_SLOTS = 60
HOUR_MS = 3_600_000


@dataclass(slots=True, frozen=True)
class Item:
    """One limit or budget of one scope, as the backend keeps it."""

    kind: str
    key: str
    # `requests`, `tokens`, `parallel` or `budget`.
    metric: str
    # `key:<id>`, `key:<id>:model:<name>`, `team:<name>`, `project:<name>`, `model:<name>`,
    # `global`, `global:model:<name>`.
    scope: str
    limit: int
    a: int = 0
    b: int = 0
    budget: Budget | None = None
    # The limit as the x-ratelimit-limit-* header spells it.
    limit_text: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "limit_text", str(self.limit))


# What a call reserves of an item: one request (or slot in flight), its tokens, its cost.
ONE, TOKENS, COST = 0, 1, 2
_AMOUNT = {"requests": ONE, "parallel": ONE, "tokens": TOKENS, "budget": COST}


@dataclass(slots=True)
class Plan:
    """The items of every scope a call meets (from its key and model), built once per pair,
    with what the hot path would otherwise work out per call."""

    items: list[Item]
    # Which key entry the plan was built from: a reloaded table makes new entries.
    owner: object = None
    tokens: bool = False
    budgets: bool = False
    alerts: bool = False
    amounts: list[int] = field(default_factory=list)
    # The requests items, then the tokens items: the headers name the tightest of each.
    requests: list[int] = field(default_factory=list)
    token_items: list[int] = field(default_factory=list)
    # The counters' keys for the period they were made for: (period start, key).
    counter_keys: dict[int, tuple[int, str]] = field(default_factory=dict)
    # The items' fields as lists, for the memory backend's loop.
    kinds: list[str] = field(default_factory=list)
    limits: list[int] = field(default_factory=list)
    a_s: list[int] = field(default_factory=list)
    b_s: list[int] = field(default_factory=list)
    parallel: bool = False
    # The memory backend's windows, leases and counters of the items (None until resolved).
    cells: list[Any] | None = None
    counter_cells: dict[int, tuple[int, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        items = self.items
        self.kinds = [i.kind for i in items]
        self.limits = [i.limit for i in items]
        self.a_s = [i.a for i in items]
        self.b_s = [i.b for i in items]
        self.parallel = any(i.kind == PARALLEL for i in items)
        self.tokens = any(i.metric == "tokens" for i in items)
        self.budgets = any(i.metric == "budget" for i in items)
        self.alerts = any(i.budget is not None and i.budget.alert_at for i in items)
        self.amounts = [_AMOUNT[i.metric] for i in items]
        self.requests = [n for n, i in enumerate(items) if i.metric == "requests"]
        self.token_items = [n for n, i in enumerate(items) if i.metric == "tokens"]


def rate_items(prefix: str, scope: str, limits: RateLimits, lease_ms: int) -> list[Item]:
    items = []
    if limits.rpm is not None:
        items.append(
            Item(WINDOW, f"{prefix}{scope}:rpm", "requests", scope, limits.rpm,
                 MINUTE_SLOT_MS, MINUTE_SLOTS)
        )  # fmt: skip
    if limits.tpm is not None:
        items.append(
            Item(WINDOW, f"{prefix}{scope}:tpm", "tokens", scope, limits.tpm,
                 MINUTE_SLOT_MS, MINUTE_SLOTS)
        )  # fmt: skip
    if limits.max_parallel is not None:
        items.append(
            Item(PARALLEL, f"{prefix}{scope}:parallel", "parallel", scope, limits.max_parallel,
                 lease_ms)
        )  # fmt: skip
    return items


def scope_items(
    prefix: str, scope: str, limits: Limits | None, model: str, lease_ms: int
) -> list[Item]:
    if limits is None:
        return []
    items = rate_items(prefix, scope, limits, lease_ms)
    per_model = limits.models.get(model)
    if per_model is not None:
        items += rate_items(prefix, f"{scope}:model:{model}", per_model, lease_ms)
    return items


def budget_items(prefix: str, scope: str, budgets: list[Budget]) -> list[Item]:
    items = []
    for i, budget in enumerate(budgets):
        limit = micro(budget.usd)
        if budget.period == "rolling":
            seconds = budget.window_s()
            items.append(
                Item(WINDOW, f"{prefix}{scope}:usd:{i}:rolling:{seconds}", "budget", scope,
                     limit, HOUR_MS, max(1, seconds // 3600), budget)
            )  # fmt: skip
        else:
            items.append(
                Item(COUNTER, f"{prefix}{scope}:usd:{i}:{budget.period}", "budget", scope,
                     limit, 0, 0, budget)
            )  # fmt: skip
    return items


def micro(usd: float) -> int:
    """USD in integer micro-dollars, rounded up: a budget never undercounts."""
    return -int(-usd * 1_000_000 // 1)


class Periods:
    """The current daily, weekly and monthly periods in one time zone: (start, end) in ms."""

    def __init__(self, timezone: str, clock: Callable[[], float] = time.time) -> None:
        self.zone = zoneinfo.ZoneInfo(timezone)
        self.clock = clock
        self._current: dict[str, tuple[int, int]] = {}

    def current(self, period: str) -> tuple[int, int]:
        now_ms = int(self.clock() * 1000)
        span = self._current.get(period)
        if span is None or not span[0] <= now_ms < span[1]:
            span = self._current[period] = self.compute(period, now_ms / 1000)
        return span

    def compute(self, period: str, now: float) -> tuple[int, int]:
        local = datetime.fromtimestamp(now, self.zone)
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        if period == "weekly":
            start -= timedelta(days=start.weekday())
        elif period == "monthly":
            start = start.replace(day=1)
        if period == "daily":
            end = start + timedelta(days=1)
        elif period == "weekly":
            end = start + timedelta(days=7)
        else:
            end = (
                start.replace(year=start.year + 1, month=1)
                if start.month == 12
                else (start.replace(month=start.month + 1))
            )
        # Midnight in a zone with daylight saving: re-read the wall time in that zone.
        start = start.replace(tzinfo=None).replace(tzinfo=self.zone)
        end = end.replace(tzinfo=None).replace(tzinfo=self.zone)
        return int(start.timestamp() * 1000), int(end.timestamp() * 1000)
