"""Anthropic's Messages API on the HTTP door: `/v1/messages` and `/v1/messages/count_tokens`.

To an Anthropic deployment the client's body goes through as it came (but for the model
name); to any other it is translated to a chat completions call, and the answer back.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import msgspec
from granian._granian import RSGIHTTPProtocol as HTTPProtocol
from granian.rsgi import Scope

from .. import _core
from ..calls import MAX_MODEL_NAME, Call, Headers, Outcome, Reply
from ..errors import GatewayError
from ..translate.messages_answer import chat_to_message
from ..translate.messages_request import TranslationError, messages_to_chat
from ..wire.anthropic import (
    count_tokens_head_decoder,
    error_body,
    error_event,
    error_type,
    messages_head_decoder,
    token_count_decoder,
)
from .foreign import ForeignApi, is_anthropic, native_providers, targets
from .outcomes import ClientGone, json_headers

if TYPE_CHECKING:
    from .door import HttpDoor

_dict_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()
# Upstream models whose tokenizer is one of OpenAI's encodings (their counts are exact).
_OPENAI_MODEL = re.compile(
    r"^(?:openai/|azure/)?(?:ft:)?(?:gpt-|o\d|chatgpt-|text-embedding-|davinci|babbage|mock-)"
)


def decode_head(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    """A request head, or a 400 in words a client can act on."""
    try:
        head = decoder.decode(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if text.startswith("Expected `object`"):
            raise GatewayError(400, "the request body must be a JSON object") from None
        raise GatewayError(400, f"invalid request: {text}") from None
    except msgspec.DecodeError as exc:
        raise GatewayError(400, f"could not parse the JSON body of your request: {exc}") from None
    except (UnicodeDecodeError, RecursionError):
        raise GatewayError(400, "the request body is not valid UTF-8 JSON") from None
    if not body.isascii():
        try:
            body.decode()
        except UnicodeDecodeError as exc:
            raise GatewayError(
                400, f"the request body is not valid UTF-8 (byte {exc.start})"
            ) from None
    if len(head.model) > MAX_MODEL_NAME:
        raise GatewayError(400, f"model: longer than {MAX_MODEL_NAME} characters")
    return head


class MessagesApi(ForeignApi):
    """`POST /v1/messages`."""

    wire = "anthropic"

    def __init__(self, door: HttpDoor) -> None:
        super().__init__(door)
        self.targets = targets(self.config, is_anthropic)
        self.native_providers = native_providers(self.config, is_anthropic)

    def decode(self, body: bytes, request_id: str, headers: Headers) -> Call:
        head = decode_head(messages_head_decoder, body)
        target = self.targets.get(head.model)
        passthrough = target is not None and target.native
        if passthrough:
            chat_body, prompt = body, bytes(head.messages)
        else:
            try:
                chat = messages_to_chat(_dict_decoder.decode(body), target.model if target else "")
            except TranslationError as exc:
                raise GatewayError(400, str(exc)) from None
            except (msgspec.DecodeError, RecursionError):
                raise GatewayError(400, "the request body is nested too deeply") from None
            chat_body, prompt = _encoder.encode(chat), _encoder.encode(chat["messages"])
        stream = bool(head.stream)
        return Call(
            request_id,
            "http",
            "chat",
            chat_body,
            head.model,
            stream,
            stream,
            prompt,
            headers,
            wire="anthropic",
            client_body=body,
            passthrough=passthrough,
        )

    def native(self, call: Call) -> bool:
        deployment = call.deployment
        return deployment is not None and deployment.provider in self.native_providers

    def whole(self, call: Call, reply: Reply) -> bytes:
        return chat_to_message(reply.body, call.model, reply.usage)

    def translator(self, call: Call) -> _core.MessagesStream:
        return _core.MessagesStream(call.model)

    def error_body(self, exc: GatewayError) -> bytes:
        return error_body(error_type(exc.status, exc.type), exc.message)

    def error_event(self, exc: GatewayError) -> bytes:
        return error_event(error_type(exc.status, exc.type), exc.message)


class CountTokensApi(MessagesApi):
    """`POST /v1/messages/count_tokens`: the upstream's count for Anthropic models; for
    others the Rust tokenizer's, exact for OpenAI's encodings (`x-llm-proxy-token-count`)."""

    async def __call__(
        self, scope: Scope, proto: HTTPProtocol, request_id: str, started: float
    ) -> None:
        call: Call | None = None
        try:
            body = await self.read(scope, proto, request_id)
            head = decode_head(count_tokens_head_decoder, body)
            call = Call(
                request_id,
                "http",
                "chat",
                body,
                head.model,
                prompt_json=bytes(head.messages),
                headers=scope.headers,
                started=started,
                wire="anthropic",
                client_body=body,
            )
            try:
                answer, how = await self._count(call)
            except BaseException as exc:
                if isinstance(exc, GatewayError):
                    self.pipeline.ended(call, Outcome(exc.status, exc.type, exc.message))
                else:
                    self.pipeline.ended(call, Outcome(500, "internal_error", type(exc).__name__))
                raise
            self.pipeline.ended(call, Outcome(200))
            headers = json_headers(request_id, call.overhead_ms())
            headers.append(("x-llm-proxy-token-count", how))
            proto.response_bytes(200, headers, answer)
        except GatewayError as exc:
            if call is None:
                self.refused(request_id, exc)
            self.error_response(proto, exc, request_id, started)
        except ClientGone:
            pass

    async def _count(self, call: Call) -> tuple[bytes, str]:
        provider = await self.pipeline.admit(call)
        deployment = call.deployment
        assert deployment is not None
        count_tokens = getattr(provider, "count_tokens", None)
        if deployment.provider in self.native_providers and count_tokens is not None:
            answer = await count_tokens(call, deployment)
            try:
                token_count_decoder.decode(answer)
            except msgspec.DecodeError:
                raise GatewayError(502, "upstream answered the count with invalid JSON") from None
            return answer, "upstream"
        data = _dict_decoder.decode(call.body)
        data["max_tokens"] = 1  # not part of a count request; the translation wants one
        try:
            chat = messages_to_chat(data, deployment.model)
        except TranslationError as exc:
            raise GatewayError(400, str(exc)) from None
        tokens = _core.count_chat_tokens(_encoder.encode(chat["messages"]), deployment.model)
        exact = bool(_OPENAI_MODEL.match(deployment.model))
        if chat.get("tools"):
            # OpenAI bills tool definitions in an undocumented rendering: count their JSON.
            encoding = _core.encoding_for_model(deployment.model)
            tokens += _core.count_tokens(_encoder.encode(chat["tools"]).decode(), encoding)
            exact = False
        return _encoder.encode({"input_tokens": tokens}), "exact" if exact else "estimate"
