"""Anthropic Messages answer -> OpenAI chat completion (pure, no I/O)."""

from __future__ import annotations

from typing import Any

import msgspec

from ... import _core

_encoder = msgspec.json.Encoder()


def finish_reason(stop_reason: str | None) -> str:
    """The OpenAI finish_reason for an Anthropic stop_reason."""
    return _core.openai_finish_reason(stop_reason)


def chat_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI usage for Anthropic usage; cache reads and writes count as prompt tokens."""
    cached = usage.get("cache_read_input_tokens")
    prompt = (
        (usage.get("input_tokens") or 0)
        + (cached or 0)
        + (usage.get("cache_creation_input_tokens") or 0)
    )
    completion = usage.get("output_tokens") or 0
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached is not None:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    thinking = (usage.get("output_tokens_details") or {}).get("thinking_tokens")
    if thinking is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": thinking}
    return out


def messages_to_chat(resp: dict[str, Any], model: str, created: int) -> dict[str, Any]:
    """An Anthropic Messages response as an OpenAI chat.completion object."""
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in resp.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_use":
            arguments = _encoder.encode(block.get("input") or {}).decode()
            tool_calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {"name": block["name"], "arguments": arguments},
                }
            )
        # thinking, redacted_thinking and server-tool blocks have no chat.completion form
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not tool_calls else None,
        "refusal": None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-" + str(resp.get("id", "")),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(resp.get("stop_reason")),
            }
        ],
        "usage": chat_usage(resp.get("usage") or {}),
    }
