"""Anthropic Messages API: chat completions translated to Messages and back, whole and streamed."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ...calls import Call, Deployment, PromptTokensDetails, Reply, Usage
from ...config import AnthropicProvider
from ...errors import GatewayError
from ...upstream import UpstreamClient, UpstreamResponse, UpstreamStream, passed_headers
from ...wire.sse import event_data
from ..base import upstream_timeout
from ..relay import RelayedStream
from .errors import error_to_openai
from .request import TranslationError, chat_to_messages
from .response import messages_to_chat
from .stream import StreamTranslator, UpstreamStreamError

_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()


def _translated_error(resp: UpstreamResponse, provider: str) -> GatewayError:
    status, body = error_to_openai(resp.status, resp.body)
    error = msgspec.json.decode(body).get("error", {})
    message = error.get("message") or f"upstream {provider} answered {resp.status}"
    headers = passed_headers(resp.headers)
    if status >= 500:
        return GatewayError(
            502,
            f"upstream {provider} answered {resp.status}: {message}",
            code=f"upstream_{resp.status}",
            headers=headers,
        )
    return GatewayError(
        status, message, type=error.get("type"), code=error.get("code"), headers=headers, body=body
    )


class TranslatedStream(RelayedStream):
    """Anthropic stream events, parsed by the Rust relay and re-shaped into OpenAI chunks."""

    def __init__(self, upstream: UpstreamStream, call: Call, deployment: Deployment) -> None:
        super().__init__(upstream, call, "anthropic", deployment.model)
        self._translator = StreamTranslator(call.model, int(time.time()), call.include_usage)

    def translate(self, event: bytes) -> list[bytes]:
        data = event_data(event)
        if data is None:
            return []
        try:
            return self._translator.event(data)
        except UpstreamStreamError as exc:
            raise GatewayError(502, f"upstream stream error: {exc}") from None
        except (msgspec.DecodeError, ValueError):
            raise GatewayError(502, "upstream sent a bad stream event") from None


class Anthropic:
    """Chat completions served by Anthropic's Messages API."""

    def __init__(self, name: str, config: AnthropicProvider) -> None:
        self.name = name
        self.config = config
        self.client = UpstreamClient(
            max_connections=config.max_connections,
            connect_timeout_s=config.connect_timeout_s,
            max_response_bytes=config.max_response_bytes,
        )
        self.url = config.base_url.rstrip("/") + "/v1/messages"
        headers = {
            "content-type": "application/json",
            "anthropic-version": config.anthropic_version,
        }
        if config.api_key:
            headers["x-api-key"] = config.api_key
        headers.update({k.lower(): v for k, v in config.headers.items()})
        self.headers = headers

    async def start(self) -> None:
        await self.client.start()

    async def close(self) -> None:
        await self.client.close()

    def _request(self, call: Call, deployment: Deployment) -> bytes:
        if call.endpoint != "chat":
            raise GatewayError(
                400, f"the anthropic provider serves chat completions only, not {call.endpoint}"
            )
        try:
            body = chat_to_messages(
                _decoder.decode(call.body), deployment.model, self.config.max_tokens
            )
        except TranslationError as exc:
            raise GatewayError(400, str(exc), param=exc.param) from None
        return _encoder.encode(body)

    async def complete(self, call: Call, deployment: Deployment) -> Reply:
        body = self._request(call, deployment)
        timeout = upstream_timeout(call, self.config.timeout_s)
        started = time.perf_counter()
        try:
            resp = await self.client.post(self.url, self.headers, body, timeout, call.trace_headers)
        finally:
            call.upstream_s += time.perf_counter() - started
        if resp.status != 200:
            raise _translated_error(resp, self.name)
        try:
            answer = _decoder.decode(resp.body)
            chat = messages_to_chat(answer, call.model, int(time.time()))
        except (msgspec.DecodeError, ValueError, KeyError, TypeError):
            raise GatewayError(502, f"upstream {self.name} answered with invalid JSON") from None
        usage = chat.get("usage") or {}
        return Reply(
            _encoder.encode(chat),
            200,
            passed_headers(resp.headers),
            Usage(
                usage.get("prompt_tokens", 0),
                usage.get("completion_tokens", 0),
                usage.get("total_tokens", 0),
                PromptTokensDetails(details.get("cached_tokens", 0))
                if (details := usage.get("prompt_tokens_details"))
                else None,
            ),
        )

    async def stream(self, call: Call, deployment: Deployment) -> TranslatedStream:
        body = self._request(call, deployment)
        timeout = upstream_timeout(call, self.config.timeout_s)
        started = time.perf_counter()
        try:
            upstream = await self.client.post_stream(
                self.url, self.headers, body, timeout, call.trace_headers
            )
        finally:
            call.upstream_s += time.perf_counter() - started
        if upstream.status != 200:
            data = await upstream.read()
            upstream.release()
            raise _translated_error(
                UpstreamResponse(upstream.status, upstream.headers, data), self.name
            )
        return TranslatedStream(upstream, call, deployment)
