"""The OpenAI-compatible HTTP front door: RSGI requests in, pipeline calls, responses out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import msgspec
from granian._granian import RSGIHTTPProtocol as HTTPProtocol
from granian._granian import RSGIProtocolClosed as ProtocolClosed
from granian._granian import RSGIProtocolError as ProtocolError
from granian.rsgi import Scope

from ..calls import Call, Endpoint, Outcome, decode_call, new_request_id, shown
from ..config import Config
from ..errors import GatewayError
from ..keys.stage import Authenticate, key_info
from ..pipeline import Pipeline, PipelineStream
from .foreign import ForeignApi
from .messages import CountTokensApi, MessagesApi
from .outcomes import (
    JSON,
    ClientGone,
    first_event,
    json_headers,
    shutting_down,
    stream_cancelled,
    stream_failed,
)
from .responses import STORED_PREFIX, ResponsesApi
from .watch import RequestWatch

log = logging.getLogger("llm_proxy.http")
_encoder = msgspec.json.Encoder()

_POST_ROUTES: dict[str, Endpoint] = {
    "/v1/chat/completions": "chat",
    "/chat/completions": "chat",
    "/v1/completions": "completions",
    "/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/embeddings": "embeddings",
}
_SSE_HEADERS = [
    ("content-type", "text/event-stream; charset=utf-8"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
]

_KEY_INFO = ("/v1/key/info", "/key/info")
# A client's x-request-id longer than this is cut to it (it is echoed and stored).
MAX_REQUEST_ID = 128

# Clients that leave mid-body are logged at most once per this many seconds.
_BROKEN_BODY_LOG_S = 10.0


def _error_response(
    proto: HTTPProtocol, exc: GatewayError, request_id: str, overhead_ms: float
) -> None:
    proto.response_bytes(
        exc.status, [*json_headers(request_id, overhead_ms), *exc.headers], exc.body()
    )


def _since_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _cache_headers(call: Call) -> list[tuple[str, str]]:
    """The headers of a call whose answer was looked up in the cache (status not "off")."""
    if call.cache_age_s is None:
        return [("x-llm-proxy-cache", call.cache_status)]
    return [("x-llm-proxy-cache", call.cache_status), ("age", str(int(call.cache_age_s)))]


class HttpDoor:
    """The RSGI callable of one worker: translates each request and hands it to the pipeline."""

    def __init__(
        self,
        config: Config,
        pipeline: Pipeline,
        metrics: Callable[[], tuple[str, bytes]],
        auth: Authenticate | None = None,
    ) -> None:
        self.config = config
        # With keys on, the model list and key info are the caller's own.
        self.auth = auth
        self.pipeline = pipeline
        self.metrics = metrics
        self.max_body = config.server.max_body_bytes
        self.watch = RequestWatch(config.server.body_timeout_s)
        self._models_body = self._render_models()
        self._broken_logged_at = 0.0
        # The non-OpenAI APIs, each translating to and from chat completions.
        self.responses = ResponsesApi(self)
        self.foreign: dict[str, ForeignApi] = {
            "/v1/messages": MessagesApi(self),
            "/v1/messages/count_tokens": CountTokensApi(self),
            "/v1/responses": self.responses,
        }

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the per-worker request watch (inside the worker, on its loop)."""
        self.watch.start(loop)

    def stop(self) -> None:
        self.watch.stop()

    # -- dispatch --------------------------------------------------------------------------

    async def __call__(self, scope: Scope, proto: HTTPProtocol) -> None:
        if scope.proto != "http":
            return
        started = time.perf_counter()
        request_id = scope.headers.get("x-request-id")
        if not request_id:
            request_id = new_request_id()
        elif len(request_id) > MAX_REQUEST_ID:
            request_id = request_id[:MAX_REQUEST_ID]
        path, method = scope.path, scope.method
        try:
            endpoint = _POST_ROUTES.get(path)
            if endpoint is not None:
                if method != "POST":
                    raise GatewayError(
                        405,
                        f"method {method} not allowed on {shown(path)}; use POST",
                        headers=[("allow", "POST")],
                    )
                await self._inference(scope, proto, endpoint, request_id, started)
            elif path in self.foreign:
                await self.foreign[path](scope, proto, request_id, started)
            elif path.startswith(STORED_PREFIX):
                await self.responses.stored(scope, proto, request_id, started)
            elif (method == "GET" or method == "HEAD") and path in _KEY_INFO:
                await self._key_info(scope, proto, request_id, started)
            elif method == "GET" or method == "HEAD":
                self._get(scope, proto, path, request_id, started)
            elif path in ("/v1/models", "/health", "/ready") or path.startswith("/v1/models/"):
                raise GatewayError(
                    405,
                    f"method {method} not allowed on {shown(path)}; use GET",
                    headers=[("allow", "GET")],
                )
            else:
                raise GatewayError(
                    404, f"Unknown request URL: {method} {shown(path)}", code="unknown_url"
                )
        except GatewayError as exc:
            _error_response(proto, exc, request_id, _since_ms(started))
        except ClientGone:
            pass  # nobody is left to answer
        except Exception:
            log.exception("unhandled error in request %s", request_id)
            _error_response(
                proto,
                GatewayError(500, "internal gateway error", type="api_error"),
                request_id,
                _since_ms(started),
            )

    def _get(
        self, scope: Scope, proto: HTTPProtocol, path: str, request_id: str, started: float
    ) -> None:
        if path == "/health":
            body = b'{"status":"ok"}'
        elif path == "/ready":
            if not self.pipeline.ready:
                raise GatewayError(503, "not ready: upstream pools are not created yet")
            body = b'{"status":"ready"}'
        elif path == "/v1/models" or path == "/models":
            if self.auth is None:
                body = self._models_body
            else:
                body = self._render_models(self.auth.identify(scope.headers).allows)
        elif path == "/metrics":
            content_type, body = self.metrics()
            proto.response_bytes(200, [("content-type", content_type)], body)
            return
        elif path.startswith("/v1/models/"):
            name = path[len("/v1/models/") :]
            model = self.config.models.get(name)
            if model is None or (
                self.auth is not None and not self.auth.identify(scope.headers).allows(name)
            ):
                raise GatewayError(
                    404,
                    f"The model `{shown(name)}` does not exist.",
                    param="model",
                    code="model_not_found",
                )
            body = _encoder.encode(self._model_entry(name, model.provider))
        else:
            raise GatewayError(404, f"Unknown request URL: GET {shown(path)}", code="unknown_url")
        proto.response_bytes(200, json_headers(request_id, _since_ms(started)), body)

    async def _key_info(
        self, scope: Scope, proto: HTTPProtocol, request_id: str, started: float
    ) -> None:
        """The caller's own key: its policy, and what its limits and budgets stand at."""
        if self.auth is None:
            raise GatewayError(404, "key info needs auth.mode: keys", code="unknown_url")
        entry = self.auth.identify(scope.headers)
        limiter = self.pipeline.limiter
        extra = await limiter.usage(entry.id, entry) if limiter is not None else None
        body = _encoder.encode(key_info(entry, list(self.config.models), extra))
        proto.response_bytes(200, json_headers(request_id, _since_ms(started)), body)

    def _model_entry(self, name: str, provider: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": provider}

    def _render_models(self, allows: Callable[[str], bool] | None = None) -> bytes:
        data = [
            self._model_entry(n, m.provider)
            for n, m in self.config.models.items()
            if allows is None or allows(n)
        ]
        return _encoder.encode({"object": "list", "data": data})

    # -- inference -------------------------------------------------------------------------

    async def _read_body(self, scope: Scope, proto: HTTPProtocol, task: asyncio.Task[Any]) -> bytes:
        content_type = scope.headers.get("content-type")
        if content_type and not content_type.lower().startswith(JSON):
            raise GatewayError(
                415, f"unsupported content type `{shown(content_type)}`; send {JSON}"
            )
        length = scope.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise GatewayError(413, f"request body is larger than {self.max_body} bytes")
        watch = self.watch
        watch.reading(task)
        try:
            # A body without a length (chunked) is counted as it arrives.
            body = await (proto() if length is not None else self._read_chunked(proto))
        except asyncio.CancelledError:
            if watch.read_done(task):
                task.uncancel()
                raise GatewayError(
                    408,
                    f"the request body did not arrive within {watch.body_timeout_s:g} s",
                    code="request_timeout",
                ) from None
            raise
        except (ProtocolClosed, ProtocolError) as exc:
            raise self._broken_body(exc) from None
        finally:
            watch.read_done(task)
        if len(body) > self.max_body:
            raise GatewayError(413, f"request body is larger than {self.max_body} bytes")
        if not body:
            raise GatewayError(400, "the request body is empty; send a JSON object")
        return body

    async def _read_chunked(self, proto: HTTPProtocol) -> bytes:
        parts = []
        size = 0
        limit = self.max_body
        async for chunk in proto:
            size += len(chunk)
            if size > limit:
                raise GatewayError(413, f"request body is larger than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def _broken_body(self, exc: Exception) -> Exception:
        """The error for a body that broke off: a malformed one gets 400; a client that left
        gets nothing (one log line at most every few seconds)."""
        text = str(exc)
        if "chunk" in text.lower() or "invalid" in text.lower():
            return GatewayError(400, "the request body is malformed (bad chunked encoding)")
        now = time.monotonic()
        if now - self._broken_logged_at >= _BROKEN_BODY_LOG_S:
            self._broken_logged_at = now
            log.info("a client left before its request body arrived whole (%s)", text[:200])
        return ClientGone()

    def _refused(
        self, endpoint: Endpoint, request_id: str, exc: GatewayError, model: str = ""
    ) -> None:
        """Record and count a request refused before it reached the pipeline."""
        call = Call(request_id, "http", endpoint, b"", model)
        self.pipeline.ended(call, Outcome(exc.status, exc.type, exc.message))

    async def _inference(
        self,
        scope: Scope,
        proto: HTTPProtocol,
        endpoint: Endpoint,
        request_id: str,
        started: float,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            body = await self._read_body(scope, proto, task)
            call = decode_call(
                endpoint, body, door="http", request_id=request_id, headers=scope.headers
            )
        except GatewayError as exc:
            self._refused(endpoint, request_id, exc)
            raise
        watch = self.watch
        watch.running(task, proto, call)
        try:
            if call.stream:
                await self._stream(call, proto, task)
                return
            reply = await self.pipeline.complete(call)
            headers = json_headers(request_id, call.overhead_ms())
            if call.cache_status != "off":
                headers += _cache_headers(call)
            if reply.headers:
                headers += reply.headers
            proto.response_bytes(reply.status, headers, reply.body)
        except GatewayError as exc:
            _error_response(proto, exc, request_id, call.overhead_ms())
        except asyncio.CancelledError:
            if watch.cut_by_shutdown(task):
                task.uncancel()
                if not call.stream:
                    _error_response(proto, shutting_down(), request_id, call.overhead_ms())
                return
            if not watch.client_left(task):
                raise
            # The client left: the pipeline recorded the call as 499 and closed the upstream.
            task.uncancel()
        finally:
            watch.done(task)

    async def _stream(self, call: Call, proto: HTTPProtocol, task: asyncio.Task[Any]) -> None:
        # The client leaving cancels this task (see RequestWatch), which closes the upstream.
        stream: PipelineStream | None = None
        transport: Any = None
        try:
            stream = await self.pipeline.stream(call)
            events = stream.__aiter__()
            # The response starts with the first event, not before: an upstream that fails
            # before it gets its HTTP error status.
            first = await first_event(events, call.request_id)
            headers = [
                *_SSE_HEADERS,
                ("x-request-id", call.request_id),
                ("x-llm-proxy-overhead-ms", f"{call.overhead_ms():.3f}"),
                *stream.headers,
            ]
            if call.cache_status != "off":
                headers += _cache_headers(call)
            transport = proto.response_stream(200, headers)
            await self._pump(events, first, transport, call.request_id)
        except asyncio.CancelledError:

            async def answer_shutdown() -> None:
                if transport is None:
                    _error_response(proto, shutting_down(), call.request_id, call.overhead_ms())
                else:
                    with contextlib.suppress(ProtocolClosed, ProtocolError):
                        await transport.send_bytes(shutting_down().sse_event())

            if not await stream_cancelled(self.watch, task, stream, answer_shutdown):
                raise

    async def _pump(
        self,
        events: AsyncGenerator[bytes, None],
        first: bytes | None,
        transport: Any,
        request_id: str,
    ) -> None:
        async with contextlib.aclosing(events):
            try:
                if first is None:
                    return
                await transport.send_bytes(first)
                async for event in events:
                    await transport.send_bytes(event)
            except GatewayError as exc:
                with contextlib.suppress(ProtocolClosed, ProtocolError):
                    await transport.send_bytes(exc.sse_event())
            except (ProtocolClosed, ProtocolError):
                pass  # the client left; closing `events` closes the upstream
            except Exception:
                with contextlib.suppress(ProtocolClosed, ProtocolError):
                    await transport.send_bytes(stream_failed(request_id).sse_event())
