"""The internal call every front door produces and every stage reads."""

from __future__ import annotations

import itertools
import math
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import msgspec

from .errors import bad_request
from .wire.openai import (
    ChatHead,
    CompletionHead,
    EmbeddingHead,
    PromptTokensDetails,
    ResponseHead,
    Usage,
)

if TYPE_CHECKING:
    from .limits.stage import Ticket
    from .observe.tracing import CallSpan
    from .routing.attempts import RouteState

__all__ = ["PromptTokensDetails", "ResponseHead", "Usage"]

Endpoint = Literal["chat", "completions", "embeddings"]
# The API the client speaks: OpenAI's, Anthropic's Messages, or OpenAI's Responses. A call
# from the latter two carries a chat body (`body`) translated from the client's
# (`client_body`), which a provider speaking the client's API forwards instead.
ClientWire = Literal["openai", "anthropic", "responses"]
_WIRE_ENDPOINTS = {"anthropic": "messages", "responses": "responses"}


class Headers(Protocol):
    """Request headers or gRPC metadata, looked up by lowercase name."""

    def get(self, key: str, default: Any = None, /) -> Any: ...


_NO_HEADERS: dict[str, str] = {}


def _new_process_prefix() -> None:
    global PROCESS_PREFIX
    PROCESS_PREFIX = os.urandom(8).hex()


# 64 random bits per process (drawn again in each forked worker) make ids unique across
# processes and hosts; a counter makes them unique within one.
PROCESS_PREFIX = ""
_new_process_prefix()
os.register_at_fork(after_in_child=_new_process_prefix)
_request_ids = itertools.count(1)


def new_request_id() -> str:
    """A request id for a client that sent none: 32 hex digits, far cheaper than uuid4."""
    return f"{PROCESS_PREFIX}{next(_request_ids):016x}"


@dataclass(slots=True)
class Deployment:
    """Where a model name is served: a provider and the upstream's name for the model."""

    name: str
    provider: str
    model: str


@dataclass(slots=True)
class Call:
    """One request on its way through the pipeline."""

    request_id: str
    door: Literal["http", "grpc"]
    endpoint: Endpoint
    body: bytes
    model: str
    stream: bool = False
    include_usage: bool = False
    # The raw JSON of `messages` (chat) or `prompt` / `input`, for token counting.
    prompt_json: bytes = b""
    # Client headers or gRPC metadata, lowercase names.
    headers: Headers = field(default_factory=lambda: _NO_HEADERS)
    # Absolute time.monotonic() deadline from the client (gRPC), if any.
    deadline: float | None = None
    started: float = field(default_factory=time.perf_counter)
    upstream_s: float = 0.0
    first_token_s: float | None = None
    deployment: Deployment | None = None
    cache_status: str = "off"
    cache_age_s: float | None = None
    key_id: str | None = None
    team: str | None = None
    # W3C trace context for the upstream request (set only when tracing is on).
    trace_headers: list[tuple[str, str]] | None = None
    # The call's trace span, when tracing is on and the call is sampled.
    span: CallSpan | None = None
    # Set when the gateway itself cut the call short (it was shutting down).
    cut_by_shutdown: bool = False
    wire: ClientWire = "openai"
    client_body: bytes = b""
    # The door forwards `client_body` (the model's provider speaks the client's API): the
    # answer is in the client's format, not OpenAI's, so it is not cached.
    passthrough: bool = False
    # A model group's routing (attempts, fallback); None for a one-deployment model.
    routing: RouteState | None = None
    # The output tokens the client allows (max_tokens / max_completion_tokens), if it said.
    max_tokens: int | None = None
    # What the limits stage reserved (settled when the call ends), and the x-ratelimit-*
    # headers of the answer.
    limits: Ticket | None = None
    rate_headers: list[tuple[str, str]] | None = None

    @property
    def api_endpoint(self) -> str:
        """The endpoint as the client called it (`messages`, `responses`), for the log."""
        return self.endpoint if self.wire == "openai" else _WIRE_ENDPOINTS[self.wire]

    def remaining_s(self, limit: float) -> float:
        """The time the upstream may take: the provider's limit, bounded by the deadline."""
        if self.deadline is None:
            return limit
        return max(0.0, min(limit, self.deadline - time.monotonic()))

    def overhead_ms(self) -> float:
        return max(0.0, (time.perf_counter() - self.started - self.upstream_s) * 1000.0)


SHUTDOWN_MESSAGE = "the gateway shut down before the answer finished"


def cancelled_outcome(call: Call) -> Outcome:
    """How a cancelled call ended: its client left, or the gateway shut down."""
    if call.cut_by_shutdown:
        return Outcome(503, "shutdown", SHUTDOWN_MESSAGE)
    return Outcome(499, "client_closed", "the client left before the answer")


@dataclass(slots=True)
class Reply:
    """A whole (non-streamed) answer in OpenAI format."""

    body: bytes
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    usage: Usage | None = None


class StreamSummary(Protocol):
    """What a finished stream amounts to (the Rust relay's summary has this shape)."""

    @property
    def text(self) -> str: ...
    @property
    def tool_calls_json(self) -> str: ...
    @property
    def finish_reason(self) -> str | None: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def usage_counted(self) -> bool: ...
    @property
    def done(self) -> bool: ...
    @property
    def error(self) -> str | None: ...


class EventStream(Protocol):
    """A streamed answer: complete OpenAI SSE events, each ready to write to the client."""

    headers: list[tuple[str, str]]

    def __aiter__(self) -> AsyncIterator[bytes]: ...
    def summary(self) -> StreamSummary | None: ...
    async def aclose(self) -> None: ...


@dataclass(slots=True, frozen=True)
class SimpleSummary:
    """A StreamSummary for streams the gateway produces itself (mock provider, cache replay)."""

    text: str = ""
    tool_calls_json: str = "[]"
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_counted: bool = False
    done: bool = False
    error: str | None = None


@dataclass(slots=True)
class Outcome:
    """How a call ended, for the log and metrics stage."""

    status: int
    error_type: str | None = None
    error_message: str | None = None
    usage: Usage | None = None
    response_body: bytes | None = None
    summary: StreamSummary | None = None


_HEADS: dict[Endpoint, msgspec.json.Decoder[Any]] = {
    "chat": msgspec.json.Decoder(ChatHead),
    "completions": msgspec.json.Decoder(CompletionHead),
    "embeddings": msgspec.json.Decoder(EmbeddingHead),
}
# A model name longer than this is refused: it would be echoed and stored.
MAX_MODEL_NAME = 256


def shown(text: str, limit: int = 200) -> str:
    """A client-supplied string as an error message may quote it: cut to `limit` characters."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


_AT_FIELD = re.compile(r"at `\$\.([A-Za-z_]\w*)")
_MISSING_FIELD = re.compile(r"missing required field `(\w+)`")
_EMPTY_ARRAY = re.compile(rb"\A\[\s*\]\Z")


def decode_call(
    endpoint: Endpoint,
    body: bytes,
    *,
    door: Literal["http", "grpc"],
    request_id: str,
    headers: Headers,
) -> Call:
    """Build a Call from an OpenAI-format body, or raise a 400 naming the bad field."""
    try:
        head = _HEADS[endpoint].decode(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if text.startswith("Expected `object`"):
            raise bad_request("the request body must be a JSON object") from None
        m = _MISSING_FIELD.search(text) or _AT_FIELD.search(text)
        param = m.group(1) if m else None
        raise bad_request(f"invalid request: {text}", param=param) from None
    except msgspec.DecodeError as exc:
        raise bad_request(f"could not parse the JSON body of your request: {exc}") from None
    except UnicodeDecodeError as exc:
        raise bad_request(f"the request body is not valid UTF-8 (byte {exc.start})") from None
    except RecursionError:
        raise bad_request("the request body is nested too deeply") from None
    if not body.isascii():
        # msgspec checks the UTF-8 of the fields it decodes, not of the raw parts it keeps.
        try:
            body.decode()
        except UnicodeDecodeError as exc:
            raise bad_request(f"the request body is not valid UTF-8 (byte {exc.start})") from None
    if len(head.model) > MAX_MODEL_NAME:
        raise bad_request(
            f"`model` is {len(head.model)} characters long; the limit is {MAX_MODEL_NAME}",
            param="model",
        )
    if isinstance(head, ChatHead):
        prompt = bytes(head.messages)
        if not prompt.startswith(b"["):
            raise bad_request("`messages` must be an array", param="messages")
        if _EMPTY_ARRAY.match(prompt):
            raise bad_request("`messages` must contain at least one message", param="messages")
    elif isinstance(head, CompletionHead):
        prompt = bytes(head.prompt)
    else:
        prompt = bytes(head.input)
    options = getattr(head, "stream_options", None)
    # By position, in field order: with keywords, making a Call cost twice as much.
    call = Call(
        request_id,
        door,
        endpoint,
        body,
        head.model,
        bool(getattr(head, "stream", None)),
        bool(options and options.include_usage),
        prompt,
        headers,
    )
    cap = getattr(head, "max_completion_tokens", None) or getattr(head, "max_tokens", None)
    if cap is not None and 0 <= cap < 1e9:
        call.max_tokens = math.ceil(cap)
    return call
