"""OpenAI (and Azure OpenAI) wire format for the mock upstream."""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Iterator
from typing import Any

from .. import mocktext
from .wire import (
    JSON_HEADERS,
    Answer,
    Headers,
    Options,
    Reply,
    Stream,
    Whole,
    answer,
    approx_tokens,
    encode,
    int_or_none,
    seed_of,
    short_hash,
    text_of,
)

MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo-instruct", "text-embedding-3-small")

_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request (mock)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided (mock)."),
    403: ("permission_error", None, "You are not allowed to use this model (mock)."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist (mock)."),
    429: ("rate_limit_error", "rate_limit_exceeded", "Rate limit reached (mock). Retry in 1s."),
    500: ("server_error", None, "The server had an error processing your request (mock)."),
    503: ("server_error", "service_unavailable", "The engine is currently overloaded (mock)."),
}
RATE_LIMIT_HEADERS: Headers = [
    ("retry-after", "1"),
    ("x-ratelimit-limit-requests", "10000"),
    ("x-ratelimit-remaining-requests", "0"),
    ("x-ratelimit-reset-requests", "1s"),
    ("x-ratelimit-limit-tokens", "2000000"),
    ("x-ratelimit-remaining-tokens", "0"),
    ("x-ratelimit-reset-tokens", "1s"),
]
_FINISH = {"stop": "stop", "stop_sequence": "stop", "length": "length", "tool": "tool_calls"}


def error(status: int, message: str | None = None, param: str | None = None) -> Whole:
    """An OpenAI error object; 429 carries retry-after and x-ratelimit-* headers."""
    kind, code, default = _ERRORS.get(
        status,
        ("invalid_request_error" if status < 500 else "server_error", None, f"Mock {status}."),
    )
    body = {"error": {"message": message or default, "type": kind, "param": param, "code": code}}
    headers = JSON_HEADERS + (RATE_LIMIT_HEADERS if status == 429 else [])
    return Whole(status, encode(body), headers)


def azure_error(status: int, message: str) -> Whole:
    return Whole(status, encode({"error": {"code": str(status), "message": message}}))


def _tool_for(body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    tools, messages = body.get("tools"), body.get("messages")
    if not tools or not isinstance(tools, list) or body.get("tool_choice") == "none":
        return None
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return None
    last = messages[-1]
    if last.get("role") != "user" or "weather" not in text_of(last.get("content")).lower():
        return None
    fn = tools[0].get("function", {}) if isinstance(tools[0], dict) else {}
    return str(fn.get("name", "get_weather")), fn.get("parameters") or {}


# The common whole answer, formatted rather than built as a dict: it is the benchmark path.
_CHAT_WHOLE = (
    b'{"id":"%s","object":"chat.completion","created":%d,"model":%s,'
    b'"system_fingerprint":"fp_mock","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":%s,"refusal":null},"logprobs":null,"finish_reason":"%s"}],'
    b'"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}'
)


def _words(text: str) -> int:
    return text.count(" ") + 1 if text else 0


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def chat(body: dict[str, Any], model: str, opts: Options) -> Reply:
    """POST /v1/chat/completions, whole or streamed."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return error(400, "'messages' must be a non-empty array.", "messages")
    limit = int_or_none(body.get("max_completion_tokens")) or int_or_none(body.get("max_tokens"))
    seed = seed_of(messages, model, limit, body.get("temperature"))
    last = messages[-1] if isinstance(messages[-1], dict) else {}
    reply = answer(seed, limit, body.get("stop"), _tool_for(body), text_of(last.get("content")))
    prompt = approx_tokens(messages)
    completion = approx_tokens(reply.tool.arguments) if reply.tool else _words(reply.text)
    usage = _usage(prompt, completion)
    chat_id, created = "chatcmpl-mock-" + short_hash(seed), int(time.time())
    stream = body.get("stream")
    if not stream and not reply.tool:
        return Whole(
            200,
            _CHAT_WHOLE
            % (
                chat_id.encode(),
                created,
                encode(model),
                encode(reply.text),
                _FINISH[reply.finish].encode(),
                prompt,
                completion,
                prompt + completion,
            ),
        )
    base: dict[str, Any] = {
        "id": chat_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_mock",
    }
    if stream:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return Stream(_chat_events(base, reply, usage if include_usage else None, opts.chunks))
    if reply.tool:
        tool_calls = [
            {
                "id": reply.tool.id,
                "type": "function",
                "function": {"name": reply.tool.name, "arguments": reply.tool.arguments},
            }
        ]
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": tool_calls}
    else:
        message = {"role": "assistant", "content": reply.text, "refusal": None}
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": _FINISH[reply.finish],
    }
    return Whole(200, encode({**base, "choices": [choice], "usage": usage}))


def _chat_events(
    base: dict[str, Any], reply: Answer, usage: dict[str, int] | None, chunks: int
) -> Iterator[bytes]:
    base = {**base, "object": "chat.completion.chunk"}
    if usage is not None:
        base["usage"] = None

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + encode({**base, "choices": [choice]}) + b"\n\n"

    if reply.tool:
        yield event({"role": "assistant", "content": None})
        head = {"index": 0, "id": reply.tool.id, "type": "function"}
        yield event(
            {"tool_calls": [{**head, "function": {"name": reply.tool.name, "arguments": ""}}]}
        )
        for piece in mocktext.split_chunks(reply.tool.arguments, chunks):
            yield event({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    else:
        yield event({"role": "assistant", "content": "", "refusal": None})
        for piece in mocktext.split_chunks(reply.text, chunks):
            yield event({"content": piece})
    yield event({}, _FINISH[reply.finish])
    if usage is not None:
        yield b"data: " + encode({**base, "choices": [], "usage": usage}) + b"\n\n"
    yield b"data: [DONE]\n\n"


def completions(body: dict[str, Any], model: str, opts: Options) -> Reply:
    """POST /v1/completions (legacy text completion), whole or streamed."""
    prompt = body.get("prompt")
    if prompt is None:
        return error(400, "'prompt' is required.", "prompt")
    limit = int_or_none(body.get("max_tokens"))
    seed = seed_of(prompt, model, limit, body.get("temperature"))
    reply = answer(seed, limit, body.get("stop"))
    usage = _usage(approx_tokens(prompt), _words(reply.text))
    finish = _FINISH[reply.finish]
    base: dict[str, Any] = {
        "id": "cmpl-mock-" + short_hash(seed),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
    }
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return Stream(_completion_events(base, reply.text, finish, usage, include_usage, opts))
    choice = {"index": 0, "text": reply.text, "logprobs": None, "finish_reason": finish}
    return Whole(200, encode({**base, "choices": [choice], "usage": usage}))


def _completion_events(
    base: dict[str, Any],
    text: str,
    finish: str,
    usage: dict[str, int],
    include_usage: bool,
    opts: Options,
) -> Iterator[bytes]:
    def event(piece: str, reason: str | None) -> bytes:
        choice = {"index": 0, "text": piece, "logprobs": None, "finish_reason": reason}
        return b"data: " + encode({**base, "choices": [choice]}) + b"\n\n"

    for piece in mocktext.split_chunks(text, opts.chunks):
        yield event(piece, None)
    yield event("", finish)
    if include_usage:
        yield b"data: " + encode({**base, "choices": [], "usage": usage}) + b"\n\n"
    yield b"data: [DONE]\n\n"


def embeddings(body: dict[str, Any], model: str) -> Whole:
    """POST /v1/embeddings: one deterministic vector per input."""
    inputs = body.get("input")
    if isinstance(inputs, str) or (
        isinstance(inputs, list) and inputs and isinstance(inputs[0], int)
    ):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        return error(400, "'input' must be a non-empty string or array.", "input")
    dims = int_or_none(body.get("dimensions")) or 8
    as_base64 = body.get("encoding_format") == "base64"
    data, tokens = [], 0
    for i, item in enumerate(inputs):
        raw = item if isinstance(item, str) else encode(item).decode()
        tokens += len(item.split()) if isinstance(item, str) else len(item)
        vector = mocktext.embedding(raw.encode() + model.encode(), dims)
        value: object = (
            base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode() if as_base64 else vector
        )
        data.append({"object": "embedding", "index": i, "embedding": value})
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return Whole(200, encode({"object": "list", "data": data, "model": model, "usage": usage}))


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 1700000000, "owned_by": "mock"}


def models() -> Whole:
    return Whole(200, encode({"object": "list", "data": [_model(m) for m in MODELS]}))


def model(name: str) -> Whole:
    if name not in MODELS:
        return error(404, f"The model '{name}' does not exist (mock).", "model")
    return Whole(200, encode(_model(name)))
