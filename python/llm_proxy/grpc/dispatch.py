"""The loop's side of the hand-off: each call from the Rust server becomes a task.

The server's hand-off thread schedules `CallDispatcher.on_events` with whatever is ready: new
calls (`GrpcCall`) and the ids of calls to cancel (the client went away or its deadline passed).
Cancelling the task cancels what it awaits, the upstream request included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from .._core import GrpcCall

Handler = Callable[[GrpcCall], Awaitable[None]]

# What GrpcCall.start/send/fail answer.
TAKEN, FULL, GONE = 0, 1, 2
# Waits between retries of a message the client's flow-control window has no room for.
_FULL_WAITS = (0.0005, 0.001, 0.002, 0.005, 0.01)


class CallGone(Exception):
    """The call is over on the client's side; nothing more can be sent."""


class CallDispatcher:
    """Runs `handler(call)` as a task per call; cancels it when the server says so."""

    __slots__ = ("_create_task", "_handler", "_running")

    def __init__(self, loop: asyncio.AbstractEventLoop, handler: Handler) -> None:
        self._create_task = loop.create_task
        self._handler = handler
        self._running: dict[int, asyncio.Task[None]] = {}

    def on_events(self, events: list[GrpcCall | int]) -> None:
        running = self._running
        for event in events:
            if isinstance(event, int):
                # Popped here too: a task cancelled before its first step never runs `_run`.
                task = running.pop(event, None)
                if task is not None:
                    task.cancel()
                continue
            running[event.id] = self._create_task(self._run(event))

    async def _run(self, call: GrpcCall) -> None:
        try:
            await self._handler(call)
        finally:
            self._running.pop(call.id, None)

    @property
    def in_flight(self) -> int:
        return len(self._running)


async def deliver(send: Callable[[], int]) -> None:
    """`send()` until the server takes it, waiting while the client reads slower than we write.

    Raises CallGone when the call is over (its task is being cancelled too).
    """
    result = send()
    waited = 0
    while result == FULL:
        await asyncio.sleep(_FULL_WAITS[min(waited, len(_FULL_WAITS) - 1)])
        waited += 1
        result = send()
    if result == GONE:
        raise CallGone
