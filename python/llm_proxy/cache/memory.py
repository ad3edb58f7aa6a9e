"""The in-process backend: an LRU bounded by stored response bytes and by TTL."""

from __future__ import annotations

import time
from collections import OrderedDict

from .entry import CacheEntry


class MemoryBackend:
    """Per-process; entries are kept as objects (no encoding), evicted oldest-used first."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evictions = 0
        # key -> (entry, expires at (time.time()), size)
        self._entries: OrderedDict[str, tuple[CacheEntry, float, int]] = OrderedDict()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> CacheEntry | None:
        item = self._entries.get(key)
        if item is None:
            return None
        if item[1] <= time.time():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return item[0]

    async def set_many(self, items: list[tuple[str, CacheEntry, float]]) -> None:
        for key, entry, ttl_s in items:
            self.put(key, entry, ttl_s)

    def put(self, key: str, entry: CacheEntry, ttl_s: float) -> None:
        size = entry.size()
        if size > self.max_bytes or ttl_s <= 0:
            return
        if key in self._entries:
            self._drop(key)
        entries = self._entries
        while self.bytes + size > self.max_bytes and entries:
            _, (_, _, old) = entries.popitem(last=False)
            self.bytes -= old
            self.evictions += 1
        entries[key] = (entry, entry.created + ttl_s, size)
        self.bytes += size

    def _drop(self, key: str) -> None:
        _, _, size = self._entries.pop(key)
        self.bytes -= size
