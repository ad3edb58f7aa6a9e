"""The Rust hot-path core (rust/src): cache keys, token counting, the SSE stream relay, the
request-log writer and the gRPC server."""

from collections.abc import Callable, Sequence
from typing import Final, Literal, TypedDict, final

__version__: Final[str]

def cache_key(body: bytes, namespace: str = "") -> str:
    """xxh3-128 (32 lowercase hex chars) of `namespace` and the canonical form of a JSON body.

    Key order, whitespace, number spelling (`1`, `1.0`, `1e0`) and string escapes do not
    matter; the top-level fields `stream`, `stream_options`, `user`, `metadata` and any
    `x_llm_proxy*` key are left out. Array order and every other value count. The namespace is
    length-prefixed, so two namespaces never share a key.

    Raises ValueError ("invalid JSON at byte N: ...") when `body` is not JSON, or when it is
    not a JSON object.
    """

def canonical_json(body: bytes) -> bytes:
    """The canonical bytes `cache_key` hashes (without the namespace).

    Objects have sorted keys (a repeated key keeps its last value) and no whitespace; strings
    are escaped like `json.dumps(ensure_ascii=False)`; numbers are spelt by exact decimal value:
    integral values of up to 40 digits as integers, values with up to 40 decimals as `i.f`,
    others as `<digits>e<exp>`. Raises ValueError like `cache_key`.
    """

def count_tokens(text: str, encoding: str = "o200k_base") -> int:
    """Exact token count of `text` in `encoding` ("o200k_base" or "cl100k_base"), offline.

    Special-token text such as `<|endoftext|>` counts as ordinary text. Raises ValueError
    listing the known encodings when `encoding` is unknown.
    """

def openai_finish_reason(stop_reason: str | None = None) -> str:
    """OpenAI's finish_reason for an Anthropic stop_reason (unknown reasons read as "stop")."""

def encoding_loaded(encoding: str) -> bool:
    """Whether `encoding`'s tables are loaded in this process: its first count loads them
    (o200k_base: ~130 ms and ~45 MiB). Raises ValueError when `encoding` is unknown."""

def encoding_for_model(model: str) -> Literal["o200k_base", "cl100k_base"]:
    """The encoding OpenAI uses for `model`; provider prefixes ("openai/"), "ft:" names and
    Azure spellings ("gpt-35-turbo") are understood; unknown models get "o200k_base"."""

def count_chat_tokens(messages: bytes, model: str) -> int:
    """Prompt tokens of a JSON `messages` array, as OpenAI bills them.

    3 per message, the tokens of every string field (+1 per `name`), 3 to prime the reply.
    A list `content` counts the `text` of its `type: "text"` parts; `tool_calls` and
    `function_call` count the function name and arguments. Raises ValueError (with the byte
    offset for invalid JSON) when `messages` is not a JSON array of objects.
    """

class SseError(ValueError):
    """The upstream's event stream cannot be relayed: an event over `max_event_bytes`, or
    `feed()` after `finish()`."""

@final
class StreamSummary:
    """What a relayed stream said (frozen)."""

    @property
    def text(self) -> str:
        """The assistant text (choice 0 for OpenAI; text blocks for Anthropic)."""
    @property
    def tool_calls_json(self) -> str:
        """`[{"id", "type": "function", "function": {"name", "arguments"}}]`; "[]" when none."""
    @property
    def finish_reason(self) -> str | None:
        """OpenAI terms; Anthropic's end_turn/stop_sequence -> "stop", max_tokens -> "length",
        tool_use -> "tool_calls", refusal -> "content_filter"."""
    @property
    def prompt_tokens(self) -> int:
        """Upstream's count (Anthropic: input + cache creation + cache read tokens); 0 when
        `usage_counted`, since the relay never sees the prompt."""
    @property
    def completion_tokens(self) -> int:
        """Upstream's count, or the tokenizer's count of text + tool arguments when
        `usage_counted`."""
    @property
    def usage_counted(self) -> bool:
        """True when the upstream sent no usage and the counts come from the tokenizer for the
        relay's `model`."""
    @property
    def events(self) -> int:
        """Number of events that carried data (including `[DONE]` and pings)."""
    @property
    def done(self) -> bool:
        """`data: [DONE]` (OpenAI) or `message_stop` (Anthropic) was seen."""
    @property
    def error(self) -> str | None:
        """The first problem seen, or None: an upstream error event, invalid JSON or UTF-8 in
        a data line, an oversize event, or the stream ending mid-event."""

@final
class SseRelay:
    """Relays an upstream Server-Sent Events stream event by event and summarizes it.

    Events are returned as the exact upstream bytes (LF, CRLF or CR line endings, terminating
    blank line included), however the stream is split. An event whose final CR is the last
    byte seen so far is held until the next byte shows whether an LF follows, unless the
    stream has already used bare CR line endings.

    Content problems (invalid JSON or UTF-8 in a data line, an upstream error event) never
    raise: the events are still returned and the problem lands in `StreamSummary.error`.
    """

    def __init__(
        self,
        dialect: Literal["openai", "anthropic"] = "openai",
        keep_comments: bool = False,
        max_event_bytes: int = 1048576,
        model: str = "",
    ) -> None:
        """`model` picks the tokenizer used when the upstream sends no usage.

        Raises ValueError for an unknown dialect or a non-positive `max_event_bytes`.
        """
    def feed(self, chunk: bytes) -> list[bytes]:
        """The events completed by `chunk`, in order, as the upstream sent them.

        Events made only of comment lines (keep-alives) are returned only with
        `keep_comments=True`. Raises SseError when an event grows past `max_event_bytes`: that
        event is dropped up to its closing blank line and recorded in the summary's `error`;
        events completed earlier in the same chunk are lost with the exception; bytes after the
        oversize event are read by the next call, so the relay stays usable. Raises SseError
        after `finish()`.
        """
    @property
    def error(self) -> str | None:
        """The first content problem seen so far (what the summary's `error` will say)."""
    def finish(self) -> StreamSummary:
        """Ends the stream and returns its summary; later calls return the same summary.
        Bytes of an event that never got its closing blank line are reported in `error`."""

@final
class MessagesStream:
    """Translates one OpenAI chat completions stream to Anthropic's Messages events.

    `message_start` and `ping`, per content block `content_block_start`, deltas (`text_delta`,
    or `input_json_delta` for a tool call's arguments) and `content_block_stop`, then
    `message_delta` (stop reason, usage) and `message_stop`. Events after `[DONE]` are ignored.
    """

    def __init__(self, model: str) -> None:
        """`model`: the name the client asked for, reported in `message_start`."""
    def feed(self, item: bytes) -> bytes:
        """The Anthropic events for one item (one or more complete OpenAI SSE events, LF,
        CRLF or CR framed); ValueError when an event's data is not a chat completion chunk."""
    def finish(self) -> bytes:
        """The closing events (once; after `[DONE]`, or when the stream ended without it)."""
    @property
    def started(self) -> bool: ...
    @property
    def finished(self) -> bool: ...

def redact(text: str) -> str:
    """Mask API keys, Luhn-valid card numbers, IBANs, e-mail addresses and phone numbers
    (`[API_KEY]`, `[CARD]`, `[IBAN]`, `[EMAIL]`, `[PHONE]`): what `logging.content: redacted`
    stores, the same output as the Python detectors it replaces."""

class LogWriterStats(TypedDict):
    written: int  # records written to the store (spooled ones again when replayed)
    spooled: int  # records appended to the spool
    spool_pending: int  # records waiting in this process's spool file
    dropped: int  # records lost: queue full, writer closed, spool unwritable
    dead_lettered: int  # records no store would take, set aside in the dead-letter file
    store_errors: int  # failed store calls (connect, write, purge; timeouts included)
    store_up: bool
    queue_bytes: int  # bytes of the records queued
    queue_len: int
    purged: int  # records removed by retention

@final
class LogWriter:
    """The request-log writer: a Rust thread (no GIL) gives each record its content
    (policy, redaction, secret mask), makes its text safe for the store (NUL as `\\u0000`),
    and writes batches to SQLite or PostgreSQL.

    While the store is down or hangs (every store call has `store_timeout_s` as its deadline),
    batches go to the spool (`spool_path`, JSON lines, 0600) and are replayed in order once it
    answers. A record the store rejects is isolated and set aside in
    `<spool_path>-dead-letter.jsonl`. The store's schema must exist (Python creates it); the
    SQLite file is created 0600 if missing.
    """

    def __init__(
        self,
        store: str,
        spool_path: str,
        *,
        queue_max_bytes: int = 268435456,
        batch_size: int = 500,
        max_batch_delay_s: float = 0.025,
        store_timeout_s: float = 2.0,
        retry_interval_s: float = 1.0,
        retention_days: float = 30.0,
        max_rows: int | None = None,
        purge_interval_s: float = 300.0,
        content: Literal["full", "redacted", "none"] = "full",
        secrets: Sequence[str] = (),
        id_prefix: str = "",
        priority: Literal["normal", "idle"] = "normal",
    ) -> None:
        """Start the thread. `store` is `sqlite:///PATH`, a file path or `postgresql://...`;
        `id_prefix` is the process's record-id prefix (`calls.PROCESS_PREFIX`). The writer
        wakes at `batch_size` queued records or after `max_batch_delay_s` and writes what waits
        in one store call (up to 4 x `batch_size` when it has fallen behind). Retention
        (`retention_days`, `max_rows`) runs at start and every `purge_interval_s`. Raises
        ValueError for a bad setting or URL (not for a store that is down)."""
    def submit(
        self, record: bytes, prompt: bytes | None = None, answer: bytes | None = None
    ) -> bool:
        """Queue one record without waiting: the msgspec JSON of a `LogRecord`, with `id` ""
        (given here) and its text not yet cleaned, plus an optional `caller_key` (the caller's
        key, masked wherever it appears, never stored).

        The writer sets `content` to its mode, drops prompt/completion/tool_calls under `none`,
        and cleans error_message, prompt, completion and tool_calls as
        `RecordBuilder._clean` did. The loop may leave the content to the writer: `prompt`, the
        request's prompt bytes, fills a null `prompt` (decoded as `decode("utf-8",
        "replace")`); `answer`, a whole answer's body, fills null `completion` and
        `tool_calls` as `_completion_of(_read_answer(answer))` does (tool calls included,
        which the Python reader lost). Both count toward `queue_max_bytes`.

        False if the record was dropped (the queue is at `queue_max_bytes`, or the writer is
        closed): counted. A record that cannot be decoded is accepted here and set aside in the
        dead-letter file by the writer."""
    def flush(self, timeout: float) -> bool:
        """Wait until every record submitted before this call is stored, spooled or counted
        lost; False if `timeout` passed first. Releases the GIL."""
    def close(self, timeout: float) -> bool:
        """Stop taking records, store or spool everything queued, replay the spool if the store
        answers, and stop the thread; False if `timeout` passed first. Releases the GIL."""
    def stats(self) -> LogWriterStats:
        """The counters, read without waiting for the writer."""

@final
class GrpcCall:
    """One gRPC call handed to the loop by `GrpcServer`; answer it exactly once.

    A unary call is answered with `answer` or `fail`; a stream with `start` (with or without
    its first message), `send` (any number) and then `finish` or `fail`. `start`, `send` and
    `fail` return 0 (taken), 1 (the client is reading slower than we write: wait, then send
    the same again) or 2 (the call is over: the client went away or its deadline passed; its
    task is being cancelled).
    Raises RuntimeError when used against its kind or after its end.
    """

    @property
    def id(self) -> int: ...
    @property
    def method(self) -> str:
        """The Gateway method: "ChatCompletion", "StreamChatCompletion", "Completion", ..."""
    @property
    def message(self) -> bytes:
        """The request message, protobuf-encoded."""
    @property
    def metadata(self) -> dict[str, str]:
        """The request's ASCII metadata (binary `-bin` entries are left out; a repeated key
        keeps its last value)."""
    @property
    def timeout(self) -> float | None:
        """Seconds left before the client's deadline when the call arrived."""
    @property
    def open(self) -> bool:
        """Whether the call can still be answered."""
    def answer(self, message: bytes, metadata: list[tuple[str, str]]) -> None: ...
    def fail(self, code: int, message: str, trailers: list[tuple[str, str]]) -> int: ...
    def start(self, metadata: list[tuple[str, str]], first: bytes | None = None) -> int:
        """A stream's initial metadata, with its first message when there is one."""
    def send(self, message: bytes) -> int: ...
    def finish(self) -> None: ...

@final
class GrpcServer:
    """The gRPC server of one worker (tonic on a tokio runtime of its own thread).

    Binds `host:port` with SO_REUSEPORT (OSError when it cannot) and serves llm_proxy.v1.Gateway,
    grpc.health.v1.Health and reflection (v1 and v1alpha). Each call is scheduled on
    `event_loop` as `on_events(events)`: a list of new `GrpcCall`s and of the ids (ints) of
    calls to cancel, in order. A request message over `max_message_bytes` is answered
    RESOURCE_EXHAUSTED; a call past its deadline DEADLINE_EXCEEDED (and cancelled).
    """

    def __init__(
        self,
        host: str,
        port: int,
        event_loop: object,
        on_events: Callable[[list[GrpcCall | int]], object],
        descriptor: bytes,
        max_message_bytes: int,
    ) -> None: ...
    @property
    def port(self) -> int: ...
    @property
    def stopped(self) -> bool:
        """Whether every connection has closed after `drain`."""
    def set_serving(self, serving: bool) -> None:
        """What health checks answer: SERVING or NOT_SERVING."""
    def drain(self) -> None:
        """Stop taking connections and calls (GOAWAY); calls in flight go on."""
    def close(self) -> None:
        """End every connection now and wait for the server's thread."""

def grpc_chat_body(message: bytes, stream: bool) -> bytes | None:
    """The OpenAI JSON body for a serialized (Stream)ChatCompletionRequest of the common shape
    (text messages, sampling fields; no tools, response_format or extra_json), or None: the
    Python translation (llm_proxy.grpc.bodies) then applies and names any error."""

def grpc_chat_response(body: bytes, request_id: str, cache_status: str) -> bytes | None:
    """A serialized ChatCompletionResponse for the upstream's JSON chat answer, or None when
    its shape is unexpected (llm_proxy.grpc.replies then applies and names the problem)."""

def grpc_chat_chunks(
    events: bytes, first: bool, request_id: str, cache_status: str
) -> list[bytes] | None:
    """Serialized StreamChatCompletionResponses for plain OpenAI SSE `data:` events, the first
    carrying `request_id` and `cache_status` when `first`; None when the events are of another
    shape or carry an error (llm_proxy.grpc.replies.ChunkRenderer then renders them)."""
