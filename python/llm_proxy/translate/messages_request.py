"""Anthropic Messages request -> OpenAI chat completions request (pure, no I/O)."""

from __future__ import annotations

import re
from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()

# Upstream models that take `reasoning_effort` (OpenAI's reasoning models).
_REASONING_MODEL = re.compile(r"^(?:[\w-]+/)?(?:o\d|gpt-5|gpt-oss)")


class TranslationError(ValueError):
    """A Messages request that cannot be expressed as a chat completions request."""


def messages_to_chat(body: Any, target_model: str = "") -> dict[str, Any]:
    """An Anthropic Messages request body as an OpenAI chat.completions request body.

    `model` stays the client's name (the provider maps it to its deployment's); `target_model`
    (the upstream's name, if known) decides whether `thinking` becomes `reasoning_effort`.
    Raises TranslationError, naming the field, for what has no chat form.
    """
    if not isinstance(body, dict):
        raise TranslationError("the request body must be a JSON object")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise TranslationError("max_tokens: a positive integer is required")
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        text = _text_of(system, "system")
        if text:
            messages.append({"role": "system", "content": text})
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise TranslationError("messages: at least one message is required")
    for i, message in enumerate(raw):
        _message(message, i, messages)
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    out["max_tokens"] = max_tokens
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None:
            out[name] = value
    stop = body.get("stop_sequences")
    if stop:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise TranslationError("stop_sequences: must be a list of strings")
        out["stop"] = stop
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    thinking = body.get("thinking")
    if (
        isinstance(thinking, dict)
        and thinking.get("type") == "enabled"
        and _REASONING_MODEL.match(target_model)
    ):
        budget = thinking.get("budget_tokens")
        budget = budget if isinstance(budget, int) else 0
        out["reasoning_effort"] = "low" if budget < 4096 else "medium" if budget < 16384 else "high"
    _tools(body, out)
    return out


def _text_of(content: Any, where: str) -> str:
    """A string, or the text of a list of text blocks (system prompts, tool results)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise TranslationError(f"{where}: must be a string or a list of text blocks")
    parts = []
    for j, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise TranslationError(f"{where}.{j}: only text blocks can be translated here")
        text = block.get("text")
        if not isinstance(text, str):
            raise TranslationError(f"{where}.{j}.text: must be a string")
        parts.append(text)
    return "\n\n".join(parts)


def _message(message: Any, i: int, out: list[dict[str, Any]]) -> None:
    where = f"messages.{i}"
    if not isinstance(message, dict):
        raise TranslationError(f"{where}: must be an object")
    role = message.get("role")
    content = message.get("content")
    if role not in ("user", "assistant"):
        raise TranslationError(f"{where}.role: must be 'user' or 'assistant'")
    if isinstance(content, str):
        out.append({"role": role, "content": content})
        return
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content: must be a string or a list of blocks")
    if role == "assistant":
        _assistant(content, where, out)
    else:
        _user(content, where, out)


def _user(content: list[Any], where: str, out: list[dict[str, Any]]) -> None:
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}.content.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            # Tool results answer the assistant's calls, so they come first, as tool messages;
            # a chat tool message holds text only, so a result's images follow as user parts.
            message, images = _tool_message(block, at)
            out.append(message)
            parts.extend(images)
        elif kind == "text":
            if not isinstance(block.get("text"), str):
                raise TranslationError(f"{at}.text: must be a string")
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block, at)}})
        elif kind == "document":
            parts.append(_document(block, at))
        else:
            raise TranslationError(f"{at}: content block type {kind!r} cannot be translated")
    if not parts:
        return
    if all(part["type"] == "text" for part in parts):
        out.append({"role": "user", "content": "\n\n".join(p["text"] for p in parts)})
    else:
        out.append({"role": "user", "content": parts})


def _image_url(block: dict[str, Any], at: str) -> str:
    source = block.get("source")
    if not isinstance(source, dict):
        raise TranslationError(f"{at}.source: required")
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return str(source["url"])
    if source.get("type") == "base64":
        media, data = source.get("media_type"), source.get("data")
        if isinstance(media, str) and isinstance(data, str):
            return f"data:{media};base64,{data}"
    raise TranslationError(f"{at}.source: must be a base64 or url source")


def _document(block: dict[str, Any], at: str) -> dict[str, Any]:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "text":
        return {"type": "text", "text": str(source.get("data", ""))}
    if (
        isinstance(source, dict)
        and source.get("type") == "base64"
        and source.get("media_type") == "application/pdf"
        and isinstance(source.get("data"), str)
    ):
        data_url = f"data:application/pdf;base64,{source['data']}"
        return {"type": "file", "file": {"filename": "document.pdf", "file_data": data_url}}
    raise TranslationError(f"{at}.source: only base64 PDF and text documents can be translated")


def _tool_message(block: dict[str, Any], at: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The tool message for a tool_result block, and the image parts it carried."""
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str):
        raise TranslationError(f"{at}.tool_use_id: required")
    content = block.get("content")
    images: list[dict[str, Any]] = []
    if isinstance(content, list):
        texts = []
        for k, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "image":
                url = _image_url(part, f"{at}.content.{k}")
                images.append({"type": "image_url", "image_url": {"url": url}})
            elif kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                raise TranslationError(f"{at}.content.{k}: only text and images can be translated")
        text = "\n\n".join(texts)
    else:
        text = "" if content is None else _text_of(content, f"{at}.content")
    if block.get("is_error") is True:
        text = "Error: " + text
    return {"role": "tool", "tool_call_id": tool_use_id, "content": text}, images


def _assistant(content: list[Any], where: str, out: list[dict[str, Any]]) -> None:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}.content.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise TranslationError(f"{at}.text: must be a string")
            texts.append(block["text"])
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise TranslationError(f"{at}: a tool_use block needs an id and a name")
            arguments = _encoder.encode(block.get("input") or {}).decode()
            function = {"name": block["name"], "arguments": arguments}
            calls.append({"id": block["id"], "type": "function", "function": function})
        elif kind in ("thinking", "redacted_thinking"):
            continue  # no chat form; the upstream never saw it
        else:
            raise TranslationError(f"{at}: content block type {kind!r} cannot be translated")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    out.append(message)


def _tools(body: dict[str, Any], out: dict[str, Any]) -> None:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools:
        if not isinstance(tools, list):
            raise TranslationError("tools: must be a list")
        translated = []
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or tool.get("type", "custom") != "custom":
                kind = tool.get("type") if isinstance(tool, dict) else None
                raise TranslationError(
                    f"tools.{i}: server tool {kind!r} is only available on Anthropic models"
                )
            if not isinstance(tool.get("name"), str):
                raise TranslationError(f"tools.{i}.name: required")
            function: dict[str, Any] = {"name": tool["name"]}
            if tool.get("description"):
                function["description"] = tool["description"]
            schema = tool.get("input_schema")
            function["parameters"] = (
                schema if isinstance(schema, dict) else {"type": "object", "properties": {}}
            )
            translated.append({"type": "function", "function": function})
        out["tools"] = translated
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        chat_choice: Any = "auto"
    elif kind == "any":
        chat_choice = "required"
    elif kind == "none":
        chat_choice = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        chat_choice = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise TranslationError(f"tool_choice: {choice!r} is not a valid tool choice")
    if not tools:
        if kind in ("auto", "none"):
            return
        raise TranslationError("tool_choice: needs tools")
    out["tool_choice"] = chat_choice
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False
