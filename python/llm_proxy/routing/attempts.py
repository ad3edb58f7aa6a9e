"""What routing one call did: its attempts, why each failed, and what the answer says."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import msgspec

from ..errors import GatewayError

if TYPE_CHECKING:
    from .group import ModelGroup

FailureKind = Literal["rate_limit", "unavailable", "timeout", "context_window", "content_policy"]
# Safe to send again: the upstream did not take the call (or cannot have answered it).
RETRYABLE: frozenset[str] = frozenset(("rate_limit", "unavailable", "timeout"))


class Attempt(msgspec.Struct, array_like=False, omit_defaults=True):
    """One try at one deployment, as the log record keeps it."""

    deployment: str
    status: int
    latency_ms: float
    error: str | None = None
    # The model that was tried, when it is a fallback rather than the one asked for.
    model: str | None = None


_encoder = msgspec.json.Encoder()


class RouteState:
    """The routing of one call: the group asked for, the attempts made, a fallback taken."""

    __slots__ = ("asked", "attempts", "fallback", "group", "need_tokens")

    def __init__(self, group: ModelGroup) -> None:
        self.asked = group  # whose fallbacks apply
        self.group = group  # the first to try (another if the asked one's window is too small)
        self.attempts: list[Attempt] = []
        self.fallback: str | None = None  # the model that answered instead of the one asked
        # Input tokens of the call, when a context-window fallback made the router count them.
        self.need_tokens = 0

    def headers(self, deployment: str) -> list[tuple[str, str]]:
        """`x-llm-proxy-deployment`, `-attempts` and (after a fallback) `-fallback`."""
        out = [
            ("x-llm-proxy-deployment", deployment),
            ("x-llm-proxy-attempts", str(len(self.attempts))),
        ]
        if self.fallback is not None:
            out.append(("x-llm-proxy-fallback", self.fallback))
        return out

    def attempts_json(self) -> str:
        return _encoder.encode(self.attempts).decode()


def failure_kind(exc: GatewayError) -> FailureKind | None:
    """The fallback reason an error is, or None for one no other deployment would change
    (a bad request, a refused key)."""
    status = exc.status
    if status == 429:
        return "rate_limit"
    if status == 408 or status == 504:
        return "timeout"
    if status >= 500:
        return "unavailable"
    if status == 400:
        text = exc.body() if exc.code is None else exc.code.encode()
        if b"context_length_exceeded" in text:
            return "context_window"
        if b"content_filter" in text or b"content_policy" in text:
            return "content_policy"
    return None


def retry_after_s(exc: GatewayError) -> float | None:
    """The upstream's `retry-after-ms` or `retry-after` (seconds), if it sent one."""
    for name, value in exc.headers:
        if name == "retry-after-ms":
            try:
                return max(0.0, float(value) / 1000.0)
            except ValueError:
                continue
        if name == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                continue  # an HTTP date: rare from LLM APIs, and not worth the parse
    return None
