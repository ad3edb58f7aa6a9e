"""The provider interface: translate a Call to one upstream's wire format and back."""

from __future__ import annotations

from typing import Protocol

import msgspec

from ..calls import Call, Deployment, EventStream, Reply
from ..errors import GatewayError
from ..upstream import UpstreamResponse, passed_headers
from ..wire.openai import error_decoder, error_message


class Provider(Protocol):
    """One configured upstream. `complete` answers whole, `stream` as OpenAI SSE events."""

    name: str

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def complete(self, call: Call, deployment: Deployment) -> Reply: ...
    async def stream(self, call: Call, deployment: Deployment) -> EventStream: ...


def upstream_timeout(call: Call, limit: float) -> float:
    """The time the upstream may take: the provider's limit, bounded by the client's deadline."""
    timeout = call.remaining_s(limit)
    if timeout <= 0:
        raise GatewayError(504, "deadline exceeded before the upstream was called")
    return timeout


def upstream_error(resp: UpstreamResponse, provider: str) -> GatewayError:
    """Turn an upstream's non-200 answer into the client's error.

    4xx (including 429) pass through with their status, body and rate-limit headers;
    5xx become 502 naming the upstream status.
    """
    headers = passed_headers(resp.headers)
    message = None
    try:
        parsed = error_decoder.decode(resp.body)
        message = error_message(parsed)
    except msgspec.DecodeError:
        parsed = None
    if 400 <= resp.status < 500:
        if parsed is not None:
            return GatewayError(
                resp.status,
                message or f"upstream answered {resp.status}",
                headers=headers,
                body=resp.body,
            )
        text = resp.body[:200].decode("utf-8", "replace")
        return GatewayError(
            resp.status, f"upstream {provider} answered {resp.status}: {text}", headers=headers
        )
    detail = f": {message}" if message else ""
    return GatewayError(
        502,
        f"upstream {provider} answered {resp.status}{detail}",
        code=f"upstream_{resp.status}",
        headers=headers,
    )
