"""The log record of one call, and how it is built from a finished Call (in the writer)."""

from __future__ import annotations

import itertools
from typing import Literal

import msgspec

from .. import calls
from ..calls import Call, Outcome
from ..pricing import PriceTable
from ..tokens import count_prompt as _count_prompt
from ..tokens import count_text as _count_text
from ..wire.openai import NULL, AnswerContent, answer_decoder

ContentPolicy = Literal["full", "redacted", "none"]


class LogRecord(msgspec.Struct, kw_only=True):
    """One call as stored. Field order is the column order of the stores."""

    id: str
    ts: float  # when the call arrived, Unix seconds
    request_id: str
    door: str
    key_id: str | None = None
    team: str | None = None
    model: str
    provider: str | None = None
    provider_model: str | None = None
    endpoint: str
    stream: bool = False
    status: int
    error_type: str | None = None
    error_message: str | None = None
    latency_ms: float
    upstream_ms: float
    overhead_ms: float
    ttft_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    tokens_counted: bool = False
    cost_usd: float | None = None
    cache_status: str = "off"
    content: str = "none"
    prompt: str | None = None
    completion: str | None = None
    tool_calls: str | None = None
    # A model group's attempts, JSON: [{"deployment", "status", "latency_ms", "error"?}, ...]
    attempts: str | None = None


COLUMNS: tuple[str, ...] = LogRecord.__struct_fields__


class Handover(LogRecord, kw_only=True):
    """A record as the loop hands it to the writer: with the caller's key, which the writer
    masks wherever it appears in the record's text and never stores."""

    caller_key: str | None = None


def as_row(record: LogRecord) -> tuple[object, ...]:
    return msgspec.structs.astuple(record)


# Record ids sort by time (cheap appends to the store's unique index) and are unique across
# processes and hosts (a random per-process part).
_sequence = itertools.count()


def new_id(ts: float) -> str:
    prefix = calls.PROCESS_PREFIX[:10]
    return f"{int(ts * 1_000_000):014x}{prefix}{next(_sequence) & 0xFFFFFF:06x}"


# -- reading what the upstream answered -----------------------------------------------------


_any = msgspec.json.Decoder()


def _read_answer(body: bytes | None) -> AnswerContent | None:
    if not body:
        return None
    try:
        return answer_decoder.decode(body)
    except msgspec.DecodeError:
        return None


def _completion_of(answer: AnswerContent | None) -> tuple[str, str | None]:
    if answer is None:
        return "", None
    texts: list[str] = []
    tools: list[bytes] = []
    for choice in answer.choices:
        if choice.message is not None:
            if choice.message.content:
                texts.append(choice.message.content)
            if choice.message.tool_calls != NULL:
                tools.append(bytes(choice.message.tool_calls))
        elif choice.text:
            texts.append(choice.text)
    tool_calls = None
    if tools:
        tool_calls = tools[0].decode() if len(tools) == 1 else "[" + b",".join(tools).decode() + "]"
    return "\n".join(texts), tool_calls


class RecordBuilder:
    """Turns (call, outcome, timing) into a record: tokens, cost, timings.

    The text is left as it came: the writer applies the content policy (redaction, secret
    masking) on its own thread.
    """

    def __init__(self, prices: PriceTable, content: ContentPolicy) -> None:
        self.prices = prices
        self.content: ContentPolicy = content

    def build(
        self, call: Call, outcome: Outcome, ended: float, latency_s: float, caller_key: object
    ) -> Handover:
        """The record of a finished call, without its prompt and answer text."""
        deployment = call.deployment
        count_model = deployment.model if deployment is not None else call.model
        summary = outcome.summary
        answer: AnswerContent | None = None

        prompt_tokens: int | None = None
        completion_tokens: int | None = None
        cached = 0
        counted = False
        if outcome.usage is not None:
            prompt_tokens = outcome.usage.prompt_tokens
            completion_tokens = outcome.usage.completion_tokens
            details = outcome.usage.prompt_tokens_details
            if details is not None:
                cached = details.cached_tokens
        elif (
            summary is not None
            and not summary.usage_counted
            and (summary.prompt_tokens or summary.completion_tokens)
        ):
            prompt_tokens = summary.prompt_tokens
            completion_tokens = summary.completion_tokens
        elif outcome.status < 400 or (summary is not None and summary.text):
            counted = True
            try:
                prompt_tokens = _count_prompt(call, count_model)
                if summary is not None:
                    completion_tokens = summary.completion_tokens or _count_text(
                        summary.text, count_model
                    )
                elif call.endpoint == "embeddings":
                    completion_tokens = 0
                else:
                    answer = _read_answer(outcome.response_body)
                    completion_tokens = _count_text(_completion_of(answer)[0], count_model)
            except Exception:
                prompt_tokens = completion_tokens = None
                counted = False

        total_tokens = None
        cost = None
        if prompt_tokens is not None and completion_tokens is not None:
            total_tokens = prompt_tokens + completion_tokens
            if call.cache_status == "hit":
                cost = 0.0  # answered from the cache: nothing was spent upstream
            else:
                cost = self.prices.cost(
                    (count_model, call.model), prompt_tokens, completion_tokens, cached
                )

        upstream_ms = call.upstream_s * 1000.0
        latency_ms = latency_s * 1000.0
        # The fields every call has by keyword; the others only where they differ from their
        # defaults (each keyword costs time on the event loop).
        record = Handover(
            id="",  # given by the writer
            ts=ended - latency_s,
            request_id=call.request_id,
            door=call.door,
            model=call.model,
            endpoint=call.api_endpoint,
            status=outcome.status,
            latency_ms=latency_ms,
            upstream_ms=upstream_ms,
            overhead_ms=max(0.0, latency_ms - upstream_ms),
            content=self.content,
        )
        if deployment is not None:
            record.provider = deployment.provider
            record.provider_model = deployment.model
        if call.key_id is not None:
            record.key_id = call.key_id
        if call.team is not None:
            record.team = call.team
        if call.stream:
            record.stream = True
        if outcome.error_type is not None:
            record.error_type = outcome.error_type
        if outcome.error_message is not None:
            record.error_message = outcome.error_message
        if caller_key:
            record.caller_key = str(caller_key)
        if call.first_token_s is not None:
            record.ttft_ms = call.first_token_s * 1000.0
        if prompt_tokens is not None or completion_tokens is not None:
            record.prompt_tokens = prompt_tokens
            record.completion_tokens = completion_tokens
            record.total_tokens = total_tokens
            record.tokens_counted = counted
            record.cost_usd = cost
        if call.cache_status != "off":
            record.cache_status = call.cache_status
        if call.routing is not None and call.routing.attempts:
            record.attempts = call.routing.attempts_json()
        return record
