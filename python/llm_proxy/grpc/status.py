"""GatewayError -> gRPC status code, message and trailing metadata."""

from __future__ import annotations

import re

import grpc  # type: ignore[import-untyped]

from ..errors import GatewayError

Metadata = tuple[tuple[str, str], ...]

_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# Upstream headers worth keeping in the trailers: when to retry and the rate-limit state.
_KEPT_PREFIXES = (
    "retry-after",
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


def status_code(status: int) -> grpc.StatusCode:
    """The gRPC code for an HTTP status (never UNKNOWN)."""
    code = _CODES.get(status)
    if code is not None:
        return code
    return grpc.StatusCode.INVALID_ARGUMENT if status < 500 else grpc.StatusCode.UNAVAILABLE


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
    return tuple(out)
