"""The two backends of one algorithm (lua.py says it in full): `memory` for one process and
`redis` for every instance sharing one Redis."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from .plan import PARALLEL, WINDOW

# One item of one call: kind, key, limit, cost (or, to settle, the change), a, b; and for a
# window, the slot its reservation went into.
Args = tuple[str, str, int, int, int, int]
SettleArgs = tuple[str, str, int, int, int, int]


@dataclass(slots=True)
class Verdict:
    """A reservation's answer: taken (each item's amount after it), or refused by one item."""

    ok: bool
    now_ms: int
    used: list[int]
    refused: int = -1
    # When the refused item would take the call; -1 when it never can (larger than the limit).
    wait_ms: int = 0


class BackendError(Exception):
    """The backend could not answer (unreachable, timed out); the message says which."""


class Backend(Protocol):
    name: str

    async def start(self) -> None: ...
    async def close(self) -> None: ...


class _Window:
    __slots__ = ("h", "slots", "total")

    def __init__(self, h: int) -> None:
        self.slots: dict[int, int] = {}
        self.total = 0
        self.h = h

    def trim(self, upto: int, b: int) -> None:
        if upto <= self.h:
            return
        if self.total <= 0 or upto - self.h > b:
            self.slots.clear()
            self.total = 0
        else:
            slots = self.slots
            for s in range(self.h + 1, upto + 1):
                v = slots.pop(s, None)
                if v is not None:
                    self.total -= v
        self.h = upto

    def wait(self, need: int, slot: int, a: int, b: int, now: int) -> int:
        freed = 0
        for s in range(self.h + 1, slot + 1):
            v = self.slots.get(s)
            if v:
                freed += v
                if freed >= need:
                    return (s + b + 1) * a - now
        return (slot + b + 1) * a - now


class MemoryBackend:
    """One process's counters: the same windows, leases and counters as Redis keeps."""

    name = "memory"

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}
        self._leases: dict[str, dict[str, int]] = {}
        self._counters: dict[str, list[int]] = {}
        self._calls = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def window(self, key: str, a: int, b: int) -> _Window:
        """The window behind `key`, made if new: a plan holds it for its calls."""
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(int(time.time() * 1000) // a - b - 1)
        return window

    def leases(self, key: str) -> dict[str, int]:
        return self._leases.setdefault(key, {})

    def counter(self, key: str, expires_ms: int) -> list[int]:
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = [0, expires_ms]
        return counter

    def reserve_cells(
        self, kinds: list[str], cells: list[Any], limits: list[int], costs: list[int],
        a_s: list[int], b_s: list[int], lease: str,
    ) -> Verdict:  # fmt: skip
        """Reserve every item at once or none: each item's cell (a plan resolves them once:
        its windows, leases and counters), limit and cost."""
        now = int(time.time() * 1000)
        used: list[int] = []
        refused, refused_wait = -1, -2
        for i, kind in enumerate(kinds):
            cell = cells[i]
            cost = costs[i]
            limit = limits[i]
            if kind == WINDOW:
                a = a_s[i]
                b = b_s[i]
                slot = now // a
                if slot - b - 1 > cell.h:
                    cell.trim(slot - b - 1, b)
                u = cell.total
                if u + cost <= limit:
                    used.append(u)
                    continue
                wait = cell.wait(u + cost - limit, slot, a, b, now) if cost <= limit else -1
            elif kind == PARALLEL:
                if cell:
                    for name in [n for n, until in cell.items() if until <= now]:
                        del cell[name]
                u = len(cell)
                if u + cost <= limit:
                    used.append(u)
                    continue
                wait = 1000 if cost <= limit else -1
            else:
                u = cell[0]
                if u + cost <= limit:
                    used.append(u)
                    continue
                wait = -1
            used.append(u)
            if refused < 0 or wait == -1 or (refused_wait != -1 and wait > refused_wait):
                refused, refused_wait = i, wait
        if refused >= 0:
            return Verdict(False, now, [used[refused]], refused, refused_wait)
        for i, kind in enumerate(kinds):
            cost = costs[i]
            cell = cells[i]
            if kind == WINDOW:
                if cost:
                    slot = now // a_s[i]
                    slots = cell.slots
                    slots[slot] = slots.get(slot, 0) + cost
                    cell.total += cost
            elif kind == PARALLEL:
                cell[lease] = now + a_s[i]
            else:
                cell[0] += cost
            used[i] += cost
        self._calls += 1
        if not self._calls & 0x3FFF:
            self._sweep(now)
        return Verdict(True, now, used)

    def settle_cells(
        self, kinds: list[str], cells: list[Any], deltas: list[int], a_s: list[int],
        slot_ms: int, lease: str,
    ) -> list[int]:  # fmt: skip
        """The settle of `reserve_cells`: each window's and counter's change (a window's in
        the slot the reservation went into, while it is still in the window), the lease freed.
        Each item's amount afterwards."""
        after: list[int] = []
        for n, kind in enumerate(kinds):
            cell = cells[n]
            delta = deltas[n]
            if kind == WINDOW:
                if delta:
                    slot = slot_ms // a_s[n]
                    v = cell.slots.get(slot)
                    if v is not None and slot > cell.h:
                        delta = max(delta, -v)
                        cell.slots[slot] = v + delta
                        cell.total += delta
                after.append(cell.total)
            elif kind == PARALLEL:
                cell.pop(lease, None)
                after.append(len(cell))
            else:
                if delta:
                    cell[0] = max(0, cell[0] + delta)
                after.append(cell[0])
        return after

    def usage(self, items: list[Args]) -> tuple[int, list[int]]:
        now = int(time.time() * 1000)
        out = []
        for kind, key, _limit, _cost, a, b in items:
            if kind == WINDOW:
                window = self._windows.get(key)
                upto = now // a - b - 1
                out.append(sum(v for s, v in window.slots.items() if s > upto) if window else 0)
            elif kind == PARALLEL:
                leases = self._leases.get(key) or {}
                out.append(sum(1 for until in leases.values() if until > now))
            else:
                counter = self._counters.get(key)
                out.append(counter[0] if counter is not None else 0)
        return now, out

    def _sweep(self, now: int) -> None:
        """Forget counters of periods that ended (windows and leases stay: plans hold them,
        and there is one of each per scope, however long the gateway runs)."""
        for key in [k for k, (_, until) in self._counters.items() if until <= now]:
            del self._counters[key]
