//! The stream relay: a Server-Sent Events parser that takes an upstream's bytes as they arrive,
//! hands back each complete event exactly as it was sent, and accumulates what the log and the
//! cache need (text, tool calls, finish reason, usage) from OpenAI or Anthropic stream events.
//!
//! Events follow the SSE spec: lines end with LF, CRLF or CR; an event ends with a blank line and
//! is returned including that line's terminator. A CR that ends the buffered bytes could be the
//! first half of a CRLF, so an event whose final CR is the last byte seen is held until the next
//! byte shows whether an LF follows (once the stream has shown it uses bare CRs, it is not held).
//! That keeps the returned events the same however the stream is split.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::tokens::{byte_offset, reason_without_position, Encoding};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
}

impl Dialect {
    pub const NAMES: [&'static str; 2] = ["openai", "anthropic"];

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "openai" => Some(Self::OpenAi),
            "anthropic" => Some(Self::Anthropic),
            _ => None,
        }
    }
}

/// Why `feed` refused the bytes. Content problems (bad JSON, bad UTF-8, an upstream error event)
/// are not errors of `feed`; they end up in [`Summary::error`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    /// An event grew past the limit; it is dropped up to its closing blank line.
    Oversize { limit: usize },
    /// `feed` was called after `finish`.
    Finished,
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Oversize { limit } => write!(
                f,
                "upstream event larger than max_event_bytes ({limit} bytes); it was dropped"
            ),
            Self::Finished => write!(f, "feed() called after finish()"),
        }
    }
}

impl std::error::Error for SseError {}

/// What a finished stream said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub text: String,
    /// OpenAI-shaped `[{"id","type":"function","function":{"name","arguments"}}]`.
    pub tool_calls_json: String,
    pub finish_reason: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// True when the upstream sent no usage and the counts come from the tokenizer
    /// (completion = text + tool arguments; prompt = 0, as the prompt is not seen here).
    pub usage_counted: bool,
    /// Number of events that carried data (including `[DONE]` and pings).
    pub events: u64,
    /// `[DONE]` (OpenAI) or `message_stop` (Anthropic) was seen.
    pub done: bool,
    /// The first problem seen, if any.
    pub error: Option<String>,
}

#[derive(Debug, Default)]
struct ToolCall {
    /// OpenAI's `tool_calls[].index`, or Anthropic's content block index.
    index: u64,
    id: String,
    name: String,
    arguments: String,
    /// Anthropic's `content_block.input`, used when no `input_json_delta` came.
    initial_input: Option<String>,
}

/// The fields of the event being read.
#[derive(Debug, Default)]
struct PendingEvent {
    data: Vec<u8>,
    has_data: bool,
    name: Vec<u8>,
    /// Any line that is not a comment (data, event, id, retry or unknown fields).
    has_fields: bool,
}

impl PendingEvent {
    fn clear(&mut self) {
        self.data.clear();
        self.name.clear();
        self.has_data = false;
        self.has_fields = false;
    }

    fn line(&mut self, line: &[u8]) {
        if line.first() == Some(&b':') {
            return;
        }
        self.has_fields = true;
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.name.clear();
                self.name.extend_from_slice(value);
            }
            _ => {}
        }
    }
}

/// What the stream has said so far.
#[derive(Debug, Default)]
struct Accumulated {
    text: String,
    tools: Vec<ToolCall>,
    finish_reason: Option<String>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    events: u64,
    done: bool,
    error: Option<String>,
}

impl Accumulated {
    fn fail(&mut self, message: impl FnOnce() -> String) {
        if self.error.is_none() {
            self.error = Some(message());
        }
    }

    fn tool(&mut self, index: u64) -> &mut ToolCall {
        match self.tools.iter().position(|t| t.index == index) {
            Some(i) => &mut self.tools[i],
            None => {
                self.tools.push(ToolCall {
                    index,
                    ..ToolCall::default()
                });
                self.tools.last_mut().expect("just pushed")
            }
        }
    }

    fn data_event(&mut self, dialect: Dialect, data: &[u8], name: &[u8]) {
        self.events += 1;
        let n = self.events;
        if std::str::from_utf8(data).is_err() {
            self.fail(|| format!("invalid UTF-8 in the data of event {n}"));
            return;
        }
        let result = match dialect {
            Dialect::OpenAi => {
                if data.trim_ascii() == b"[DONE]" {
                    self.done = true;
                    return;
                }
                serde_json::from_slice(data).map(|chunk| self.openai(chunk))
            }
            Dialect::Anthropic => serde_json::from_slice(data).map(|ev| self.anthropic(ev, name)),
        };
        if let Err(e) = result {
            let offset = byte_offset(data, e.line(), e.column());
            let reason = reason_without_position(&e);
            let what = if e.is_data() {
                "unexpected JSON shape"
            } else {
                "invalid JSON"
            };
            self.fail(|| format!("{what} in the data of event {n} at byte {offset}: {reason}"));
        }
    }

    fn openai(&mut self, chunk: OpenAiChunk<'_>) {
        if let Some(error) = chunk.error {
            self.fail(|| format!("upstream error: {}", error.describe()));
        }
        for choice in chunk.choices.unwrap_or_default() {
            if choice.index.unwrap_or(0) != 0 {
                continue;
            }
            if let Some(text) = choice.text {
                self.text.push_str(&text);
            }
            if let Some(delta) = choice.delta {
                if let Some(content) = delta.content {
                    self.text.push_str(&content);
                }
                for call in delta.tool_calls.unwrap_or_default() {
                    let tool = self.tool(call.index.unwrap_or(0));
                    if let Some(id) = call.id.filter(|id| !id.is_empty()) {
                        tool.id = id.into_owned();
                    }
                    if let Some(function) = call.function {
                        if let Some(name) = function.name {
                            tool.name.push_str(&name);
                        }
                        if let Some(arguments) = function.arguments {
                            tool.arguments.push_str(&arguments);
                        }
                    }
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(reason.into_owned());
            }
        }
        if let Some(usage) = chunk.usage {
            self.prompt_tokens = Some(usage.prompt_tokens.unwrap_or(0));
            self.completion_tokens = Some(usage.completion_tokens.unwrap_or(0));
        }
    }

    fn anthropic(&mut self, event: AnthropicEvent<'_>, name: &[u8]) {
        let kind: &[u8] = match &event.kind {
            Some(kind) => kind.as_bytes(),
            None => name,
        };
        match kind {
            b"message_start" => {
                if let Some(usage) = event.message.and_then(|m| m.usage) {
                    self.anthropic_usage(&usage);
                }
            }
            b"content_block_start" => {
                let Some(block) = event.content_block else {
                    return;
                };
                match block.kind.as_deref() {
                    Some("text") => self.text.push_str(block.text.as_deref().unwrap_or("")),
                    Some("tool_use") => {
                        let tool = self.tool(event.index.unwrap_or(0));
                        tool.id = block.id.unwrap_or_default().into_owned();
                        tool.name = block.name.unwrap_or_default().into_owned();
                        tool.initial_input = block.input.map(|raw| raw.get().to_owned());
                    }
                    _ => {}
                }
            }
            b"content_block_delta" => {
                let Some(delta) = event.delta else {
                    return;
                };
                match delta.kind.as_deref() {
                    Some("text_delta") => self.text.push_str(delta.text.as_deref().unwrap_or("")),
                    Some("input_json_delta") => {
                        let partial = delta.partial_json.unwrap_or_default();
                        self.tool(event.index.unwrap_or(0))
                            .arguments
                            .push_str(&partial);
                    }
                    _ => {}
                }
            }
            b"message_delta" => {
                if let Some(reason) = event.delta.and_then(|d| d.stop_reason) {
                    self.finish_reason = Some(openai_finish_reason(&reason).to_owned());
                }
                if let Some(usage) = event.usage {
                    self.anthropic_usage(&usage);
                }
            }
            b"message_stop" => self.done = true,
            b"error" => {
                let description = match event.error {
                    Some(error) => error.describe(),
                    None => "unknown error".to_owned(),
                };
                self.fail(|| format!("upstream error: {description}"));
            }
            _ => {}
        }
    }

    fn anthropic_usage(&mut self, usage: &AnthropicUsage) {
        if let Some(input) = usage.input_tokens {
            let cached = usage.cache_creation_input_tokens.unwrap_or(0)
                + usage.cache_read_input_tokens.unwrap_or(0);
            self.prompt_tokens = Some(input + cached);
        }
        if let Some(output) = usage.output_tokens {
            self.completion_tokens = Some(output);
        }
    }

    fn tool_calls_json(&self) -> String {
        let mut out = String::from("[");
        for (i, tool) in self.tools.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let arguments = match &tool.initial_input {
                Some(initial) if tool.arguments.is_empty() => initial.as_str(),
                _ => tool.arguments.as_str(),
            };
            out.push_str("{\"id\":");
            push_json_string(&mut out, &tool.id);
            out.push_str(",\"type\":\"function\",\"function\":{\"name\":");
            push_json_string(&mut out, &tool.name);
            out.push_str(",\"arguments\":");
            push_json_string(&mut out, arguments);
            out.push_str("}}");
        }
        out.push(']');
        out
    }
}

fn push_json_string(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("a str always serializes"));
}

/// Anthropic's `stop_reason` in OpenAI's `finish_reason` terms.
pub fn openai_finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "end_turn" | "stop_sequence" | "pause_turn" => "stop",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // OpenAI clients know only the reasons above; an unknown one reads as a normal stop.
        _ => "stop",
    }
}

/// The streaming state machine; see the module docs.
pub struct SseRelay {
    dialect: Dialect,
    keep_comments: bool,
    max_event_bytes: usize,
    encoding: Encoding,
    /// Bytes of the event being read (from its first byte), not yet returned.
    buf: Vec<u8>,
    /// Offset in `buf` of the event being read.
    event_start: usize,
    /// Offset in `buf` of the line being read.
    line_start: usize,
    /// The stream has ended a line with a CR not followed by LF.
    bare_cr: bool,
    /// Dropping an oversize event up to its closing blank line.
    skipping: bool,
    pending: PendingEvent,
    acc: Accumulated,
    summary: Option<Summary>,
}

impl SseRelay {
    pub fn new(
        dialect: Dialect,
        keep_comments: bool,
        max_event_bytes: usize,
        encoding: Encoding,
    ) -> Self {
        Self {
            dialect,
            keep_comments,
            max_event_bytes,
            encoding,
            buf: Vec::new(),
            event_start: 0,
            line_start: 0,
            bare_cr: false,
            skipping: false,
            pending: PendingEvent::default(),
            acc: Accumulated::default(),
            summary: None,
        }
    }

    /// Takes the next upstream bytes; calls `emit` with each event completed by them, in order.
    ///
    /// On [`SseError::Oversize`] the events completed earlier in the same chunk have already
    /// been passed to `emit`; the bytes after the oversize event stay buffered and are read by
    /// the next call, so the relay can go on.
    pub fn feed<F: FnMut(&[u8])>(&mut self, chunk: &[u8], emit: F) -> Result<(), SseError> {
        if self.summary.is_some() {
            return Err(SseError::Finished);
        }
        self.buf.extend_from_slice(chunk);
        let result = self.scan(emit, false);
        self.compact();
        result
    }

    /// Reads lines from `line_start`; `at_eof` resolves a final CR as a complete terminator.
    fn scan<F: FnMut(&[u8])>(&mut self, mut emit: F, at_eof: bool) -> Result<(), SseError> {
        let mut pos = self.line_start;
        while let Some(rel) = memchr::memchr2(b'\n', b'\r', &self.buf[pos..]) {
            let eol = pos + rel;
            let next = if self.buf[eol] == b'\n' {
                eol + 1
            } else if let Some(&after) = self.buf.get(eol + 1) {
                if after == b'\n' {
                    eol + 2
                } else {
                    self.bare_cr = true;
                    eol + 1
                }
            } else if self.bare_cr || at_eof {
                eol + 1
            } else {
                break;
            };
            self.line_start = next;
            if eol == pos {
                let start = self.event_start;
                self.event_start = next;
                if self.skipping {
                    self.skipping = false;
                } else if next - start > self.max_event_bytes {
                    self.pending.clear();
                    return Err(self.oversize());
                } else {
                    self.dispatch(&mut emit, start, next);
                }
            } else if !self.skipping {
                self.pending.line(&self.buf[pos..eol]);
            }
            pos = next;
        }
        if !self.skipping && self.buf.len() - self.event_start > self.max_event_bytes {
            self.skipping = true;
            self.pending.clear();
            return Err(self.oversize());
        }
        Ok(())
    }

    fn oversize(&mut self) -> SseError {
        let limit = self.max_event_bytes;
        self.acc
            .fail(|| format!("upstream event larger than max_event_bytes ({limit} bytes)"));
        SseError::Oversize { limit }
    }

    fn dispatch<F: FnMut(&[u8])>(&mut self, emit: &mut F, start: usize, end: usize) {
        if self.pending.has_data {
            self.acc
                .data_event(self.dialect, &self.pending.data, &self.pending.name);
        }
        if self.pending.has_fields || self.keep_comments {
            emit(&self.buf[start..end]);
        }
        self.pending.clear();
    }

    /// Drops the bytes already returned. While skipping an oversize event only whether the
    /// current line is empty (and whether it ends in a CR) matters, so at most two of its
    /// bytes are kept.
    fn compact(&mut self) {
        let keep_from = if self.skipping {
            let partial = self.buf.len() - self.line_start;
            self.buf.len() - partial.min(2)
        } else {
            self.event_start
        };
        self.buf.drain(..keep_from);
        self.line_start -= keep_from.min(self.line_start);
        self.event_start = 0;
    }

    /// Ends the stream and says what it said. Bytes of an event that never completed are
    /// reported in `error`. Calling it again returns the same summary.
    pub fn finish(&mut self) -> Summary {
        if let Some(summary) = &self.summary {
            return summary.clone();
        }
        // A final CR held back as a possible CRLF ends its line after all; the bytes can no
        // longer be returned, but the event still counts.
        let _ = self.scan(|_| {}, true);
        if !self.skipping && self.buf.len() > self.event_start {
            let pending = self.buf.len() - self.event_start;
            self.acc.fail(|| {
                format!("stream ended mid-event ({pending} bytes without the closing blank line)")
            });
        }
        let acc = &self.acc;
        let (prompt_tokens, completion_tokens, usage_counted) =
            match (acc.prompt_tokens, acc.completion_tokens) {
                (None, None) => {
                    let counted = self.encoding.count(&acc.text)
                        + acc
                            .tools
                            .iter()
                            .map(|t| self.encoding.count(&t.arguments))
                            .sum::<usize>();
                    (0, counted as u64, true)
                }
                (prompt, completion) => (prompt.unwrap_or(0), completion.unwrap_or(0), false),
            };
        let summary = Summary {
            text: acc.text.clone(),
            tool_calls_json: acc.tool_calls_json(),
            finish_reason: acc.finish_reason.clone(),
            prompt_tokens,
            completion_tokens,
            usage_counted,
            events: acc.events,
            done: acc.done,
            error: acc.error.clone(),
        };
        self.summary = Some(summary.clone());
        summary
    }

    /// The first content problem seen so far (the summary's `error`, before `finish`).
    pub fn error(&self) -> Option<&str> {
        self.acc.error.as_deref()
    }

    /// Bytes of text accumulated so far (lets callers decide whether `finish` is worth running
    /// without the GIL).
    pub fn text_len(&self) -> usize {
        self.acc.text.len()
    }
}

// The parts of stream events we read; everything else is skipped without being built.

#[derive(Deserialize)]
struct OpenAiChunk<'a> {
    #[serde(borrow, default)]
    choices: Option<Vec<OpenAiChoice<'a>>>,
    #[serde(default)]
    usage: Option<OpenAiUsage>,
    #[serde(borrow, default)]
    error: Option<UpstreamError<'a>>,
}

#[derive(Deserialize)]
struct OpenAiChoice<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(borrow, default)]
    delta: Option<OpenAiDelta<'a>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct OpenAiDelta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<OpenAiToolCall<'a>>>,
}

#[derive(Deserialize)]
struct OpenAiToolCall<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
struct FunctionDelta<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct OpenAiUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct UpstreamError<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

impl UpstreamError<'_> {
    fn describe(&self) -> String {
        let message = self.message.as_deref().unwrap_or("(no message)");
        match &self.kind {
            Some(kind) => format!("{kind}: {message}"),
            None => message.to_owned(),
        }
    }
}

#[derive(Deserialize)]
struct AnthropicEvent<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    message: Option<AnthropicMessage>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(borrow, default)]
    content_block: Option<AnthropicBlock<'a>>,
    #[serde(borrow, default)]
    delta: Option<AnthropicDelta<'a>>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
    #[serde(borrow, default)]
    error: Option<UpstreamError<'a>>,
}

#[derive(Deserialize)]
struct AnthropicMessage {
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct AnthropicUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct AnthropicBlock<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct AnthropicDelta<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENAI: &str = concat!(
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        ": keep-alive\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Héllo \\u00e9\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get\",\"arguments\":\"\"}}]}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":\"}}]}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":7,\"total_tokens\":19}}\n\n",
        "data: [DONE]\n\n",
    );

    const ANTHROPIC: &str = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"日本\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":1}\"}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":9}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    fn relay(dialect: Dialect) -> SseRelay {
        SseRelay::new(dialect, false, 1 << 20, Encoding::O200kBase)
    }

    fn run(relay: &mut SseRelay, stream: &[u8], step: usize) -> Vec<Vec<u8>> {
        let mut events = Vec::new();
        for chunk in stream.chunks(step.max(1)) {
            relay.feed(chunk, |e| events.push(e.to_vec())).unwrap();
        }
        events
    }

    fn expected_events(stream: &str, sep: &str) -> Vec<Vec<u8>> {
        stream
            .split_inclusive(sep)
            .filter(|e| !e.starts_with(':'))
            .map(|e| e.as_bytes().to_vec())
            .collect()
    }

    #[test]
    fn openai_stream_is_relayed_and_summarized_for_any_split() {
        for step in [1, 2, 3, 7, 64, 1400, OPENAI.len()] {
            let mut r = relay(Dialect::OpenAi);
            let events = run(&mut r, OPENAI.as_bytes(), step);
            assert_eq!(events, expected_events(OPENAI, "\n\n"), "step {step}");
            let s = r.finish();
            assert_eq!(s.text, "Héllo é");
            assert_eq!(
                s.tool_calls_json,
                r#"[{"id":"call_1","type":"function","function":{"name":"get","arguments":"{\"a\":1}"}}]"#
            );
            assert_eq!(s.finish_reason.as_deref(), Some("tool_calls"));
            assert_eq!(
                (s.prompt_tokens, s.completion_tokens, s.usage_counted),
                (12, 7, false)
            );
            assert_eq!(s.events, 8);
            assert!(s.done);
            assert_eq!(s.error, None);
        }
    }

    #[test]
    fn crlf_and_cr_streams_give_the_same_summary() {
        for (sep, eol) in [("\r\n\r\n", "\r\n"), ("\r\r", "\r")] {
            let stream = ANTHROPIC.replace('\n', eol);
            for step in [1, 2, 5, 333, stream.len()] {
                let mut r = relay(Dialect::Anthropic);
                let events = run(&mut r, stream.as_bytes(), step);
                assert_eq!(
                    events,
                    expected_events(&stream, sep),
                    "step {step} eol {eol:?}"
                );
                let s = r.finish();
                assert_eq!(s.text, "日本");
                assert_eq!(s.finish_reason.as_deref(), Some("tool_calls"));
                assert_eq!((s.prompt_tokens, s.completion_tokens), (25, 9));
                assert_eq!(
                    s.tool_calls_json,
                    r#"[{"id":"toolu_1","type":"function","function":{"name":"get","arguments":"{\"a\":1}"}}]"#
                );
                assert!(s.done && s.error.is_none());
            }
        }
    }

    #[test]
    fn event_ending_in_cr_waits_for_a_possible_lf() {
        let mut r = relay(Dialect::OpenAi);
        let mut events = Vec::new();
        r.feed(b"data: [DONE]\r\n\r", |e| events.push(e.to_vec()))
            .unwrap();
        assert!(events.is_empty());
        r.feed(b"\n", |e| events.push(e.to_vec())).unwrap();
        assert_eq!(events, vec![b"data: [DONE]\r\n\r\n".to_vec()]);
    }

    #[test]
    fn comments_are_kept_only_when_asked() {
        let mut r = SseRelay::new(Dialect::OpenAi, true, 1 << 20, Encoding::O200kBase);
        let events = run(&mut r, OPENAI.as_bytes(), 10);
        assert_eq!(events.len(), 9);
        assert_eq!(events[1], b": keep-alive\n\n");
    }

    #[test]
    fn missing_usage_is_counted_with_the_tokenizer() {
        let stream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello world\"}}]}\n\ndata: [DONE]\n\n";
        let mut r = relay(Dialect::OpenAi);
        run(&mut r, stream.as_bytes(), 5);
        let s = r.finish();
        assert_eq!(
            (s.prompt_tokens, s.completion_tokens, s.usage_counted),
            (0, 2, true)
        );
    }

    #[test]
    fn legacy_completion_text_is_read() {
        let stream = "data: {\"choices\":[{\"text\":\"ab\",\"index\":0,\"finish_reason\":null}]}\n\ndata: {\"choices\":[{\"text\":\"c\",\"index\":0,\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        let mut r = relay(Dialect::OpenAi);
        run(&mut r, stream.as_bytes(), 4);
        let s = r.finish();
        assert_eq!(s.text, "abc");
        assert_eq!(s.finish_reason.as_deref(), Some("stop"));
    }

    #[test]
    fn error_is_visible_before_finish() {
        let mut r = relay(Dialect::OpenAi);
        r.feed(b"data: {\"choices\":[]}\n\n", |_| {}).unwrap();
        assert_eq!(r.error(), None);
        r.feed(b"data: {not json}\n\n", |_| {}).unwrap();
        assert!(r.error().unwrap().starts_with("invalid JSON"));
    }

    #[test]
    fn garbage_is_reported_in_the_summary() {
        let cases: [(&[u8], &str); 5] = [
            (b"data: {not json}\n\n", "invalid JSON in the data of event 1 at byte 1: key must be a string"),
            (b"data: \"\xff\"\n\n", "invalid UTF-8 in the data of event 1"),
            (b"data: {\"choices\":[]}\n\ndata: [DO", "stream ended mid-event (9 bytes without the closing blank line)"),
            (b"data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n", "upstream error: server_error: boom"),
            (b"data: 5\n\n", "unexpected JSON shape in the data of event 1 at byte 0: invalid type: integer `5`, expected struct OpenAiChunk"),
        ];
        for (stream, message) in cases {
            let mut r = relay(Dialect::OpenAi);
            run(&mut r, stream, 3);
            let s = r.finish();
            assert_eq!(s.error.as_deref(), Some(message));
            assert!(!s.done);
        }
    }

    #[test]
    fn anthropic_error_event_is_reported() {
        let stream = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let mut r = relay(Dialect::Anthropic);
        assert_eq!(run(&mut r, stream, 7).len(), 1);
        assert_eq!(
            r.finish().error.as_deref(),
            Some("upstream error: overloaded_error: Overloaded")
        );
    }

    #[test]
    fn oversize_event_is_refused_and_the_relay_recovers() {
        let big = format!("data: {}\n\n", "x".repeat(300));
        let stream = format!("data: {{}}\n\n{big}data: [DONE]\n\n");
        for step in [1, 50, stream.len()] {
            let mut r = SseRelay::new(Dialect::OpenAi, false, 100, Encoding::O200kBase);
            let mut events = Vec::new();
            let mut errors = 0;
            let bytes = stream.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                let end = (i + step).min(bytes.len());
                let mut chunk = &bytes[i..end];
                i = end;
                loop {
                    match r.feed(chunk, |e| events.push(e.to_vec())) {
                        Ok(()) => break,
                        Err(SseError::Oversize { limit: 100 }) => errors += 1,
                        Err(other) => panic!("{other}"),
                    }
                    chunk = b"";
                }
            }
            assert_eq!(errors, 1, "step {step}");
            assert_eq!(events.last().unwrap(), b"data: [DONE]\n\n");
            let s = r.finish();
            assert!(s.done);
            assert_eq!(
                s.error.as_deref(),
                Some("upstream event larger than max_event_bytes (100 bytes)")
            );
        }
    }

    #[test]
    fn feed_after_finish_is_refused() {
        let mut r = relay(Dialect::OpenAi);
        let first = r.finish();
        assert_eq!(r.feed(b"data: x\n\n", |_| {}), Err(SseError::Finished));
        assert_eq!(r.finish(), first);
        assert_eq!(first.tool_calls_json, "[]");
    }

    #[test]
    fn stop_reasons_map_to_openai_terms() {
        assert_eq!(openai_finish_reason("end_turn"), "stop");
        assert_eq!(openai_finish_reason("stop_sequence"), "stop");
        assert_eq!(openai_finish_reason("max_tokens"), "length");
        assert_eq!(openai_finish_reason("tool_use"), "tool_calls");
        assert_eq!(openai_finish_reason("pause_turn"), "stop");
        assert_eq!(
            openai_finish_reason("model_context_window_exceeded"),
            "length"
        );
        assert_eq!(openai_finish_reason("refusal"), "content_filter");
        assert_eq!(openai_finish_reason("something_new"), "stop");
    }
}
