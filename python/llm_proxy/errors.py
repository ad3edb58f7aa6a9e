"""The gateway's one error type, carried from any stage to a front door."""

from __future__ import annotations

import msgspec

_encoder = msgspec.json.Encoder()

# OpenAI's error `type` for each status the gateway itself produces.
_TYPE_FOR_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "timeout",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout",
}


class GatewayError(Exception):
    """An error answered to the client in the provider's error shape.

    `body` is the exact error body to send, when an upstream's own error is passed through.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _TYPE_FOR_STATUS.get(status, "api_error")
        self.param = param
        self.code = code
        self.headers = headers or []
        self._body = body

    def error_object(self) -> dict[str, str | None]:
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}

    def body(self) -> bytes:
        """The OpenAI error object `{"error": {...}}` as JSON bytes."""
        if self._body is not None:
            return self._body
        return _encoder.encode({"error": self.error_object()})

    def sse_event(self) -> bytes:
        """The one event that ends a stream which failed after it started."""
        return b"data: " + _encoder.encode({"error": self.error_object()}) + b"\n\n"


def bad_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )
