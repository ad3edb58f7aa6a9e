"""GatewayError -> gRPC status code, message and trailing metadata."""

from __future__ import annotations

import enum
import re

from ..errors import GatewayError

Metadata = list[tuple[str, str]]


class Code(enum.IntEnum):
    """The gRPC status codes the door answers with."""

    OK = 0
    CANCELLED = 1
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    ABORTED = 10
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


_CODES: dict[int, Code] = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    405: Code.UNIMPLEMENTED,
    408: Code.DEADLINE_EXCEEDED,
    409: Code.ABORTED,
    413: Code.INVALID_ARGUMENT,
    415: Code.INVALID_ARGUMENT,
    422: Code.INVALID_ARGUMENT,
    429: Code.RESOURCE_EXHAUSTED,
    499: Code.CANCELLED,
    500: Code.INTERNAL,
    501: Code.UNIMPLEMENTED,
    502: Code.UNAVAILABLE,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}
# Upstream headers worth keeping in the trailers: when to retry and the rate-limit state.
_KEPT_PREFIXES = (
    "retry-after",
    "x-should-retry",
    "x-ratelimit-",
    "anthropic-ratelimit-",
    "x-upstream-request-id",
    "x-llm-proxy-",
)
_KEY = re.compile(r"[0-9a-z_.-]+")


def passable(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Upstream headers gRPC accepts as metadata; a bad one must not fail the call."""
    return [
        (k, v)
        for k, v in headers
        if _KEY.fullmatch(k) and not k.endswith("-bin") and v.isascii() and v.isprintable()
    ]


def status_code(status: int) -> Code:
    """The gRPC code for an HTTP status (never UNKNOWN)."""
    code = _CODES.get(status)
    if code is not None:
        return code
    return Code.INVALID_ARGUMENT if status < 500 else Code.UNAVAILABLE


def details(exc: GatewayError) -> str:
    """The status message: the error's own, naming the field when it is not already named."""
    message = exc.message
    if exc.param and f"`{exc.param}`" not in message and exc.param not in message.split():
        message = f"{message} (field `{exc.param}`)"
    return message


def trailers(exc: GatewayError, request_id: str) -> Metadata:
    out = [("x-request-id", request_id)]
    kept = [(k.lower(), str(v)) for k, v in exc.headers if k.lower().startswith(_KEPT_PREFIXES)]
    out.extend(passable(kept))
    if exc.type:
        out.append(("x-llm-proxy-error-type", exc.type))
    if exc.code is not None:
        out.append(("x-llm-proxy-error-code", str(exc.code)))
    if exc.param:
        out.append(("x-llm-proxy-error-param", exc.param))
    return out
