"""OpenAI's Responses API passed through to an upstream that serves it (OpenAI, Azure)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import msgspec

from .. import _core
from ..calls import Call, SimpleSummary, StreamSummary, Usage
from ..errors import GatewayError
from ..upstream import UpstreamStream, passed_headers
from ..wire.sse import event_data, split_events


class ResponsesUsage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


class ResponseHead(msgspec.Struct):
    """What the gateway reads of a Response: its id (for follow-ups) and its usage."""

    id: str = ""
    usage: ResponsesUsage | None = None


class _Event(msgspec.Struct):
    type: str = ""
    response: ResponseHead | None = None


response_head_decoder = msgspec.json.Decoder(ResponseHead)
_event_decoder = msgspec.json.Decoder(_Event)
_FINAL = frozenset({"response.completed", "response.failed", "response.incomplete"})


def responses_usage(head: ResponseHead) -> Usage | None:
    u = head.usage
    if u is None:
        return None
    return Usage(
        u.input_tokens, u.output_tokens, u.total_tokens or u.input_tokens + u.output_tokens
    )


class ResponsesStream:
    """The upstream's Responses events, forwarded as they complete (framed by the Rust relay).

    `response_id` is the id the upstream gave (from `response.created`), for follow-ups.
    """

    def __init__(self, upstream: UpstreamStream, call: Call) -> None:
        self._upstream = upstream
        self._call = call
        self._relay = _core.SseRelay("openai")
        self._summary: StreamSummary | None = None
        self.headers = passed_headers(upstream.headers)
        self.response_id = ""
        self._done = False
        self._usage: Usage | None = None

    def _watch(self, events: list[bytes]) -> None:
        for item in events:
            for raw in split_events(item):
                data = event_data(raw)
                if data is None or b'"response"' not in data:
                    continue
                try:
                    event = _event_decoder.decode(data)
                except msgspec.DecodeError:
                    continue
                if event.response is not None and event.response.id:
                    self.response_id = event.response.id
                if event.type in _FINAL:
                    self._done = True
                    if event.response is not None:
                        self._usage = responses_usage(event.response)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        call, relay, upstream = self._call, self._relay, self._upstream
        waited = time.perf_counter()
        try:
            async for chunk in upstream.chunks():
                call.upstream_s += time.perf_counter() - waited
                try:
                    events = relay.feed(chunk)
                except _core.SseError as exc:
                    raise GatewayError(502, f"upstream sent a bad stream: {exc}") from None
                if events:
                    self._watch(events)
                    upstream.event_arrived()
                    yield events[0] if len(events) == 1 else b"".join(events)
                waited = time.perf_counter()
        finally:
            relay.finish()
            usage = self._usage
            self._summary = SimpleSummary(
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
                done=self._done,
            )
            upstream.close()
        if not self._done:
            raise GatewayError(502, "upstream closed the stream before it finished")

    def summary(self) -> StreamSummary | None:
        return self._summary

    async def aclose(self) -> None:
        self._upstream.close()
