"""One timer per worker watches the HTTP requests in flight, instead of a timer per request.

A body still arriving past its deadline is cancelled (the door answers 408). A request that
runs longer than `WATCH_AFTER_S` gets a watch on its client's connection, so a client that
leaves cancels its request and the upstream call with it (logged 499); most requests end
before that and never pay for the watch.
"""

from __future__ import annotations

import asyncio
from typing import Any

from granian._granian import RSGIHTTPProtocol as HTTPProtocol

from ..calls import Call

WATCH_AFTER_S = 0.1
_TICK_S = 0.05


class RequestWatch:
    """Deadlines for body reads and client-disconnect watches for long requests."""

    def __init__(self, body_timeout_s: float) -> None:
        self.body_timeout_s = body_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._time: Any = _no_time
        self._timer: asyncio.TimerHandle | None = None
        self._reads: dict[asyncio.Task[Any], float] = {}
        self._timed_out: set[asyncio.Task[Any]] = set()
        # task -> (time it started, its protocol, the watch on its client once started)
        self._running: dict[
            asyncio.Task[Any], tuple[float, HTTPProtocol, asyncio.Future[Any] | None]
        ] = {}
        self._calls: dict[asyncio.Task[Any], Call] = {}
        self._left: set[asyncio.Task[Any]] = set()
        self._shut: set[asyncio.Task[Any]] = set()
        self._cut: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._time = loop.time
        self._timer = loop.call_later(_TICK_S, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._cut is not None:
            self._cut.cancel()
            self._cut = None
        for _, _, gone in self._running.values():
            if gone is not None:
                gone.cancel()

    # -- body reads ------------------------------------------------------------------------

    def reading(self, task: asyncio.Task[Any]) -> None:
        self._reads[task] = self._time() + self.body_timeout_s

    def read_done(self, task: asyncio.Task[Any]) -> bool:
        """Stop the read's deadline; True if it passed (the read was cancelled for it)."""
        self._reads.pop(task, None)
        if self._timed_out and task in self._timed_out:
            self._timed_out.discard(task)
            return True
        return False

    # -- requests in flight ----------------------------------------------------------------

    def running(self, task: asyncio.Task[Any], proto: HTTPProtocol, call: Call) -> None:
        self._running[task] = (self._time(), proto, None)
        self._calls[task] = call

    def done(self, task: asyncio.Task[Any]) -> bool:
        """The request ended; True if its client left (the task was cancelled for it)."""
        self._calls.pop(task, None)
        if self._shut:
            self._shut.discard(task)
        entry = self._running.pop(task, None)
        if entry is not None and entry[2] is not None:
            entry[2].cancel()
        if self._left and task in self._left:
            self._left.discard(task)
            return True
        return False

    def client_left(self, task: asyncio.Task[Any]) -> bool:
        return task in self._left

    def cut_by_shutdown(self, task: asyncio.Task[Any]) -> bool:
        return task in self._shut

    # -- shutdown ---------------------------------------------------------------------------

    def shutdown(self, cut_after_s: float) -> None:
        """The worker is stopping: requests still running in `cut_after_s` are cut then (a
        stream gets an error event), so they are answered and recorded before the worker is
        killed at the end of its grace period."""
        loop = self._loop
        if loop is not None and self._cut is None:
            self._cut = loop.call_later(max(0.0, cut_after_s), self._cut_all)

    def _cut_all(self) -> None:
        for task, call in list(self._calls.items()):
            if not task.done():
                call.cut_by_shutdown = True
                self._shut.add(task)
                task.cancel()

    # -- the tick ---------------------------------------------------------------------------

    def _tick(self) -> None:
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        if self._reads:
            for task, deadline in list(self._reads.items()):
                if deadline <= now and task not in self._timed_out:
                    self._timed_out.add(task)
                    task.cancel()
        if self._running:
            watch_before = now - WATCH_AFTER_S
            for task, (started, proto, gone) in list(self._running.items()):
                if gone is None and started <= watch_before:
                    gone = asyncio.ensure_future(proto.client_disconnect())
                    gone.add_done_callback(self._gone_callback(task))
                    self._running[task] = (started, proto, gone)
        self._timer = loop.call_later(_TICK_S, self._tick)

    def _gone_callback(self, task: asyncio.Task[Any]) -> Any:
        def gone(future: asyncio.Future[Any]) -> None:
            if future.cancelled() or task not in self._running or task.done():
                return
            self._left.add(task)
            task.cancel()

        return gone


def _no_time() -> float:
    return 0.0
