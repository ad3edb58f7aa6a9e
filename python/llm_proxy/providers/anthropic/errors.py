"""Anthropic error answers -> OpenAI error objects (pure, no I/O)."""

from __future__ import annotations

from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()

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
