"""The built-in mock provider: answers in-process, deterministically, with no network."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import msgspec

from .. import _core, mocktext
from ..calls import Call, Deployment, Reply, SimpleSummary, StreamSummary, Usage
from ..config import MockProvider
from ..errors import GatewayError


class _MockHead(msgspec.Struct):
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = None


_head_decoder = msgspec.json.Decoder(_MockHead)
_encoder = msgspec.json.Encoder()


def _event(obj: object) -> bytes:
    return b"data: " + _encoder.encode(obj) + b"\n\n"


class MockStream:
    """The mock's answer as OpenAI chunks, paced by the configured chunk delay."""

    def __init__(self, call: Call, deployment: Deployment, provider: Mock) -> None:
        self._call = call
        self._deployment = deployment
        self._provider = provider
        self._summary: StreamSummary | None = None
        self.headers: list[tuple[str, str]] = []

    async def __aiter__(self) -> AsyncIterator[bytes]:
        call, config = self._call, self._provider.config
        text, usage = self._provider.answer(call, self._deployment)
        base = {
            "id": "chatcmpl-mock-" + call.request_id,
            "object": "chat.completion.chunk" if call.endpoint == "chat" else "text_completion",
            "created": int(time.time()),
            "model": self._deployment.model,
        }
        chat = call.endpoint == "chat"
        if chat:
            yield _event({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]})
        for piece in mocktext.split_chunks(text, config.chunks):
            if config.chunk_delay_ms:
                started = time.perf_counter()
                await asyncio.sleep(config.chunk_delay_ms / 1000.0)
                call.upstream_s += time.perf_counter() - started  # the model's time, not ours
            choice = (
                {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                if chat
                else {"index": 0, "text": piece, "finish_reason": None}
            )
            yield _event({**base, "choices": [choice]})
        last = (
            {"index": 0, "delta": {}, "finish_reason": "stop"}
            if chat
            else {
                "index": 0,
                "text": "",
                "finish_reason": "stop",
            }
        )
        yield _event({**base, "choices": [last]})
        if call.include_usage:
            yield _event({**base, "choices": [], "usage": _usage_json(usage)})
        yield b"data: [DONE]\n\n"
        self._summary = SimpleSummary(
            text=text,
            finish_reason="stop",
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            done=True,
        )

    def summary(self) -> StreamSummary | None:
        return self._summary

    async def aclose(self) -> None:
        return None


class Mock:
    """Deterministic answers: the same request gives the same text; usage is counted exactly."""

    def __init__(self, name: str, config: MockProvider) -> None:
        self.name = name
        self.config = config

    async def start(self) -> None:
        # The reply table is built now, so the first call does not pay for it.
        mocktext.warm()

    async def close(self) -> None:
        return None

    def answer(self, call: Call, deployment: Deployment) -> tuple[str, Usage]:
        try:
            head = _head_decoder.decode(call.body)
        except msgspec.DecodeError as exc:
            raise GatewayError(400, f"invalid request: {exc}") from None
        limit = head.max_completion_tokens or head.max_tokens
        text = mocktext.reply_text(call.prompt_json + deployment.model.encode(), limit)
        encoding = _core.encoding_for_model(deployment.model)
        if call.endpoint == "chat":
            prompt_tokens = _core.count_chat_tokens(call.prompt_json, deployment.model)
        else:
            prompt_tokens = _core.count_tokens(call.prompt_json.decode(), encoding)
        completion_tokens = _core.count_tokens(text, encoding)
        return text, Usage(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)

    async def _pause(self, call: Call) -> None:
        if self.config.latency_ms:
            started = time.perf_counter()
            await asyncio.sleep(self.config.latency_ms / 1000.0)
            call.upstream_s += time.perf_counter() - started

    async def complete(self, call: Call, deployment: Deployment) -> Reply:
        await self._pause(call)
        if call.endpoint == "embeddings":
            return self._embeddings(call, deployment)
        text, usage = self.answer(call, deployment)
        created = int(time.time())
        if call.endpoint == "chat":
            body = {
                "id": "chatcmpl-mock-" + call.request_id,
                "object": "chat.completion",
                "created": created,
                "model": deployment.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": _usage_json(usage),
            }
        else:
            body = {
                "id": "cmpl-mock-" + call.request_id,
                "object": "text_completion",
                "created": created,
                "model": deployment.model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
                "usage": _usage_json(usage),
            }
        return Reply(_encoder.encode(body), usage=usage)

    def _embeddings(self, call: Call, deployment: Deployment) -> Reply:
        inputs = msgspec.json.decode(call.prompt_json)
        if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        encoding = _core.encoding_for_model(deployment.model)
        data, tokens = [], 0
        for i, item in enumerate(inputs):
            raw = item if isinstance(item, str) else _encoder.encode(item).decode()
            tokens += _core.count_tokens(raw, encoding) if isinstance(item, str) else len(item)
            vector = mocktext.embedding(raw.encode() + deployment.model.encode())
            data.append({"object": "embedding", "index": i, "embedding": vector})
        usage = Usage(prompt_tokens=tokens, completion_tokens=0, total_tokens=tokens)
        body = {
            "object": "list",
            "data": data,
            "model": deployment.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Reply(_encoder.encode(body), usage=usage)

    async def stream(self, call: Call, deployment: Deployment) -> MockStream:
        if call.endpoint == "embeddings":
            raise GatewayError(400, "embeddings cannot be streamed", param="stream")
        await self._pause(call)
        return MockStream(call, deployment, self)


def _usage_json(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
