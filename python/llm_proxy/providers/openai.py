"""OpenAI-compatible upstreams (OpenAI, vLLM, Ollama, Groq, Together, ...) and Azure OpenAI."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import msgspec

from .. import _core
from ..calls import Call, Deployment, Reply, ResponseHead, StreamSummary
from ..config import AzureProvider, OpenAIProvider
from ..errors import GatewayError
from .base import upstream_error
from .transport import UpstreamClient, UpstreamResponse, UpstreamStream, passed_headers

_PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings"}
_head_decoder = msgspec.json.Decoder(ResponseHead)
_dict_decoder = msgspec.json.Decoder(dict[str, object])
_encoder = msgspec.json.Encoder()


def with_model(body: bytes, model: str) -> bytes:
    """The client's body with `model` replaced (only when an alias maps to another name)."""
    data = _dict_decoder.decode(body)
    data["model"] = model
    return _encoder.encode(data)


class RelayedStream:
    """An upstream's OpenAI SSE stream, forwarded event by event through the Rust relay."""

    def __init__(self, upstream: UpstreamStream, call: Call, model: str) -> None:
        self._upstream = upstream
        self._call = call
        self._relay = _core.SseRelay("openai", model=model)
        self._summary: StreamSummary | None = None
        self.headers = passed_headers(upstream.headers)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        call = self._call
        relay = self._relay
        waited = time.perf_counter()
        try:
            async for chunk in self._upstream.chunks():
                call.upstream_s += time.perf_counter() - waited
                try:
                    events = relay.feed(chunk)
                except _core.SseError as exc:
                    raise GatewayError(502, f"upstream sent a bad stream: {exc}") from None
                if relay.error is not None:
                    raise GatewayError(502, f"upstream sent a bad stream: {relay.error}")
                for event in events:
                    yield event
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


class OpenAICompatible:
    """An upstream that speaks OpenAI's wire format: the client's bytes go through as they are."""

    def __init__(self, name: str, config: OpenAIProvider | AzureProvider) -> None:
        self.name = name
        self.config = config
        self.client = UpstreamClient(
            max_connections=config.max_connections, connect_timeout_s=config.connect_timeout_s
        )
        self.base_url = config.base_url.rstrip("/")
        headers = {"content-type": "application/json", "accept": "application/json"}
        headers.update(self._auth_headers())
        headers.update({k.lower(): v for k, v in config.headers.items()})
        self.headers = headers
        self.stream_headers = {**headers, "accept": "text/event-stream"}

    def _auth_headers(self) -> dict[str, str]:
        assert isinstance(self.config, OpenAIProvider)
        out = {}
        if self.config.api_key:
            out["authorization"] = f"Bearer {self.config.api_key}"
        if self.config.organization:
            out["openai-organization"] = self.config.organization
        return out

    def url(self, call: Call, deployment: Deployment) -> str:
        return self.base_url + _PATHS[call.endpoint]

    def body(self, call: Call, deployment: Deployment) -> bytes:
        if deployment.model == call.model:
            return call.body
        return with_model(call.body, deployment.model)

    async def start(self) -> None:
        await self.client.start()

    async def close(self) -> None:
        await self.client.close()

    def _timeout(self, call: Call) -> float:
        timeout = call.remaining_s(self.config.timeout_s)
        if timeout <= 0:
            raise GatewayError(504, "deadline exceeded before the upstream was called")
        return timeout

    async def complete(self, call: Call, deployment: Deployment) -> Reply:
        timeout = self._timeout(call)
        started = time.perf_counter()
        try:
            resp = await self.client.post(
                self.url(call, deployment), self.headers, self.body(call, deployment), timeout
            )
        finally:
            call.upstream_s += time.perf_counter() - started
        if resp.status != 200:
            raise upstream_error(resp, self.name)
        try:
            head = _head_decoder.decode(resp.body)
        except msgspec.DecodeError:
            raise GatewayError(502, f"upstream {self.name} answered with invalid JSON") from None
        return Reply(resp.body, 200, passed_headers(resp.headers), head.usage)

    async def stream(self, call: Call, deployment: Deployment) -> RelayedStream:
        timeout = self._timeout(call)
        started = time.perf_counter()
        try:
            upstream = await self.client.post_stream(
                self.url(call, deployment),
                self.stream_headers,
                self.body(call, deployment),
                timeout,
            )
        finally:
            call.upstream_s += time.perf_counter() - started
        if upstream.status != 200:
            body = await upstream.read()
            upstream.release()
            raise upstream_error(
                UpstreamResponse(upstream.status, upstream.headers, body), self.name
            )
        return RelayedStream(upstream, call, deployment.model)


class Azure(OpenAICompatible):
    """Azure OpenAI: deployment in the URL, `api-version` query, `api-key` header."""

    def _auth_headers(self) -> dict[str, str]:
        assert isinstance(self.config, AzureProvider)
        return {"api-key": self.config.api_key} if self.config.api_key else {}

    def url(self, call: Call, deployment: Deployment) -> str:
        assert isinstance(self.config, AzureProvider)
        return (
            f"{self.base_url}/openai/deployments/{deployment.model}{_PATHS[call.endpoint]}"
            f"?api-version={self.config.api_version}"
        )

    def body(self, call: Call, deployment: Deployment) -> bytes:
        return call.body
