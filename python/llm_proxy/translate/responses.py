"""OpenAI Responses API <-> chat completions, stateless (pure, no I/O).

For deployments that do not serve the Responses API themselves: the common subset (input
items, instructions, function tools and calls, text formats) becomes a chat call, and the
chat answer a Response object. What needs server state is refused.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ..wire.openai import Completion, Usage, completion_decoder

_encoder = msgspec.json.Encoder()


class TranslationError(ValueError):
    """A Responses request that has no stateless chat form; `param` names the field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def response_id(chat_id: str) -> str:
    return "resp_" + chat_id.removeprefix("chatcmpl-")


def responses_to_chat(body: Any) -> dict[str, Any]:
    """A Responses request body as a chat.completions request body."""
    if not isinstance(body, dict):
        raise TranslationError("the request body must be a JSON object")
    for stateful in ("previous_response_id", "conversation"):
        if body.get(stateful) is not None:
            raise TranslationError(
                f"`{stateful}` needs a deployment that keeps responses (provider setting "
                f"responses_api: true); model `{body.get('model')}` is served statelessly",
                stateful,
            )
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    items = body.get("input")
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
    elif isinstance(items, list) and items:
        for i, item in enumerate(items):
            _item(item, f"input[{i}]", messages)
    else:
        raise TranslationError("`input` must be a string or a non-empty list of items", "input")
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    limit = body.get("max_output_tokens")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise TranslationError(
                "`max_output_tokens` must be a positive integer", "max_output_tokens"
            )
        out["max_tokens"] = limit
    for name in ("temperature", "top_p", "parallel_tool_calls", "user", "metadata"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("metadata") is not None:
        out.pop("metadata")  # chat's `metadata` needs `store`; nothing is stored here
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        out["reasoning_effort"] = reasoning["effort"]
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        out["response_format"] = {"type": "json_object"}
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    _tools(body, out)
    return out


def _text(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise TranslationError(f"{where} must be a string or a list of parts", where)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        at = f"{where}[{j}]"
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            parts.append({"type": "text", "text": part["refusal"]})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file" and isinstance(part.get("file_data"), str):
            file = {"file_data": part["file_data"], "filename": part.get("filename") or "file"}
            parts.append({"type": "file", "file": file})
        else:
            raise TranslationError(f"{at}: part type {kind!r} cannot be translated", at)
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _item(item: Any, where: str, out: list[dict[str, Any]]) -> None:
    if not isinstance(item, dict):
        raise TranslationError(f"{where} must be an object", where)
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise TranslationError(f"{where}.role {role!r} is not supported", f"{where}.role")
        content = _text(item.get("content"), f"{where}.content")
        if role == "assistant" and not isinstance(content, str):
            raise TranslationError(f"{where}: assistant content must be text", where)
        out.append({"role": "system" if role == "developer" else role, "content": content})
    elif kind == "function_call":
        call_id, name = item.get("call_id"), item.get("name")
        if not isinstance(call_id, str) or not isinstance(name, str):
            raise TranslationError(f"{where}: a function_call needs call_id and name", where)
        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": item.get("arguments") or "{}"},
        }
        last = out[-1] if out else None
        if last is not None and last["role"] == "assistant" and "tool_calls" in last:
            last["tool_calls"].append(call)
        else:
            out.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        call_id, output = item.get("call_id"), item.get("output")
        if not isinstance(call_id, str):
            raise TranslationError(f"{where}.call_id is required", f"{where}.call_id")
        text = output if isinstance(output, str) else _encoder.encode(output).decode()
        out.append({"role": "tool", "tool_call_id": call_id, "content": text})
    elif kind == "reasoning":
        return  # no chat form
    elif kind == "item_reference":
        raise TranslationError(
            f"{where}: item references need a deployment that keeps responses", where
        )
    else:
        raise TranslationError(f"{where}: item type {kind!r} cannot be translated", where)


def _tools(body: dict[str, Any], out: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise TranslationError("`tools` must be a list", "tools")
        translated = []
        for i, tool in enumerate(tools):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind != "function" or not isinstance(tool.get("name"), str):
                raise TranslationError(
                    f"tools[{i}]: only function tools can be translated (got {kind!r}); "
                    "built-in tools need a deployment that serves the Responses API",
                    f"tools[{i}]",
                )
            function = {
                k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool
            }
            translated.append({"type": "function", "function": function})
        out["tools"] = translated
    choice = body.get("tool_choice")
    if choice is None:
        return
    if choice in ("auto", "none", "required"):
        out["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function" and choice.get("name"):
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise TranslationError(f"tool_choice {choice!r} cannot be translated", "tool_choice")


def responses_usage(usage: Usage | None) -> dict[str, Any]:
    prompt = usage.prompt_tokens if usage else 0
    completion = usage.completion_tokens if usage else 0
    cached = (
        usage.prompt_tokens_details.cached_tokens if usage and usage.prompt_tokens_details else 0
    )
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def response_object(
    rid: str, model: str, created: int, output: list[dict[str, Any]], status: str
) -> dict[str, Any]:
    """A Response object's fields, as OpenAI's SDK reads them."""
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "store": False,
        "temperature": None,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "metadata": {},
        "usage": None,
    }


def chat_to_response(body: bytes, model: str, usage: Usage | None = None) -> bytes:
    """An OpenAI chat.completion body as a Response object (for `model`)."""
    try:
        answer: Completion = completion_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a chat completion: {exc}") from None
    rid = response_id(answer.id)
    output: list[dict[str, Any]] = []
    status = "completed"
    if answer.choices:
        choice = answer.choices[0]
        if choice.finish_reason == "length":
            status = "incomplete"
        message = choice.message
        if message is not None and (message.content or message.refusal):
            part: dict[str, Any] = (
                {"type": "output_text", "text": message.content, "annotations": []}
                if message.content
                else {"type": "refusal", "refusal": message.refusal}
            )
            output.append(
                {
                    "type": "message",
                    "id": "msg_" + rid[5:],
                    "status": "completed",
                    "role": "assistant",
                    "content": [part],
                }
            )
        for call in (message.tool_calls if message else None) or ():
            function = call.function
            output.append(
                {
                    "type": "function_call",
                    "id": "fc_" + (call.id or ""),
                    "call_id": call.id or "",
                    "name": (function.name if function else None) or "",
                    "arguments": (function.arguments if function else None) or "",
                    "status": "completed",
                }
            )
    if usage is None and bytes(answer.usage) != b"null":
        usage = msgspec.json.decode(answer.usage, type=Usage)
    out = response_object(rid, model, answer.created or int(time.time()), output, status)
    out["usage"] = responses_usage(usage)
    return _encoder.encode(out)
