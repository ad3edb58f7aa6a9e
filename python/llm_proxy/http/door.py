"""The OpenAI-compatible HTTP front door: RSGI requests in, pipeline calls, responses out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any

import msgspec
from granian._granian import RSGIHTTPProtocol as HTTPProtocol
from granian._granian import RSGIProtocolClosed as ProtocolClosed
from granian._granian import RSGIProtocolError as ProtocolError
from granian.rsgi import Scope

from ..calls import Call, Endpoint, decode_call, new_request_id
from ..config import Config
from ..errors import GatewayError
from ..keys.stage import Authenticate, key_info
from ..pipeline import Pipeline, PipelineStream

log = logging.getLogger("llm_proxy.http")
_encoder = msgspec.json.Encoder()

JSON = "application/json"
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

# How long a stream runs before the gateway watches for its client leaving.
_WATCH_AFTER_S = 0.1

Handler = Callable[[Scope, HTTPProtocol, str], Coroutine[Any, Any, None]]


def _error_response(proto: HTTPProtocol, exc: GatewayError, request_id: str) -> None:
    headers = [("content-type", JSON), ("x-request-id", request_id), *exc.headers]
    proto.response_bytes(exc.status, headers, exc.body())


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
        self._models_body = self._render_models()

    # -- dispatch --------------------------------------------------------------------------

    async def __call__(self, scope: Scope, proto: HTTPProtocol) -> None:
        if scope.proto != "http":
            return
        request_id = scope.headers.get("x-request-id") or new_request_id()
        path, method = scope.path, scope.method
        try:
            endpoint = _POST_ROUTES.get(path)
            if endpoint is not None:
                if method != "POST":
                    raise GatewayError(
                        405,
                        f"method {method} not allowed on {path}; use POST",
                        headers=[("allow", "POST")],
                    )
                await self._inference(scope, proto, endpoint, request_id)
            elif method == "GET" or method == "HEAD":
                self._get(scope, proto, path, request_id)
            elif path in ("/v1/models", "/health", "/ready") or path.startswith("/v1/models/"):
                raise GatewayError(
                    405,
                    f"method {method} not allowed on {path}; use GET",
                    headers=[("allow", "GET")],
                )
            else:
                raise GatewayError(404, f"Unknown request URL: {method} {path}", code="unknown_url")
        except GatewayError as exc:
            _error_response(proto, exc, request_id)
        except Exception:
            log.exception("unhandled error in request %s", request_id)
            _error_response(
                proto, GatewayError(500, "internal gateway error", type="api_error"), request_id
            )

    def _get(self, scope: Scope, proto: HTTPProtocol, path: str, request_id: str) -> None:
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
        elif path == "/v1/key/info" or path == "/key/info":
            if self.auth is None:
                raise GatewayError(404, "key info needs auth.mode: keys", code="unknown_url")
            entry = self.auth.identify(scope.headers)
            body = _encoder.encode(key_info(entry, list(self.config.models)))
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
                    f"The model `{name}` does not exist.",
                    param="model",
                    code="model_not_found",
                )
            body = _encoder.encode(self._model_entry(name, model.provider))
        else:
            raise GatewayError(404, f"Unknown request URL: GET {path}", code="unknown_url")
        proto.response_bytes(200, [("content-type", JSON), ("x-request-id", request_id)], body)

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

    async def _read_body(self, scope: Scope, proto: HTTPProtocol) -> bytes:
        content_type = scope.headers.get("content-type")
        if content_type and not content_type.lower().startswith(JSON):
            raise GatewayError(415, f"unsupported content type `{content_type}`; send {JSON}")
        length = scope.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise GatewayError(413, f"request body is larger than {self.max_body} bytes")
        body = await proto()
        if len(body) > self.max_body:
            raise GatewayError(413, f"request body is larger than {self.max_body} bytes")
        if not body:
            raise GatewayError(400, "the request body is empty; send a JSON object")
        return body

    async def _inference(
        self, scope: Scope, proto: HTTPProtocol, endpoint: Endpoint, request_id: str
    ) -> None:
        body = await self._read_body(scope, proto)
        call = decode_call(
            endpoint, body, door="http", request_id=request_id, headers=scope.headers
        )
        if call.stream:
            await self._stream(call, proto)
            return
        reply = await self.pipeline.complete(call)
        headers = [
            ("content-type", JSON),
            ("x-request-id", request_id),
            ("x-llm-proxy-overhead-ms", f"{call.overhead_ms():.3f}"),
        ]
        if call.cache_status != "off":
            headers += _cache_headers(call)
        if reply.headers:
            headers += reply.headers
        proto.response_bytes(reply.status, headers, reply.body)

    async def _stream(self, call: Call, proto: HTTPProtocol) -> None:
        # The client leaving cancels this task, which closes the upstream. The watch on the
        # client's connection starts once the stream has run _WATCH_AFTER_S (a slow upstream,
        # a long wait for the first token): starting it is a hand-over to the server's I/O
        # thread, which most short streams never need (a client that left is also noticed at
        # the next write).
        task = asyncio.current_task()
        assert task is not None
        gone: asyncio.Future[Any] | None = None
        left = watching = False

        def client_left(_: object) -> None:
            nonlocal left
            if watching and gone is not None and not gone.cancelled():
                left = True
                task.cancel()

        def watch() -> None:
            nonlocal gone
            if watching:
                gone = asyncio.ensure_future(proto.client_disconnect())
                gone.add_done_callback(client_left)

        watching = True
        timer = asyncio.get_running_loop().call_later(_WATCH_AFTER_S, watch)
        stream: PipelineStream | None = None
        try:
            stream = await self.pipeline.stream(call)
            events = stream.__aiter__()
            # The response starts with the first event, not before: an upstream that fails
            # before it gets its HTTP error status.
            first = await _first_event(events, call.request_id)
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
            if not left:
                raise
            # The call is logged as the client's (499); nobody is left to read an answer. A
            # started `events` has already ended (the cancellation ran through it, or _pump
            # closed it); `stream.aclose` records a stream that never started.
            task.uncancel()
            if stream is not None:
                await stream.aclose()
        finally:
            watching = False
            timer.cancel()
            if gone is not None:
                gone.remove_done_callback(client_left)
                gone.cancel()

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
                    await transport.send_bytes(_stream_failed(request_id).sse_event())


async def _first_event(events: AsyncGenerator[bytes, None], request_id: str) -> bytes | None:
    """The stream's first event (None if it has none); its failure is the response's error."""
    try:
        return await anext(events)
    except StopAsyncIteration:
        return None
    except GatewayError:
        raise
    except Exception:
        raise _stream_failed(request_id) from None


def _stream_failed(request_id: str) -> GatewayError:
    """A stream broken by a bug: logged with its traceback (call inside the `except`), answered
    as a 502 (an HTTP error before the first event, an SSE error event after it)."""
    log.exception("stream %s failed", request_id)
    return GatewayError(502, "stream failed")
