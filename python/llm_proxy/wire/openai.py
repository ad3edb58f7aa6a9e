"""OpenAI's wire format: the parts of requests and answers the gateway reads.

Structs hold only what some stage needs; unknown fields are ignored, and where a stage must
pass a value on exactly as the upstream wrote it, the field is `msgspec.Raw`.
"""

from __future__ import annotations

import msgspec

NULL = msgspec.Raw(b"null")

# -- requests -----------------------------------------------------------------------------


class StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class ChatHead(msgspec.Struct):
    """The parts of a chat request the gateway reads; the rest is forwarded untouched."""

    model: str
    messages: msgspec.Raw
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    # Read for the limits stage's reservation; any number passes (the upstream judges it).
    max_tokens: float | None = None
    max_completion_tokens: float | None = None


class CompletionHead(msgspec.Struct):
    model: str
    prompt: msgspec.Raw
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: float | None = None


class EmbeddingHead(msgspec.Struct):
    model: str
    input: msgspec.Raw


# -- answers: whole bodies and stream chunks -------------------------------------------------


class PromptTokensDetails(msgspec.Struct):
    cached_tokens: int = 0


class Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    # Read with the rest of the usage, so the log stage never decodes the answer again.
    prompt_tokens_details: PromptTokensDetails | None = None


class ResponseHead(msgspec.Struct):
    """What the gateway reads of an upstream's whole answer on the hot path: its usage."""

    usage: Usage | None = None


class Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class ToolCall(msgspec.Struct):
    index: int = 0
    id: str | None = None
    type: str | None = None
    function: Function | None = None


class Message(msgspec.Struct):
    """A chat message (`message` of a whole answer) or its part (`delta` of a chunk)."""

    role: str | None = None
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None


class Choice(msgspec.Struct):
    """A choice of a chat answer (`message`), a chat chunk (`delta`) or a completion (`text`)."""

    index: int = 0
    message: Message | None = None
    delta: Message | None = None
    text: str | None = None
    finish_reason: str | None = None
    logprobs: msgspec.Raw = NULL


class Completion(msgspec.Struct):
    """A whole chat or text completion, or one stream chunk (`chat.completion.chunk`)."""

    id: str = ""
    object: str = ""
    created: int = 0
    model: str = ""
    system_fingerprint: str | None = None
    choices: list[Choice] = []
    # Raw: a cache replay hands the upstream's usage on exactly as it came.
    usage: msgspec.Raw = NULL
    # Set on a chunk that reports a failure mid-stream.
    error: msgspec.Raw | None = None


class Embedding(msgspec.Struct):
    index: int = 0
    # A list of floats, or base64 little-endian float32 with encoding_format=base64.
    embedding: list[float] | str = []


class EmbeddingList(msgspec.Struct):
    model: str = ""
    data: list[Embedding] = []
    usage: Usage | None = None


class AnswerMessage(msgspec.Struct):
    content: str | None = None
    # Raw: the log stores the tool calls exactly as the upstream wrote them. Not
    # `Raw | None`: msgspec reads that union as "null only".
    tool_calls: msgspec.Raw = NULL


class AnswerChoice(msgspec.Struct):
    message: AnswerMessage | None = None
    text: str | None = None


class AnswerContent(msgspec.Struct):
    """What the log keeps of a whole answer: its text, its tool calls and its usage."""

    choices: list[AnswerChoice] = []
    usage: Usage | None = None


# -- errors -------------------------------------------------------------------------------


class ErrorBody(msgspec.Struct):
    message: str | None = None
    type: str | None = None
    param: str | None = None
    code: str | int | None = None


class ErrorEnvelope(msgspec.Struct):
    """`{"error": {...}}`, or the bare string some servers send as `error`."""

    error: ErrorBody | str


def error_message(envelope: ErrorEnvelope) -> str | None:
    error = envelope.error
    return error if isinstance(error, str) else error.message


completion_decoder = msgspec.json.Decoder(Completion)
usage_decoder = msgspec.json.Decoder(Usage)
embeddings_decoder = msgspec.json.Decoder(EmbeddingList)
answer_decoder = msgspec.json.Decoder(AnswerContent)
error_decoder = msgspec.json.Decoder(ErrorEnvelope)
