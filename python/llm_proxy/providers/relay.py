"""An upstream's SSE stream read through the Rust relay, event by event."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from .. import _core
from ..calls import Call, StreamSummary
from ..errors import GatewayError
from ..upstream import UpstreamStream, passed_headers


class RelayedStream:
    """Forwards each complete upstream event as soon as it arrives.

    Events go out exactly as the upstream sent them unless a subclass reshapes them in
    `translate` (a provider whose stream format differs from OpenAI's). The events completed
    by one read from the upstream go out together, as one item: one write to the client
    instead of one per event (each write is a hop to the server's I/O thread).
    """

    def __init__(self, upstream: UpstreamStream, call: Call, dialect: str, model: str) -> None:
        self._upstream = upstream
        self._call = call
        self._relay = _core.SseRelay(dialect, model=model)  # type: ignore[arg-type]
        self._summary: StreamSummary | None = None
        self.headers = passed_headers(upstream.headers)

    def translate(self, event: bytes) -> list[bytes]:
        """The OpenAI events to send for one upstream event (passthrough by default)."""
        return [event]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        call, relay = self._call, self._relay
        passthrough = type(self).translate is RelayedStream.translate
        upstream = self._upstream
        waited = time.perf_counter()
        try:
            async for chunk in upstream.chunks():
                call.upstream_s += time.perf_counter() - waited
                try:
                    events = relay.feed(chunk)
                except _core.SseError as exc:
                    raise GatewayError(502, f"upstream sent a bad stream: {exc}") from None
                if relay.error is not None:
                    raise GatewayError(502, f"upstream sent a bad stream: {relay.error}")
                if not passthrough:
                    events = [item for event in events for item in self.translate(event)]
                if events:
                    upstream.event_arrived()
                    yield events[0] if len(events) == 1 else b"".join(events)
                waited = time.perf_counter()
            call.upstream_s += time.perf_counter() - waited
        finally:
            self._summary = relay.finish()
            self._upstream.close()
        summary = self._summary
        if summary.error is not None:
            raise GatewayError(502, f"upstream sent a bad stream: {summary.error}")
        if not summary.done:
            raise GatewayError(502, "upstream closed the stream before it finished")

    def summary(self) -> StreamSummary | None:
        return self._summary

    async def aclose(self) -> None:
        self._upstream.close()
