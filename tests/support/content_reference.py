"""The content policy of the request log in pure Python: what the Rust writer does to a record.

The product hands a record over with its text as it came (`RecordBuilder.build`, then the
recorder's `_hand_over`); the Rust writer fills the prompt and the completion, redacts them
under `redacted`, masks the configured secrets and the caller's own key, and drops the text
under `none`. This is that policy as the Python writer applied it (its `add_content` and
`_clean`), so the writer's rows can be compared with rows written from Python.
"""

from __future__ import annotations

from collections.abc import Iterable

from llm_proxy.calls import Call, Outcome
from llm_proxy.credentials import SecretMask
from llm_proxy.logstore.record import ContentPolicy, LogRecord, _completion_of, _read_answer

from tests.support.redact_reference import redact


class ContentReference:
    """Gives a built record its final text: content policy, redaction, secret masking."""

    def __init__(self, content: ContentPolicy, secrets: Iterable[str]) -> None:
        self.content: ContentPolicy = content
        self.mask = SecretMask(secrets)

    def clean(self, text: str, caller_key: str | None) -> str:
        """`text` as stored: redacted under `redacted`, secrets and the caller's key masked."""
        if self.content == "redacted":
            text = redact(text)
        return self.mask(text, caller_key)

    def apply(
        self, record: LogRecord, call: Call, outcome: Outcome, caller_key: str | None
    ) -> LogRecord:
        """Fill and clean `record`'s text in place (and return it).

        The error message is always cleaned; the prompt comes from the request's JSON, the
        completion and tool calls from the stream's summary or the whole answer; nothing of
        either is kept under `none`.
        """
        record.content = self.content
        if record.error_message is not None:
            record.error_message = self.clean(record.error_message, caller_key)
        if self.content == "none":
            record.prompt = record.completion = record.tool_calls = None
            return record
        record.prompt = call.prompt_json.decode("utf-8", "replace")
        summary = outcome.summary
        if summary is not None:
            record.completion = summary.text
            tools = summary.tool_calls_json
            record.tool_calls = tools if tools != "[]" else None
        elif call.endpoint != "embeddings" and outcome.status < 400:
            if call.stream:
                record.completion = ""
            else:
                answer = _read_answer(outcome.response_body)
                record.completion, record.tool_calls = _completion_of(answer)
        for name in ("prompt", "completion", "tool_calls"):
            value = getattr(record, name)
            if value is not None:
                setattr(record, name, self.clean(value, caller_key))
        return record


def as_stored(record: LogRecord) -> LogRecord:
    """A plain LogRecord (a `Handover` without its `caller_key`), as the stores take it."""
    return LogRecord(**{name: getattr(record, name) for name in LogRecord.__struct_fields__})
