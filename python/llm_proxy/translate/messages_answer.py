"""OpenAI chat completion answer -> Anthropic message object (pure, no I/O)."""

from __future__ import annotations

from typing import Any

import msgspec

from ..wire.openai import Completion, Usage, completion_decoder

_encoder = msgspec.json.Encoder()
_object_decoder = msgspec.json.Decoder(dict[str, Any])

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def stop_reason(finish_reason: str | None) -> str:
    return STOP_REASONS.get(finish_reason or "stop", "end_turn")


def message_id(chat_id: str) -> str:
    return "msg_" + chat_id.removeprefix("chatcmpl-")


def anthropic_usage(usage: Usage | None) -> dict[str, int]:
    """Anthropic usage for OpenAI usage: cache reads are not part of `input_tokens` there."""
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    out = {"input_tokens": usage.prompt_tokens - cached, "output_tokens": usage.completion_tokens}
    if cached:
        out["cache_read_input_tokens"] = cached
    return out


def tool_input(arguments: str | None) -> Any:
    """A tool call's arguments as the `input` object (an unparsable string is kept as text)."""
    if not arguments:
        return {}
    try:
        return _object_decoder.decode(arguments)
    except msgspec.DecodeError:
        return {"_arguments": arguments}


def chat_to_message(body: bytes, model: str, usage: Usage | None = None) -> bytes:
    """An OpenAI chat.completion body as an Anthropic `message` body (for `model`).

    Raises ValueError when `body` is not a chat completion.
    """
    try:
        answer: Completion = completion_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a chat completion: {exc}") from None
    content: list[dict[str, Any]] = []
    finish = None
    if answer.choices:
        choice = answer.choices[0]
        finish = choice.finish_reason
        message = choice.message
        if message is not None:
            text = message.content or message.refusal
            if text:
                content.append({"type": "text", "text": text})
            for call in message.tool_calls or ():
                function = call.function
                content.append(
                    {
                        "type": "tool_use",
                        "id": call.id or "",
                        "name": function.name if function else "",
                        "input": tool_input(function.arguments if function else None),
                    }
                )
    if usage is None and answer.usage is not None and bytes(answer.usage) != b"null":
        usage = msgspec.json.decode(answer.usage, type=Usage)
    out = {
        "id": message_id(answer.id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(finish),
        "stop_sequence": None,
        "usage": anthropic_usage(usage),
    }
    return _encoder.encode(out)
