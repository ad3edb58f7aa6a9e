"""Protobuf requests in, the OpenAI-format JSON bodies the HTTP door would receive out.

JSON-text fields (`parameters`, `json_schema`, `extra_json` values) are embedded as raw bytes,
never parsed here: `decode_call` checks the whole body once, and only when it fails do we look
for the field to blame.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..errors import GatewayError, bad_request
from .gen import gateway_pb2 as pb

ChatRequest = pb.ChatCompletionRequest | pb.StreamChatCompletionRequest
Request = ChatRequest | pb.CompletionRequest | pb.EmbedRequest

_encoder = msgspec.json.Encoder()
_extra_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_STREAM_OPTIONS = msgspec.Raw(b'{"include_usage":true}')


def _extra(extra_json: str) -> dict[str, Any]:
    if not extra_json:
        return {}
    try:
        return _extra_decoder.decode(extra_json)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise bad_request(
            f"`extra_json` must be the JSON text of an object: {exc}", param="extra_json"
        ) from None


def _require_model(model: str) -> None:
    if not model:
        raise bad_request("`model` is required", param="model")


def _sampling(request: ChatRequest | pb.CompletionRequest, body: dict[str, Any]) -> None:
    if request.HasField("temperature"):
        body["temperature"] = request.temperature
    if request.HasField("top_p"):
        body["top_p"] = request.top_p
    if request.HasField("max_tokens"):
        body["max_tokens"] = request.max_tokens
    if request.stop:
        body["stop"] = list(request.stop)
    if request.HasField("seed"):
        body["seed"] = request.seed
    if request.HasField("n"):
        body["n"] = request.n


def _part(part: pb.ContentPart) -> dict[str, Any]:
    if part.WhichOneof("part") == "image_url":
        image: dict[str, Any] = {"url": part.image_url.url}
        if part.image_url.HasField("detail"):
            image["detail"] = part.image_url.detail
        return {"type": "image_url", "image_url": image}
    return {"type": "text", "text": part.text}


def _message(index: int, message: pb.ChatMessage) -> dict[str, Any]:
    if not message.role:
        raise bad_request(f"`messages[{index}].role` is required", param="messages")
    out: dict[str, Any] = {"role": message.role}
    if message.content_parts:
        out["content"] = [_part(p) for p in message.content_parts]
    elif message.HasField("content"):
        out["content"] = message.content
    else:
        out["content"] = None
    if message.HasField("name"):
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": call.type or "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
            for call in message.tool_calls
        ]
    if message.HasField("tool_call_id"):
        out["tool_call_id"] = message.tool_call_id
    if message.HasField("refusal"):
        out["refusal"] = message.refusal
    return out


def _tool(tool: pb.Tool) -> dict[str, Any]:
    fn = tool.function
    function: dict[str, Any] = {"name": fn.name}
    if fn.HasField("description"):
        function["description"] = fn.description
    if fn.HasField("parameters"):
        function["parameters"] = msgspec.Raw(fn.parameters.encode())
    if fn.HasField("strict"):
        function["strict"] = fn.strict
    return {"type": tool.type or "function", "function": function}


def chat_body(request: ChatRequest, *, stream: bool) -> bytes:
    """The chat completions body; a stream always asks for usage (sent on the last message)."""
    _require_model(request.model)
    body = _extra(request.extra_json)
    body["model"] = request.model
    body["messages"] = [_message(i, m) for i, m in enumerate(request.messages)]
    _sampling(request, body)
    if request.tools:
        body["tools"] = [_tool(t) for t in request.tools]
    if request.HasField("tool_choice"):
        choice = request.tool_choice
        if choice.WhichOneof("choice") == "function_name":
            body["tool_choice"] = {"type": "function", "function": {"name": choice.function_name}}
        else:
            body["tool_choice"] = choice.mode
    if request.HasField("response_format"):
        fmt = request.response_format
        response_format: dict[str, Any] = {"type": fmt.type}
        if fmt.HasField("json_schema"):
            response_format["json_schema"] = msgspec.Raw(fmt.json_schema.encode())
        body["response_format"] = response_format
    if stream:
        body["stream"] = True
        body["stream_options"] = _STREAM_OPTIONS
    else:
        body.pop("stream", None)
    return _encoder.encode(body)


def completion_body(request: pb.CompletionRequest) -> bytes:
    _require_model(request.model)
    if not request.prompt:
        raise bad_request("`prompt` must have at least one text", param="prompt")
    body = _extra(request.extra_json)
    body["model"] = request.model
    body["prompt"] = request.prompt[0] if len(request.prompt) == 1 else list(request.prompt)
    _sampling(request, body)
    body.pop("stream", None)
    return _encoder.encode(body)


def embed_body(request: pb.EmbedRequest) -> bytes:
    _require_model(request.model)
    if not request.input:
        raise bad_request("`input` must have at least one text", param="input")
    body = _extra(request.extra_json)
    body["model"] = request.model
    body["input"] = request.input[0] if len(request.input) == 1 else list(request.input)
    if request.HasField("dimensions"):
        body["dimensions"] = request.dimensions
    return _encoder.encode(body)


def _json_fields(request: Request) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    if isinstance(request, pb.ChatCompletionRequest | pb.StreamChatCompletionRequest):
        for i, tool in enumerate(request.tools):
            if tool.function.HasField("parameters"):
                fields.append((f"tools[{i}].function.parameters", tool.function.parameters))
        if request.HasField("response_format") and request.response_format.HasField("json_schema"):
            fields.append(("response_format.json_schema", request.response_format.json_schema))
    return fields


def blame_json(request: Request, error: GatewayError) -> GatewayError:
    """A body that would not parse names the JSON-text field that broke it."""
    for name, text in _json_fields(request):
        try:
            msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            return bad_request(f"`{name}` is not valid JSON: {exc}", param=name)
    return error
