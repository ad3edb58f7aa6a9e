"""The per-process table: bounded, oldest forgotten first."""

from __future__ import annotations

from collections import OrderedDict

# Response ids remembered; a follow-up to a forgotten one goes where its `model` says.
MAX_REMEMBERED = 100_000


class MemoryOwners:
    """Which model (and so deployment) answered each passthrough response, in this process."""

    shared = False

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self.limit = limit
        self._owners: OrderedDict[str, str] = OrderedDict()

    def remember(self, response_id: str, model: str) -> None:
        """Record at once, in this process only."""
        if not response_id:
            return
        owners = self._owners
        owners[response_id] = model
        if len(owners) > self.limit:
            owners.popitem(last=False)

    def known(self, response_id: str) -> str | None:
        """The owner as this process knows it (no round trip)."""
        return self._owners.get(response_id)

    async def record(self, response_id: str, model: str) -> None:
        self.remember(response_id, model)

    def record_soon(self, response_id: str, model: str) -> None:
        self.remember(response_id, model)

    async def owner(self, response_id: str) -> str | None:
        return self._owners.get(response_id)

    async def forget(self, response_id: str) -> None:
        self._owners.pop(response_id, None)

    async def close(self) -> None:
        return None
