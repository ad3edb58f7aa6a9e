"""OpenAI chat completions request -> Anthropic Messages request (pure, no I/O)."""

from __future__ import annotations

from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()
_object_decoder = msgspec.json.Decoder(dict[str, Any])

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


class TranslationError(ValueError):
    """A chat completions request that cannot be expressed as an Anthropic Messages request."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def chat_to_messages(
    body: dict[str, Any], model: str, default_max_tokens: int, *, sampling: bool = True
) -> dict[str, Any]:
    """An OpenAI chat.completions request body as an Anthropic Messages request body.

    Fields without an Anthropic counterpart (penalties, logprobs, seed, response_format, ...)
    are dropped, since Anthropic rejects unknown fields. `sampling=False` also drops
    temperature, top_p and top_k, which newer Claude models reject.
    """
    n = body.get("n")
    if n is not None and n != 1:
        raise TranslationError("Anthropic models answer one choice per request; n must be 1", "n")
    for legacy in ("functions", "function_call"):
        if body.get(legacy) is not None:
            raise TranslationError(f"`{legacy}` is not supported here; use `tools`", legacy)
    if body.get("audio") is not None or body.get("modalities") not in (None, ["text"]):
        raise TranslationError("Anthropic models answer in text only", "modalities")

    system, messages = _messages(body.get("messages"))
    out: dict[str, Any] = {"model": model, "max_tokens": _max_tokens(body, default_max_tokens)}
    if system is not None:
        out["system"] = system
    out["messages"] = messages
    for name in ("temperature", "top_p", "top_k") if sampling else ():
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        if not all(isinstance(s, str) for s in stop):
            raise TranslationError("stop must be a string or a list of strings", "stop")
        out["stop_sequences"] = stop
    elif stop is not None and stop != []:
        raise TranslationError("stop must be a string or a list of strings", "stop")
    if body.get("stream") is True:
        out["stream"] = True
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    _tools(body, out)
    return out


def _max_tokens(body: dict[str, Any], default: int) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TranslationError(f"{name} must be a positive integer", name)
        return value
    return default


def _messages(raw: Any) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]]:
    if not isinstance(raw, list) or not raw:
        raise TranslationError("messages must be a non-empty list", "messages")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []  # {"role", "content": [blocks]}, alternating roles

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise TranslationError(f"{where} must be an object", where)
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.extend(_text_blocks(content, f"{where}.content"))
        elif role == "user":
            add("user", _content_blocks(content, f"{where}.content"))
        elif role == "assistant":
            blocks = _text_blocks(content, f"{where}.content", allow_refusal=True)
            blocks.extend(_tool_uses(message.get("tool_calls"), f"{where}.tool_calls"))
            add("assistant", blocks)
        elif role == "tool":
            add("user", [_tool_result(message, where)])
        else:
            raise TranslationError(f"{where}.role {role!r} is not supported", f"{where}.role")

    if turns and turns[-1]["role"] == "assistant":
        # A trailing assistant turn is a prefill, and Anthropic rejects trailing whitespace there.
        last = turns[-1]["content"][-1]
        if last["type"] == "text":
            last["text"] = last["text"].rstrip()
            if not last["text"]:
                turns[-1]["content"].pop()
                if not turns[-1]["content"]:
                    turns.pop()
    for turn in turns:
        content = turn["content"]
        if len(content) == 1 and content[0]["type"] == "text" and len(content[0]) == 2:
            turn["content"] = content[0]["text"]

    if not system:
        return None, turns
    if any("cache_control" in block for block in system):
        return system, turns
    return "\n\n".join(block["text"] for block in system), turns


def _text_blocks(content: Any, where: str, allow_refusal: bool = False) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise TranslationError(f"{where} must be a string or a list of parts", where)
    blocks = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            text = part["text"]
        elif kind == "refusal" and allow_refusal and isinstance(part.get("refusal"), str):
            text = part["refusal"]
        else:
            raise TranslationError(f"{where}[{j}] must be a text part here", f"{where}[{j}]")
        if text:
            blocks.append(_with_cache_control({"type": "text", "text": text}, part))
    return blocks


def _content_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return _text_blocks(content, where)
    if not isinstance(content, list):
        raise TranslationError(f"{where} must be a string or a list of parts", where)
    blocks = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise TranslationError(f"{at}.text must be a string", at)
            if part["text"]:
                blocks.append(_with_cache_control({"type": "text", "text": part["text"]}, part))
        elif kind == "image_url":
            blocks.append(_with_cache_control(_image(part.get("image_url"), at), part))
        elif kind == "file":
            blocks.append(_with_cache_control(_document(part.get("file"), at), part))
        else:
            raise TranslationError(f"{at}: content part type {kind!r} is not supported", at)
    return blocks


def _image(image_url: Any, where: str) -> dict[str, Any]:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str):
        raise TranslationError(f"{where}.image_url.url must be a string", f"{where}.image_url")
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    media_type, data = _data_url(url, f"{where}.image_url")
    if media_type not in _IMAGE_TYPES:
        raise TranslationError(
            f"{where}: image type {media_type!r} is not supported "
            "(use image/jpeg, image/png, image/gif or image/webp)",
            f"{where}.image_url",
        )
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _document(file: Any, where: str) -> dict[str, Any]:
    data_url = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data_url, str):
        raise TranslationError(f"{where}: only inline files (file.file_data) are supported", where)
    media_type, data = _data_url(data_url, f"{where}.file.file_data")
    if media_type != "application/pdf":
        raise TranslationError(f"{where}: file type {media_type!r} is not supported", where)
    return {
        "type": "document",
        "source": {"type": "base64", "media_type": media_type, "data": data},
    }


def _data_url(url: str, where: str) -> tuple[str, str]:
    header, sep, data = url.partition(",")
    if not (header.startswith("data:") and header.endswith(";base64") and sep and data):
        raise TranslationError(f"{where} must be an http(s) URL or a base64 data: URL", where)
    return header[5:-7].split(";", 1)[0].lower(), data


def _with_cache_control(block: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    if part.get("cache_control") is not None:
        block["cache_control"] = part["cache_control"]
    return block


def _tool_uses(tool_calls: Any, where: str) -> list[dict[str, Any]]:
    if not tool_calls:
        return []
    if not isinstance(tool_calls, list):
        raise TranslationError(f"{where} must be a list", where)
    blocks = []
    for j, call in enumerate(tool_calls):
        at = f"{where}[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str):
            raise TranslationError(f"{at} must have an id and a function", at)
        name = function.get("name")
        arguments = function.get("arguments") or "{}"
        try:
            parsed = _object_decoder.decode(arguments)
        except (msgspec.DecodeError, TypeError):
            raise TranslationError(
                f"{at}: arguments of tool call {call['id']!r} ({name}) are not a JSON object",
                f"{at}.function.arguments",
            ) from None
        blocks.append({"type": "tool_use", "id": call["id"], "name": name, "input": parsed})
    return blocks


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    tool_call_id = message.get("tool_call_id")
    if not isinstance(tool_call_id, str) or not tool_call_id:
        raise TranslationError(f"{where}.tool_call_id is required", f"{where}.tool_call_id")
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_call_id}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            result["content"] = content
    else:
        blocks = _content_blocks(content, f"{where}.content")
        if blocks:
            result["content"] = blocks
    return result


def _tools(body: dict[str, Any], out: dict[str, Any]) -> None:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not tools:
        if choice not in (None, "none", "auto"):
            raise TranslationError("tool_choice needs tools", "tool_choice")
        return
    if not isinstance(tools, list):
        raise TranslationError("tools must be a list", "tools")
    translated = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type") != "function":
            raise TranslationError(f"tools[{i}] must be a function tool", f"tools[{i}]")
        if not isinstance(function.get("name"), str):
            raise TranslationError(f"tools[{i}].function.name is required", f"tools[{i}]")
        entry: dict[str, Any] = {"name": function["name"]}
        if function.get("description"):
            entry["description"] = function["description"]
        entry["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
        translated.append(_with_cache_control(entry, tool))
    out["tools"] = translated

    if choice is None or choice == "auto":
        anthropic_choice: dict[str, Any] = {"type": "auto"}
    elif choice == "required":
        anthropic_choice = {"type": "any"}
    elif choice == "none":
        anthropic_choice = {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if not isinstance(name, str):
            raise TranslationError("tool_choice.function.name is required", "tool_choice")
        anthropic_choice = {"type": "tool", "name": name}
    else:
        raise TranslationError(f"tool_choice {choice!r} is not supported", "tool_choice")
    if body.get("parallel_tool_calls") is False and anthropic_choice["type"] != "none":
        anthropic_choice["disable_parallel_tool_use"] = True
    if choice is not None or "disable_parallel_tool_use" in anthropic_choice:
        out["tool_choice"] = anthropic_choice
