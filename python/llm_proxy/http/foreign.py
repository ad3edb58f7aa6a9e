"""The request lifecycle of the door's non-OpenAI APIs (Anthropic Messages, OpenAI Responses).

Such an API's handler only translates: its request into a Call (a chat body, plus the
client's own bytes for a deployment that speaks the API), the chat answer or chunk stream
back into its format, and every error into its error shape. The body read, the request
watch, shutdown cuts and the pipeline are the door's, as for chat completions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from granian._granian import RSGIHTTPProtocol as HTTPProtocol
from granian._granian import RSGIProtocolClosed as ProtocolClosed
from granian._granian import RSGIProtocolError as ProtocolError
from granian.rsgi import Scope

from ..calls import Call, ClientWire, Headers, Outcome, Reply, shown
from ..config import AnthropicProvider, Config
from ..errors import GatewayError
from .outcomes import ClientGone, first_event, json_headers, shutting_down, stream_cancelled

if TYPE_CHECKING:
    from .door import HttpDoor

log = logging.getLogger("llm_proxy.http")
_SSE_HEADERS = [
    ("content-type", "text/event-stream; charset=utf-8"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
]


class StreamTranslator(Protocol):
    """Chat chunk events in, the API's events out."""

    def feed(self, item: bytes) -> bytes: ...
    def finish(self) -> bytes: ...


class Target:
    """What the door knows of a model before the pipeline routes it."""

    __slots__ = ("model", "native")

    def __init__(self, model: str, native: bool) -> None:
        self.model = model  # the upstream's name for it
        self.native = native  # its provider speaks the client's API


def targets(config: Config, native: Callable[[object], bool]) -> dict[str, Target]:
    """Each model's upstream name, and whether its provider speaks the client's API (for a
    model group: every deployment's, its fallbacks' included, or the call is translated)."""

    def speaks(name: str) -> bool:
        model = config.models[name]
        providers = [d.provider for d in model.routes()]
        for fallback in model.fallbacks:
            providers += [d.provider for t in fallback.to for d in config.models[t].routes()]
        return all(native(config.providers.get(p)) for p in providers)

    return {name: Target(m.model, speaks(name)) for name, m in config.models.items()}


def is_anthropic(provider: object) -> bool:
    return isinstance(provider, AnthropicProvider)


def native_providers(config: Config, native: Callable[[object], bool]) -> frozenset[str]:
    return frozenset(n for n, p in config.providers.items() if native(p))


class ForeignApi:
    """One non-OpenAI API on the HTTP door; subclasses translate."""

    wire: ClientWire = "anthropic"

    def __init__(self, door: HttpDoor) -> None:
        self.door = door
        self.pipeline = door.pipeline
        self.config = door.config

    # -- what a subclass translates --------------------------------------------------------

    def decode(self, body: bytes, request_id: str, headers: Headers) -> Call:
        raise NotImplementedError

    async def decode_call(self, body: bytes, request_id: str, headers: Headers) -> Call:
        """`decode`, for an API that must look something up first (shared state) to do it."""
        return self.decode(body, request_id, headers)

    def native(self, call: Call) -> bool:
        """Whether the call's answer is already in the client's format (passthrough)."""
        raise NotImplementedError

    def whole(self, call: Call, reply: Reply) -> bytes:
        raise NotImplementedError

    async def native_whole(self, call: Call, reply: Reply) -> bytes:
        """A passthrough answer's body (as it came, by default)."""
        return reply.body

    def passthrough(self, call: Call) -> StreamTranslator | None:
        """What watches a passthrough stream's events, if anything (None: sent as they come)."""
        return None

    def translator(self, call: Call) -> StreamTranslator:
        raise NotImplementedError

    def error_body(self, exc: GatewayError) -> bytes:
        raise NotImplementedError

    def error_event(self, exc: GatewayError) -> bytes:
        raise NotImplementedError

    # -- the lifecycle ---------------------------------------------------------------------

    def error_response(
        self, proto: HTTPProtocol, exc: GatewayError, request_id: str, started: float
    ) -> None:
        overhead_ms = (time.perf_counter() - started) * 1000.0
        headers = [*json_headers(request_id, overhead_ms), *exc.headers]
        proto.response_bytes(exc.status, headers, self.error_body(exc))

    def refused(self, request_id: str, exc: GatewayError) -> None:
        call = Call(request_id, "http", "chat", b"", "", wire=self.wire)
        self.pipeline.ended(call, Outcome(exc.status, exc.type, exc.message))

    async def read(self, scope: Scope, proto: HTTPProtocol, request_id: str) -> bytes:
        """The POST body, or a GatewayError (recorded as refused)."""
        if scope.method != "POST":
            raise GatewayError(
                405,
                f"method {scope.method} not allowed on {shown(scope.path)}; use POST",
                headers=[("allow", "POST")],
            )
        task = asyncio.current_task()
        assert task is not None
        try:
            return await self.door._read_body(scope, proto, task)
        except ClientGone:
            raise
        except GatewayError as exc:
            self.refused(request_id, exc)
            raise

    async def __call__(
        self, scope: Scope, proto: HTTPProtocol, request_id: str, started: float
    ) -> None:
        try:
            body = await self.read(scope, proto, request_id)
            try:
                call = await self.decode_call(body, request_id, scope.headers)
            except GatewayError as exc:
                self.refused(request_id, exc)
                raise
            call.started = started
            await self.run(call, proto)
        except GatewayError as exc:
            self.error_response(proto, exc, request_id, started)
        except ClientGone:
            pass
        except Exception:
            log.exception("unhandled error in request %s", request_id)
            failure = GatewayError(500, "internal gateway error", type="api_error")
            self.error_response(proto, failure, request_id, started)

    async def run(self, call: Call, proto: HTTPProtocol) -> None:
        task = asyncio.current_task()
        assert task is not None
        watch = self.door.watch
        watch.running(task, proto, call)
        try:
            if call.stream:
                await self._stream(call, proto, task)
                return
            reply = await self.pipeline.complete(call)
            try:
                if self.native(call):
                    body = await self.native_whole(call, reply)
                else:
                    body = self.whole(call, reply)
            except ValueError as exc:
                raise GatewayError(502, f"upstream answered with an invalid body: {exc}") from None
            headers = json_headers(call.request_id, call.overhead_ms())
            headers += _cache_headers(call)
            if reply.headers:
                headers += reply.headers
            proto.response_bytes(reply.status, headers, body)
        except GatewayError as exc:
            self.error_response(proto, exc, call.request_id, call.started)
        except asyncio.CancelledError:
            if watch.cut_by_shutdown(task):
                task.uncancel()
                if not call.stream:
                    self.error_response(proto, shutting_down(), call.request_id, call.started)
                return
            if not watch.client_left(task):
                raise
            task.uncancel()
        finally:
            watch.done(task)

    async def _stream(self, call: Call, proto: HTTPProtocol, task: asyncio.Task[Any]) -> None:
        stream = None
        transport: Any = None
        try:
            stream = await self.pipeline.stream(call)
            events = stream.__aiter__()
            first = await first_event(events, call.request_id)
            translator = self.passthrough(call) if self.native(call) else self.translator(call)
            headers = [
                *_SSE_HEADERS,
                ("x-request-id", call.request_id),
                ("x-llm-proxy-overhead-ms", f"{call.overhead_ms():.3f}"),
                *stream.headers,
                *_cache_headers(call),
            ]
            transport = proto.response_stream(200, headers)
            await self._pump(events, first, transport, translator, call.request_id)
        except asyncio.CancelledError:

            async def answer_shutdown() -> None:
                if transport is None:
                    self.error_response(proto, shutting_down(), call.request_id, call.started)
                else:
                    with contextlib.suppress(ProtocolClosed, ProtocolError):
                        await transport.send_bytes(self.error_event(shutting_down()))

            if not await stream_cancelled(self.door.watch, task, stream, answer_shutdown):
                raise

    async def _pump(
        self,
        events: AsyncGenerator[bytes, None],
        first: bytes | None,
        transport: Any,
        translator: StreamTranslator | None,
        request_id: str,
    ) -> None:
        async with contextlib.aclosing(events):
            try:
                if first is not None:
                    out = first if translator is None else translator.feed(first)
                    if out:
                        await transport.send_bytes(out)
                    async for event in events:
                        out = event if translator is None else translator.feed(event)
                        if out:
                            await transport.send_bytes(out)
                if translator is not None:
                    out = translator.finish()
                    if out:
                        await transport.send_bytes(out)
            except GatewayError as exc:
                with contextlib.suppress(ProtocolClosed, ProtocolError):
                    await transport.send_bytes(self.error_event(exc))
            except (ProtocolClosed, ProtocolError):
                pass
            except ValueError as exc:
                failure = GatewayError(502, f"upstream sent a bad stream: {exc}")
                with contextlib.suppress(ProtocolClosed, ProtocolError):
                    await transport.send_bytes(self.error_event(failure))
            except Exception:
                log.exception("stream %s failed", request_id)
                with contextlib.suppress(ProtocolClosed, ProtocolError):
                    await transport.send_bytes(self.error_event(GatewayError(502, "stream failed")))


def _cache_headers(call: Call) -> list[tuple[str, str]]:
    if call.cache_status == "off":
        return []
    if call.cache_age_s is None:
        return [("x-llm-proxy-cache", call.cache_status)]
    return [("x-llm-proxy-cache", call.cache_status), ("age", str(int(call.cache_age_s)))]


def header_text(headers: Mapping[str, Any] | Headers, name: str) -> str | None:
    value = headers.get(name)
    return str(value) if value else None
