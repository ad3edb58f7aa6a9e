"""OpenAI chat completions <-> Anthropic Messages: pure translations of requests, responses,
stream events and errors (no I/O)."""

from __future__ import annotations

from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()
_object_decoder = msgspec.json.Decoder(dict[str, Any])

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

_FINISH_REASON = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


class TranslationError(ValueError):
    """A chat completions request that cannot be expressed as an Anthropic Messages request."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class UpstreamStreamError(Exception):
    """An `error` event inside an Anthropic stream (e.g. overloaded_error mid-stream)."""

    def __init__(self, message: str, type: str) -> None:
        super().__init__(message)
        self.message = message
        self.type = type


# ---------------------------------------------------------------- request


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


# ---------------------------------------------------------------- response


def finish_reason(stop_reason: str | None) -> str:
    """The OpenAI finish_reason for an Anthropic stop_reason."""
    return _FINISH_REASON.get(stop_reason or "end_turn", "stop")


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


# ---------------------------------------------------------------- stream


def data_of(event: bytes) -> bytes | None:
    """The data payload of one raw SSE event (LF or CRLF), or None if it carries no data."""
    parts = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else b"\n".join(parts)


_DONE = b"data: [DONE]\n\n"


class StreamTranslator:
    """Anthropic stream events in, OpenAI `chat.completion.chunk` SSE events out."""

    def __init__(self, model: str, created: int, include_usage: bool) -> None:
        self.model = model
        self.created = created
        self.include_usage = include_usage
        self.id: str | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._usage: dict[str, Any] = {}
        self.finish_reason: str | None = None
        self._prefix = b""
        self._suffix = b',"usage":null}\n\n' if include_usage else b"}\n\n"
        self._tool_index: dict[int, int] = {}  # Anthropic block index -> OpenAI tool-call index
        self._tool_args_seen: dict[int, bool] = {}

    def event(self, data: bytes) -> list[bytes]:
        """OpenAI SSE events for one Anthropic event (its data payload, or the raw event)."""
        if data[:1] != b"{" and not data.lstrip().startswith(b"{"):
            payload = data_of(data)
            if payload is None:
                return []
            data = payload
        event = _object_decoder.decode(data)
        try:
            return self._translate(event)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed Anthropic stream event: {exc!r}") from None

    def _translate(self, event: dict[str, Any]) -> list[bytes]:
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event["delta"]
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta["text"]})] if delta["text"] else []
            if delta.get("type") == "input_json_delta":
                return self._tool_arguments(event["index"], delta.get("partial_json") or "")
            return []  # thinking, signature and citations deltas have no chat form
        if kind == "message_start":
            return self._start(event["message"])
        if kind == "content_block_start":
            return self._block_start(event["index"], event["content_block"])
        if kind == "content_block_stop":
            index = event["index"]
            if index in self._tool_index and not self._tool_args_seen[index]:
                return self._tool_arguments(index, "{}")
            return []
        if kind == "message_delta":
            self._add_usage(event.get("usage"))
            self.finish_reason = finish_reason(event.get("delta", {}).get("stop_reason"))
            return [self._chunk({}, self.finish_reason)]
        if kind == "message_stop":
            if not self.include_usage:
                return [_DONE]
            usage = _encoder.encode(chat_usage(self._usage))
            final = self._prefix + b'],"usage":' + usage + b"}\n\n"
            return [final, _DONE]
        if kind == "error":
            error = event.get("error") or {}
            raise UpstreamStreamError(
                str(error.get("message") or "stream error"), str(error.get("type") or "api_error")
            )
        return []  # ping, and event types added after this was written

    def _start(self, message: dict[str, Any]) -> list[bytes]:
        self.id = "chatcmpl-" + str(message.get("id", ""))
        self._add_usage(message.get("usage"))
        head = {"id": self.id, "object": "chat.completion.chunk", "created": self.created}
        head["model"] = self.model
        self._prefix = b"data: " + _encoder.encode(head)[:-1] + b',"choices":['
        return [self._chunk({"role": "assistant", "content": ""})]

    def _add_usage(self, usage: dict[str, Any] | None) -> None:
        # message_delta usage is cumulative; fields it leaves null keep message_start's values.
        if usage:
            self._usage.update((k, v) for k, v in usage.items() if v is not None)
            totals = chat_usage(self._usage)
            self.prompt_tokens = totals["prompt_tokens"]
            self.completion_tokens = totals["completion_tokens"]

    def _block_start(self, index: int, block: dict[str, Any]) -> list[bytes]:
        kind = block.get("type")
        if kind == "text":
            return [self._chunk({"content": block["text"]})] if block.get("text") else []
        if kind != "tool_use":
            return []
        tool_index = len(self._tool_index)
        self._tool_index[index] = tool_index
        self._tool_args_seen[index] = False
        call = {
            "index": tool_index,
            "id": block["id"],
            "type": "function",
            "function": {"name": block["name"], "arguments": ""},
        }
        return [self._chunk({"tool_calls": [call]})]

    def _tool_arguments(self, index: int, partial: str) -> list[bytes]:
        if not partial:
            return []
        self._tool_args_seen[index] = True
        call = {"index": self._tool_index[index], "function": {"arguments": partial}}
        return [self._chunk({"tool_calls": [call]})]

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        if not self._prefix:
            raise ValueError("Anthropic stream event before message_start")
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._prefix + _encoder.encode(choice) + b"]" + self._suffix


# ---------------------------------------------------------------- errors

# Anthropic error type -> (OpenAI status, type, code); statuses otherwise kept as they came.
_ERRORS: dict[str, tuple[int | None, str, str | None]] = {
    "invalid_request_error": (None, "invalid_request_error", None),
    "authentication_error": (401, "authentication_error", "invalid_api_key"),
    "permission_error": (403, "permission_error", None),
    "billing_error": (402, "billing_error", "insufficient_quota"),
    "not_found_error": (404, "not_found_error", None),
    "request_too_large": (413, "invalid_request_error", "request_too_large"),
    "rate_limit_error": (429, "rate_limit_error", "rate_limit_exceeded"),
    "api_error": (502, "api_error", None),
    "timeout_error": (504, "timeout", None),
    "overloaded_error": (503, "service_unavailable", "overloaded"),
}
_STATUS = {500: 502, 529: 503}
_TYPE_FOR_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
    504: "timeout",
}


def error_to_openai(status: int, body: bytes) -> tuple[int, bytes]:
    """An Anthropic error response as an OpenAI error (status, `{"error": {...}}` bytes)."""
    try:
        decoded: Any = msgspec.json.decode(body)
    except msgspec.DecodeError:
        decoded = None
    error = decoded.get("error") if isinstance(decoded, dict) else None
    upstream_type = error.get("type") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str) or not message:
        text = body.decode("utf-8", "replace").strip()[:200]
        message = f"upstream answered {status}" + (f": {text}" if text else "")
    new_status, kind, code = _ERRORS.get(str(upstream_type), (None, None, None))
    status = new_status or _STATUS.get(status, status)
    if kind is None:
        kind = _TYPE_FOR_STATUS.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
    return status, _encoder.encode(
        {"error": {"message": message, "type": kind, "param": None, "code": code}}
    )
