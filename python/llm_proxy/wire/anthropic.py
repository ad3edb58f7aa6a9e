"""Anthropic's Messages wire format: the parts the gateway reads, its events and its errors.

Structs hold only what some stage needs; unknown fields are ignored on decode and travel on in
the raw bytes (an Anthropic deployment gets the client's body as it came).
"""

from __future__ import annotations

import msgspec

_encoder = msgspec.json.Encoder()


class MessagesHead(msgspec.Struct):
    """The parts of a Messages request the door reads; the rest is translated or forwarded."""

    model: str
    messages: msgspec.Raw
    max_tokens: int | None = None
    stream: bool | None = None


class CountTokensHead(msgspec.Struct):
    """`/v1/messages/count_tokens`: like a Messages request, without `max_tokens`."""

    model: str
    messages: msgspec.Raw


class AnthropicUsage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class MessageHead(msgspec.Struct):
    """What the gateway reads of an Anthropic answer: its usage (for the log and spend)."""

    usage: AnthropicUsage | None = None


class TokenCount(msgspec.Struct):
    input_tokens: int


messages_head_decoder = msgspec.json.Decoder(MessagesHead)
count_tokens_head_decoder = msgspec.json.Decoder(CountTokensHead)
message_head_decoder = msgspec.json.Decoder(MessageHead)
token_count_decoder = msgspec.json.Decoder(TokenCount)

# Anthropic's error type for a status (the SDK raises its exception class by status).
_TYPE_FOR_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ERROR_TYPES = frozenset(_TYPE_FOR_STATUS.values()) | {"api_error"}


def error_type(status: int, kind: str | None = None) -> str:
    """Anthropic's error type for a gateway error: its own when it is one of Anthropic's
    (the generic `invalid_request_error` gives way to the status's type, e.g. a 404's)."""
    if kind in ERROR_TYPES and kind != "invalid_request_error":
        return kind
    return _TYPE_FOR_STATUS.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(kind: str, message: str) -> bytes:
    """`{"type": "error", "error": {"type": ..., "message": ...}}`."""
    return _encoder.encode({"type": "error", "error": {"type": kind, "message": message}})


def event(kind: bytes, data: bytes) -> bytes:
    """One named SSE event, as Anthropic frames them."""
    return b"event: " + kind + b"\ndata: " + data + b"\n\n"


def error_event(kind: str, message: str) -> bytes:
    return event(b"error", error_body(kind, message))
