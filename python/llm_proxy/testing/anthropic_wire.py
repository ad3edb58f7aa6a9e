"""Anthropic Messages API wire format for the mock upstream."""

from __future__ import annotations

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

_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
RATE_LIMIT_HEADERS: Headers = [
    ("retry-after", "1"),
    ("anthropic-ratelimit-requests-limit", "4000"),
    ("anthropic-ratelimit-requests-remaining", "0"),
    ("anthropic-ratelimit-requests-reset", "2030-01-01T00:00:01Z"),
]
_STOP = {"stop": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence"}
BAD_EVENT = b"event: content_block_delta\ndata: {not json\n\n"


def error(status: int, message: str | None = None) -> Whole:
    """Anthropic's error shape; 429 carries retry-after and anthropic-ratelimit-* headers."""
    kind = _ERRORS.get(status, "invalid_request_error" if status < 500 else "api_error")
    body = {"type": "error", "error": {"type": kind, "message": message or f"Mock {kind}."}}
    headers = JSON_HEADERS + (RATE_LIMIT_HEADERS if status == 429 else [])
    return Whole(status, encode(body), headers)


def check_headers(headers: dict[str, str]) -> Whole | None:
    """The authentication and version headers every Messages request must carry."""
    # Newer SDKs send the key as a bearer token instead of x-api-key; the API takes both.
    bearer = headers.get("authorization", "").startswith("Bearer ")
    if not headers.get("x-api-key") and not bearer:
        return error(401, "x-api-key header is required")
    if not headers.get("anthropic-version"):
        return error(400, "anthropic-version: header is required")
    return None


def _validate(body: dict[str, Any]) -> str | None:
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    if int_or_none(body.get("max_tokens")) is None:
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for i, msg in enumerate(messages):
        role = msg.get("role") if isinstance(msg, dict) else None
        if role == "system":
            return (
                'messages: Unexpected role "system". The Messages API accepts a top-level '
                '`system` parameter, not "system" as an input message role.'
            )
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        content = msg.get("content")
        if not isinstance(content, str | list) or (isinstance(content, list) and not content):
            return f"messages.{i}.content: must be a string or a non-empty list of blocks"
    return None


def _tool_for(body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    tools, last = body.get("tools"), body["messages"][-1]
    choice = body.get("tool_choice")
    if (
        not isinstance(tools, list)
        or not tools
        or (isinstance(choice, dict) and choice.get("type") == "none")
    ):
        return None
    if last.get("role") != "user" or "weather" not in text_of(last.get("content")).lower():
        return None
    tool = tools[0] if isinstance(tools[0], dict) else {}
    if isinstance(choice, dict) and choice.get("type") == "tool":
        tool = next(
            (t for t in tools if isinstance(t, dict) and t.get("name") == choice.get("name")), tool
        )
    return str(tool.get("name", "get_weather")), tool.get("input_schema") or {}


def messages(body: dict[str, Any], opts: Options) -> Reply:
    """POST /v1/messages, whole or streamed."""
    problem = _validate(body)
    if problem:
        return error(400, problem)
    model, limit = body["model"], body["max_tokens"]
    seed = seed_of(body.get("system"), body["messages"], model, limit, body.get("temperature"))
    last_text = text_of(body["messages"][-1].get("content"))
    reply = answer(seed, limit, body.get("stop_sequences"), _tool_for(body), last_text)
    usage = {
        "input_tokens": approx_tokens([body.get("system"), body["messages"]]),
        "output_tokens": approx_tokens(reply.tool.input) if reply.tool else len(reply.text.split()),
    }
    message: dict[str, Any] = {
        "id": "msg_mock_" + short_hash(seed),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    if body.get("stream"):
        return Stream(_events(message, reply, opts.chunks), bad_event=BAD_EVENT)
    if reply.tool:
        block = {"type": "tool_use", "id": _tool_id(reply), "name": reply.tool.name}
        message["content"] = [{**block, "input": reply.tool.input}]
        message["stop_reason"] = "tool_use"
    else:
        message["content"] = [{"type": "text", "text": reply.text}]
        message["stop_reason"] = _STOP[reply.finish]
        message["stop_sequence"] = reply.stop_sequence
    return Whole(200, encode(message))


def _tool_id(reply: Answer) -> str:
    assert reply.tool is not None
    return "toolu_mock_" + reply.tool.id.removeprefix("call_mock_")


def count_tokens(body: dict[str, Any]) -> Whole:
    """POST /v1/messages/count_tokens."""
    return Whole(
        200, encode({"input_tokens": approx_tokens([body.get("system"), body.get("messages")])})
    )


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + encode({"type": kind, **data}) + b"\n\n"


def _events(message: dict[str, Any], reply: Answer, chunks: int) -> Iterator[bytes]:
    usage = message["usage"]
    start = {**message, "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1}}
    yield _event("message_start", {"message": start})
    if reply.tool:
        block = {"type": "tool_use", "id": _tool_id(reply), "name": reply.tool.name}
        yield _event("content_block_start", {"index": 0, "content_block": {**block, "input": {}}})
        yield _event("ping", {})
        for piece in mocktext.split_chunks(reply.tool.arguments, chunks):
            delta = {"type": "input_json_delta", "partial_json": piece}
            yield _event("content_block_delta", {"index": 0, "delta": delta})
        stop_reason = "tool_use"
    else:
        yield _event(
            "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
        )
        yield _event("ping", {})
        for piece in mocktext.split_chunks(reply.text, chunks):
            yield _event(
                "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}}
            )
        stop_reason = _STOP[reply.finish]
    yield _event("content_block_stop", {"index": 0})
    end = {"stop_reason": stop_reason, "stop_sequence": reply.stop_sequence}
    yield _event(
        "message_delta", {"delta": end, "usage": {"output_tokens": usage["output_tokens"]}}
    )
    yield _event("message_stop", {})
