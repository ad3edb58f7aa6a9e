//! OpenAI chat completion chunks -> Anthropic's Messages stream events (pure, no I/O).
//!
//! Anthropic's documented sequence: `message_start`, then per content block
//! `content_block_start`, `content_block_delta`s (`text_delta`, or `input_json_delta` for a
//! tool call's arguments) and `content_block_stop`, then `message_delta` (stop reason and
//! usage) and `message_stop`; `ping` events may come anywhere (one follows `message_start`).
//!
//! The HTTP door feeds it what the relay hands over (one or more complete OpenAI SSE events
//! per item) and sends what comes back; each event is written straight into one output
//! buffer from byte templates, with the chunk's strings borrowed from the input.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

const PING: &[u8] = b"event: ping\ndata: {\"type\":\"ping\"}\n\n";
const MESSAGE_STOP: &[u8] = b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

/// The upstream sent an event whose data is not a chat completion chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadChunk;

impl fmt::Display for BadChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("upstream sent a chunk that is not JSON")
    }
}

impl std::error::Error for BadChunk {}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    /// The first choice only (the others are skipped, never allocated).
    #[serde(borrow, default, deserialize_with = "first_choice")]
    choices: Option<Choice<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
}

fn first_choice<'de: 'a, 'a, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Choice<'a>>, D::Error> {
    struct First<'a>(PhantomData<Choice<'a>>);

    impl<'de: 'a, 'a> Visitor<'de> for First<'a> {
        type Value = Option<Choice<'a>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of choices or null")
        }

        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_seq(self)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let first = seq.next_element::<Choice<'a>>()?;
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(first)
        }
    }

    deserializer.deserialize_option(First(PhantomData))
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

// Strings that are only copied to the output stay JSON text (`RawValue`): they are already
// escaped as JSON wants, so they are neither unescaped nor escaped again.
#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    refusal: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(default)]
    index: Option<i64>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
}

/// A JSON string's text (quotes included), None for an empty one; BadChunk if not a string.
fn json_text(value: Option<&RawValue>) -> Result<Option<&str>, BadChunk> {
    match value.map(RawValue::get) {
        None | Some("\"\"") => Ok(None),
        Some(text) if text.starts_with('"') => Ok(Some(text)),
        Some(_) => Err(BadChunk),
    }
}

#[derive(Deserialize, Clone, Copy, Default)]
struct Usage {
    #[serde(default)]
    prompt_tokens: i64,
    #[serde(default)]
    completion_tokens: i64,
    #[serde(default)]
    prompt_tokens_details: Option<TokensDetails>,
}

#[derive(Deserialize, Clone, Copy, Default)]
struct TokensDetails {
    #[serde(default)]
    cached_tokens: i64,
}

/// Anthropic's stop reason for an OpenAI finish reason.
pub fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason.unwrap_or("stop") {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// One stream's translation: `feed` each item, `finish` at the end (or after `[DONE]`).
pub struct MessagesStream {
    model: String,
    started: bool,
    finished: bool,
    /// The index of the open content block, and whether it is a text block.
    open: Option<(usize, bool)>,
    blocks: usize,
    /// OpenAI tool-call index -> content block index.
    tools: Vec<(i64, usize)>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
}

impl MessagesStream {
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            started: false,
            finished: false,
            open: None,
            blocks: 0,
            tools: Vec::new(),
            finish_reason: None,
            usage: None,
        }
    }

    pub fn started(&self) -> bool {
        self.started
    }

    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Appends to `out` the Anthropic events for `item` (one or more complete SSE events,
    /// LF, CRLF or CR framed). Events after `[DONE]` are ignored.
    pub fn feed(&mut self, item: &[u8], out: &mut Vec<u8>) -> Result<(), BadChunk> {
        // The common case, one LF-framed `data:` event, without the general line walk.
        if let Some(data) = item.strip_prefix(b"data: ") {
            if let Some(data) = data.strip_suffix(b"\n\n") {
                if memchr::memchr2(b'\n', b'\r', data).is_none() {
                    return self.data(data, out);
                }
            }
        }
        let mut joined: Vec<u8> = Vec::new();
        let mut lines = 0usize;
        let mut rest = item;
        while !rest.is_empty() {
            let (line, next) = match memchr::memchr2(b'\n', b'\r', rest) {
                Some(at) => {
                    let skip = if rest[at] == b'\r' && rest.get(at + 1) == Some(&b'\n') {
                        2
                    } else {
                        1
                    };
                    (&rest[..at], &rest[at + skip..])
                }
                None => (rest, &rest[rest.len()..]),
            };
            rest = next;
            if line.is_empty() {
                if lines > 0 {
                    self.data(&joined, out)?;
                    joined.clear();
                    lines = 0;
                }
                continue;
            }
            if let Some(value) = line.strip_prefix(b"data:") {
                if lines > 0 {
                    joined.push(b'\n');
                }
                joined.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
                lines += 1;
            }
        }
        if lines > 0 {
            self.data(&joined, out)?;
        }
        Ok(())
    }

    fn data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), BadChunk> {
        if self.finished {
            return Ok(());
        }
        if data == b"[DONE]" {
            self.finish(out);
            return Ok(());
        }
        let chunk: Chunk<'_> = serde_json::from_slice(data).map_err(|_| BadChunk)?;
        if !self.started {
            self.start(chunk.id.as_deref().unwrap_or(""), out);
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        let Some(choice) = chunk.choices else {
            return Ok(());
        };
        if let Some(reason) = choice.finish_reason {
            self.finish_reason = Some(reason.into_owned());
        }
        let Some(delta) = choice.delta else {
            return Ok(());
        };
        let text = match json_text(delta.content)? {
            Some(text) => Some(text),
            None => json_text(delta.refusal)?,
        };
        if let Some(text) = text {
            let index = match self.open {
                Some((index, true)) => index,
                _ => self.begin(true, out, |out| {
                    out.extend_from_slice(b"{\"type\":\"text\",\"text\":\"\"}")
                }),
            };
            out.extend_from_slice(
                b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
            );
            push_int(out, index as i64);
            out.extend_from_slice(b",\"delta\":{\"type\":\"text_delta\",\"text\":");
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(b"}}\n\n");
        }
        for call in delta.tool_calls.unwrap_or_default() {
            let key = call.index.unwrap_or(0);
            let (name, arguments) = match &call.function {
                Some(f) => (json_text(f.name)?, json_text(f.arguments)?),
                None => (None, None),
            };
            let known = self.tools.iter().find(|(k, _)| *k == key).map(|(_, b)| *b);
            let index = match known {
                Some(index) => index,
                None => {
                    let id = json_text(call.id)?.unwrap_or("\"\"");
                    let name = name.unwrap_or("\"\"");
                    let index = self.begin(false, out, |out| {
                        out.extend_from_slice(b"{\"type\":\"tool_use\",\"id\":");
                        out.extend_from_slice(id.as_bytes());
                        out.extend_from_slice(b",\"name\":");
                        out.extend_from_slice(name.as_bytes());
                        out.extend_from_slice(b",\"input\":{}}");
                    });
                    self.tools.push((key, index));
                    index
                }
            };
            if let Some(arguments) = arguments {
                out.extend_from_slice(
                    b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\
                      \"index\":",
                );
                push_int(out, index as i64);
                out.extend_from_slice(
                    b",\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":",
                );
                out.extend_from_slice(arguments.as_bytes());
                out.extend_from_slice(b"}}\n\n");
            }
        }
        Ok(())
    }

    /// Appends the closing events (once; later calls append nothing).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        if !self.started {
            self.start("", out);
        }
        self.close(out);
        self.finished = true;
        out.extend_from_slice(
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"",
        );
        out.extend_from_slice(stop_reason(self.finish_reason.as_deref()).as_bytes());
        out.extend_from_slice(b"\",\"stop_sequence\":null},\"usage\":");
        push_usage(out, self.usage.as_ref());
        out.extend_from_slice(b"}\n\n");
        out.extend_from_slice(MESSAGE_STOP);
    }

    fn start(&mut self, chat_id: &str, out: &mut Vec<u8>) {
        self.started = true;
        out.extend_from_slice(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":",
        );
        let id = format!(
            "msg_{}",
            chat_id.strip_prefix("chatcmpl-").unwrap_or(chat_id)
        );
        push_str(out, &id);
        out.extend_from_slice(b",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
        push_str(out, &self.model);
        out.extend_from_slice(
            b",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\
              \"usage\":{\"input_tokens\":0,\"output_tokens\":0}}}\n\n",
        );
        out.extend_from_slice(PING);
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open.take() {
            out.extend_from_slice(
                b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":",
            );
            push_int(out, index as i64);
            out.extend_from_slice(b"}\n\n");
        }
    }

    fn begin(&mut self, text: bool, out: &mut Vec<u8>, block: impl FnOnce(&mut Vec<u8>)) -> usize {
        self.close(out);
        let index = self.blocks;
        self.blocks += 1;
        self.open = Some((index, text));
        out.extend_from_slice(
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":",
        );
        push_int(out, index as i64);
        out.extend_from_slice(b",\"content_block\":");
        block(out);
        out.extend_from_slice(b"}\n\n");
        index
    }
}

fn push_int(out: &mut Vec<u8>, value: i64) {
    let mut digits = [0u8; 20];
    let mut rest = value.unsigned_abs();
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if value < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

fn push_str(out: &mut Vec<u8>, value: &str) {
    // Writing into a Vec cannot fail.
    serde_json::to_writer(&mut *out, value).expect("a JSON string");
}

/// Anthropic usage for OpenAI usage: cache reads are not part of `input_tokens` there.
fn push_usage(out: &mut Vec<u8>, usage: Option<&Usage>) {
    let u = usage.copied().unwrap_or_default();
    let cached = u
        .prompt_tokens_details
        .map(|d| d.cached_tokens)
        .unwrap_or(0);
    out.extend_from_slice(b"{\"input_tokens\":");
    push_int(out, u.prompt_tokens - cached);
    out.extend_from_slice(b",\"output_tokens\":");
    push_int(out, u.completion_tokens);
    if cached != 0 {
        out.extend_from_slice(b",\"cache_read_input_tokens\":");
        push_int(out, cached);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(items: &[&[u8]]) -> Result<Vec<(String, serde_json::Value)>, BadChunk> {
        let mut stream = MessagesStream::new("gpt-4o-mini");
        let mut out = Vec::new();
        for item in items {
            stream.feed(item, &mut out)?;
        }
        stream.finish(&mut out);
        Ok(events(&out))
    }

    fn events(out: &[u8]) -> Vec<(String, serde_json::Value)> {
        let text = std::str::from_utf8(out).unwrap();
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (head, data) = e.split_once('\n').unwrap();
                let name = head.strip_prefix("event: ").unwrap().to_owned();
                let value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                (name, value)
            })
            .collect()
    }

    fn names(events: &[(String, serde_json::Value)]) -> Vec<&str> {
        events.iter().map(|(n, _)| n.as_str()).collect()
    }

    const TEXT: &[&[u8]] = &[
        b"data: {\"id\":\"chatcmpl-7\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        b"data: {\"id\":\"chatcmpl-7\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
        b"data: {\"id\":\"chatcmpl-7\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo \\\"you\\\"\"}}]}\n\n",
        b"data: {\"id\":\"chatcmpl-7\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
        b"data: {\"id\":\"chatcmpl-7\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\"total_tokens\":15,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n",
        b"data: [DONE]\n\n",
    ];

    #[test]
    fn text_stream_is_anthropics_sequence() {
        let got = feed_all(TEXT).unwrap();
        assert_eq!(
            names(&got),
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(got[0].1["message"]["id"], "msg_7");
        assert_eq!(got[0].1["message"]["model"], "gpt-4o-mini");
        assert_eq!(got[4].1["delta"]["text"], "lo \"you\"");
        assert_eq!(got[6].1["delta"]["stop_reason"], "max_tokens");
        let usage = &got[6].1["usage"];
        assert_eq!(usage["input_tokens"], 8);
        assert_eq!(usage["output_tokens"], 3);
        assert_eq!(usage["cache_read_input_tokens"], 4);
    }

    #[test]
    fn events_in_one_item_and_crlf_framing_translate_alike() {
        let joined: Vec<u8> = TEXT.concat();
        let crlf: Vec<u8> = String::from_utf8(joined.clone())
            .unwrap()
            .replace('\n', "\r\n")
            .into_bytes();
        let one = feed_all(TEXT).unwrap();
        assert_eq!(feed_all(&[&joined]).unwrap(), one);
        assert_eq!(feed_all(&[&crlf]).unwrap(), one);
    }

    #[test]
    fn tool_calls_become_tool_use_blocks_with_input_json_deltas() {
        let items: &[&[u8]] = &[
            b"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"Let me look.\"}}]}\n\n",
            b"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}}]}\n\n",
            b"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]}}]}\n\n",
            b"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
            b"data: [DONE]\n\n",
        ];
        let got = feed_all(items).unwrap();
        assert_eq!(
            names(&got),
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let block = &got[5].1;
        assert_eq!(block["index"], 1);
        assert_eq!(block["content_block"]["type"], "tool_use");
        assert_eq!(block["content_block"]["id"], "call_1");
        assert_eq!(block["content_block"]["name"], "get_weather");
        let json: String = got[6..8]
            .iter()
            .map(|(_, v)| v["delta"]["partial_json"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(json, "{\"city\":\"Paris\"}");
        assert_eq!(got[9].1["delta"]["stop_reason"], "tool_use");
    }

    #[test]
    fn a_stream_without_chunks_still_opens_and_closes() {
        let got = feed_all(&[]).unwrap();
        assert_eq!(
            names(&got),
            ["message_start", "ping", "message_delta", "message_stop"]
        );
        assert_eq!(got[0].1["message"]["id"], "msg_");
        assert_eq!(got[2].1["usage"]["input_tokens"], 0);
    }

    #[test]
    fn nothing_follows_done_and_finish_is_once() {
        let mut stream = MessagesStream::new("m");
        let mut out = Vec::new();
        stream.feed(b"data: [DONE]\n\n", &mut out).unwrap();
        let len = out.len();
        stream
            .feed(
                b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n",
                &mut out,
            )
            .unwrap();
        stream.finish(&mut out);
        assert_eq!(out.len(), len);
        assert!(stream.finished());
    }

    #[test]
    fn a_chunk_that_is_not_json_is_an_error() {
        assert_eq!(feed_all(&[b"data: {not json\n\n"]), Err(BadChunk));
        assert_eq!(feed_all(&[b"data: {\"choices\":5}\n\n"]), Err(BadChunk));
    }

    #[test]
    fn only_the_first_choice_is_read_and_usage_numbers_are_exact() {
        let got = feed_all(&[
            b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}},{\"delta\":{\"content\":\"b\"}}]}\n\n",
            b"data: {\"choices\":null,\"usage\":{\"prompt_tokens\":1234567890123,\"completion_tokens\":0}}\n\n",
        ])
        .unwrap();
        let texts: Vec<_> = got
            .iter()
            .filter_map(|(_, v)| v["delta"]["text"].as_str())
            .collect();
        assert_eq!(texts, ["a"]);
        let usage = &got.last().unwrap().1;
        assert_eq!(usage["type"], "message_stop");
        let delta = &got[got.len() - 2].1;
        assert_eq!(delta["usage"]["input_tokens"], 1234567890123_i64);
        assert_eq!(delta["usage"]["output_tokens"], 0);
    }

    #[test]
    fn comments_and_event_names_are_skipped() {
        let got = feed_all(&[
            b": keep-alive\n\nevent: x\ndata: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
        ])
        .unwrap();
        assert_eq!(got[3].1["delta"]["text"], "a");
    }
}
