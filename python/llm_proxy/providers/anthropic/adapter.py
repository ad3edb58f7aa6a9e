"""Anthropic Messages API: chat completions translated to Messages and back, whole and streamed."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ...calls import Call, Deployment, PromptTokensDetails, Reply, Usage
from ...config import AnthropicProvider
from ...errors import GatewayError
from ...upstream import UpstreamClient, UpstreamResponse, UpstreamStream, passed_headers
from ...wire.anthropic import message_head_decoder
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


def _native_error(resp: UpstreamResponse, provider: str) -> GatewayError:
    """An Anthropic error for a client that speaks Anthropic's API: status and type kept."""
    try:
        error = msgspec.json.decode(resp.body).get("error") or {}
        kind, message = error.get("type"), error.get("message")
    except (msgspec.DecodeError, AttributeError):
        kind, message = None, None
    if not isinstance(message, str) or not message:
        message = f"upstream {provider} answered {resp.status}"
    kind = kind if isinstance(kind, str) else None
    return GatewayError(resp.status, message, type=kind, headers=passed_headers(resp.headers))


class Anthropic:
    """Chat completions served by Anthropic's Messages API; Messages calls passed through."""

    def __init__(self, name: str, config: AnthropicProvider) -> None:
        self.name = name
        self.config = config
        self.client = UpstreamClient(
            max_connections=config.max_connections,
            connect_timeout_s=config.connect_timeout_s,
            max_response_bytes=config.max_response_bytes,
        )
        self.url = config.base_url.rstrip("/") + "/v1/messages"
        self.count_url = self.url + "/count_tokens"
        self._header_sets: dict[tuple[str, str], dict[str, str]] = {}
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

    def _native_body(self, call: Call, deployment: Deployment) -> bytes:
        """The client's Messages body as it came, but for the deployment's model name."""
        if deployment.model == call.model:
            return call.client_body
        data = _decoder.decode(call.client_body)
        data["model"] = deployment.model
        return _encoder.encode(data)

    def _native_headers(self, call: Call) -> dict[str, str]:
        """The provider's headers, with the client's `anthropic-beta` and `-version`.

        One dict per combination, kept: the upstream client pre-encodes a request head per
        header dict, so a new dict per request would cost a new head each time.
        """
        beta = call.headers.get("anthropic-beta")
        version = call.headers.get("anthropic-version")
        if not beta and not version:
            return self.headers
        key = (str(beta) if beta else "", str(version) if version else "")
        headers = self._header_sets.get(key)
        if headers is None:
            if len(self._header_sets) >= 64:
                self._header_sets.clear()
            headers = dict(self.headers)
            if beta:
                headers["anthropic-beta"] = key[0]
            if version:
                headers["anthropic-version"] = key[1]
            self._header_sets[key] = headers
        return headers

    async def _native(self, call: Call, deployment: Deployment, url: str) -> UpstreamResponse:
        timeout = upstream_timeout(call, self.config.timeout_s)
        started = time.perf_counter()
        try:
            resp = await self.client.post(
                url,
                self._native_headers(call),
                self._native_body(call, deployment),
                timeout,
                call.trace_headers,
            )
        finally:
            call.upstream_s += time.perf_counter() - started
        if resp.status != 200:
            raise _native_error(resp, self.name)
        return resp

    async def count_tokens(self, call: Call, deployment: Deployment) -> bytes:
        """`/v1/messages/count_tokens` of the client's body, answered by the upstream."""
        return (await self._native(call, deployment, self.count_url)).body

    async def _complete_native(self, call: Call, deployment: Deployment) -> Reply:
        resp = await self._native(call, deployment, self.url)
        try:
            head = message_head_decoder.decode(resp.body)
        except msgspec.DecodeError:
            raise GatewayError(502, f"upstream {self.name} answered with invalid JSON") from None
        usage = None
        if head.usage is not None:
            u = head.usage
            cached = u.cache_read_input_tokens or 0
            prompt = u.input_tokens + cached + (u.cache_creation_input_tokens or 0)
            details = PromptTokensDetails(cached) if cached else None
            usage = Usage(prompt, u.output_tokens, prompt + u.output_tokens, details)
        return Reply(resp.body, 200, passed_headers(resp.headers), usage)

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
        if call.wire == "anthropic":
            return await self._complete_native(call, deployment)
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

    async def stream(self, call: Call, deployment: Deployment) -> RelayedStream:
        native = call.wire == "anthropic"
        if native:
            headers, body = self._native_headers(call), self._native_body(call, deployment)
        else:
            headers, body = self.headers, self._request(call, deployment)
        timeout = upstream_timeout(call, self.config.timeout_s)
        started = time.perf_counter()
        try:
            upstream = await self.client.post_stream(
                self.url, headers, body, timeout, call.trace_headers
            )
        finally:
            call.upstream_s += time.perf_counter() - started
        if upstream.status != 200:
            data = await upstream.read()
            upstream.release()
            failed = UpstreamResponse(upstream.status, upstream.headers, data)
            raise (
                _native_error(failed, self.name) if native else _translated_error(failed, self.name)
            )
        if native:
            # The client speaks Anthropic's API: its events go out as the upstream sent them.
            return RelayedStream(upstream, call, "anthropic", deployment.model)
        return TranslatedStream(upstream, call, deployment)
