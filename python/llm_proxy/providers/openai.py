"""OpenAI-compatible upstreams (OpenAI, vLLM, Ollama, Groq, Together, ...) and Azure OpenAI."""

from __future__ import annotations

import time

import msgspec

from ..calls import Call, Deployment, Reply, ResponseHead
from ..config import AzureProvider, OpenAIProvider, speaks_responses
from ..errors import GatewayError
from ..upstream import UpstreamClient, UpstreamResponse, passed_headers
from .base import upstream_error, upstream_timeout
from .relay import RelayedStream
from .responses import ResponsesStream, response_head_decoder, responses_usage

_PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings"}
_head_decoder = msgspec.json.Decoder(ResponseHead)
_dict_decoder = msgspec.json.Decoder(dict[str, object])
_encoder = msgspec.json.Encoder()


def with_model(body: bytes, model: str) -> bytes:
    """The client's body with `model` replaced (only when an alias maps to another name)."""
    data = _dict_decoder.decode(body)
    data["model"] = model
    return _encoder.encode(data)


class OpenAICompatible:
    """An upstream that speaks OpenAI's wire format: the client's bytes go through as they are."""

    def __init__(self, name: str, config: OpenAIProvider | AzureProvider) -> None:
        self.name = name
        self.config = config
        self.client = UpstreamClient(
            max_connections=config.max_connections,
            connect_timeout_s=config.connect_timeout_s,
            max_response_bytes=config.max_response_bytes,
        )
        self.base_url = config.base_url.rstrip("/")
        headers = {"content-type": "application/json", "accept": "application/json"}
        headers.update(self._auth_headers())
        headers.update({k.lower(): v for k, v in config.headers.items()})
        self.headers = headers
        self.stream_headers = {**headers, "accept": "text/event-stream"}
        # Responses API calls are passed through when the upstream serves that API.
        self.responses_api = speaks_responses(config)
        self.responses_url = self._responses_url()

    def _responses_url(self) -> str:
        return self.base_url + "/responses"

    async def stored_response(
        self, call: Call, deployment: Deployment, method: str, response_id: str
    ) -> Reply:
        """GET or DELETE of a response the upstream keeps (`response_id` is URL-safe)."""
        timeout = upstream_timeout(call, self.config.timeout_s)
        started = time.perf_counter()
        try:
            resp = await self.client.post(
                f"{self.responses_url}/{response_id}",
                self.headers,
                b"",
                timeout,
                call.trace_headers,
                method=method,
            )
        finally:
            call.upstream_s += time.perf_counter() - started
        if resp.status != 200:
            raise upstream_error(resp, self.name)
        return Reply(resp.body, 200, passed_headers(resp.headers))

    def native(self, call: Call) -> bool:
        return call.wire == "responses" and self.responses_api

    def _auth_headers(self) -> dict[str, str]:
        assert isinstance(self.config, OpenAIProvider)
        out = {}
        if self.config.api_key:
            out["authorization"] = f"Bearer {self.config.api_key}"
        if self.config.organization:
            out["openai-organization"] = self.config.organization
        return out

    def url(self, call: Call, deployment: Deployment) -> str:
        if call.wire == "responses" and self.responses_api:
            return self.responses_url
        return self.base_url + _PATHS[call.endpoint]

    def body(self, call: Call, deployment: Deployment) -> bytes:
        # Inline rather than self.native(call): this runs on every call.
        body = call.client_body if call.wire == "responses" and self.responses_api else call.body
        if deployment.model == call.model:
            return body
        return with_model(body, deployment.model)

    async def start(self) -> None:
        await self.client.start()

    async def close(self) -> None:
        await self.client.close()

    async def complete(self, call: Call, deployment: Deployment) -> Reply:
        timeout = upstream_timeout(call, self.config.timeout_s)
        started = time.perf_counter()
        try:
            resp = await self.client.post(
                self.url(call, deployment),
                self.headers,
                self.body(call, deployment),
                timeout,
                call.trace_headers,
            )
        finally:
            call.upstream_s += time.perf_counter() - started
        if resp.status != 200:
            raise upstream_error(resp, self.name)
        if call.wire == "responses" and self.responses_api:
            try:
                response = response_head_decoder.decode(resp.body)
            except msgspec.DecodeError:
                raise GatewayError(
                    502, f"upstream {self.name} answered with invalid JSON"
                ) from None
            usage = responses_usage(response)
            return Reply(resp.body, 200, passed_headers(resp.headers), usage)
        try:
            head = _head_decoder.decode(resp.body)
        except msgspec.DecodeError:
            raise GatewayError(502, f"upstream {self.name} answered with invalid JSON") from None
        return Reply(resp.body, 200, passed_headers(resp.headers), head.usage)

    async def stream(self, call: Call, deployment: Deployment) -> RelayedStream | ResponsesStream:
        timeout = upstream_timeout(call, self.config.timeout_s)
        started = time.perf_counter()
        try:
            upstream = await self.client.post_stream(
                self.url(call, deployment),
                self.stream_headers,
                self.body(call, deployment),
                timeout,
                call.trace_headers,
            )
        finally:
            call.upstream_s += time.perf_counter() - started
        if upstream.status != 200:
            body = await upstream.read()
            upstream.release()
            raise upstream_error(
                UpstreamResponse(upstream.status, upstream.headers, body), self.name
            )
        if self.native(call):
            return ResponsesStream(upstream, call)
        return RelayedStream(upstream, call, "openai", deployment.model)


class Azure(OpenAICompatible):
    """Azure OpenAI: deployment in the URL, `api-version` query, `api-key` header."""

    def _responses_url(self) -> str:
        return f"{self.base_url}/openai/v1/responses"

    def _auth_headers(self) -> dict[str, str]:
        assert isinstance(self.config, AzureProvider)
        return {"api-key": self.config.api_key} if self.config.api_key else {}

    def url(self, call: Call, deployment: Deployment) -> str:
        assert isinstance(self.config, AzureProvider)
        if self.native(call):
            return self.responses_url
        return (
            f"{self.base_url}/openai/deployments/{deployment.model}{_PATHS[call.endpoint]}"
            f"?api-version={self.config.api_version}"
        )

    def body(self, call: Call, deployment: Deployment) -> bytes:
        if self.native(call):
            return with_model(call.client_body, deployment.model)
        return call.body
