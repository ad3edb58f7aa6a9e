//! Exact, offline token counting with OpenAI's BPE encodings (rank files compiled in by
//! tiktoken-rs), and chat-message accounting the way OpenAI bills it.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;
use tiktoken_rs::CoreBPE;

/// The encodings this build knows, by their tiktoken names.
pub const KNOWN_ENCODINGS: [&str; 2] = ["o200k_base", "cl100k_base"];

/// Tokens added per message, per `name` field, and once to prime the reply
/// (OpenAI cookbook, `num_tokens_from_messages`, for every model since gpt-3.5-turbo-0613).
pub const TOKENS_PER_MESSAGE: usize = 3;
pub const TOKENS_PER_NAME: usize = 1;
pub const REPLY_PRIMING_TOKENS: usize = 3;

/// Set once an encoding's tokenizer has been built, by `Encoding as usize`.
static LOADED: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    O200kBase,
    Cl100kBase,
}

impl Encoding {
    /// The encoding called `name`, or an error listing the known ones.
    pub fn from_name(name: &str) -> Result<Self, TokenError> {
        match name {
            "o200k_base" => Ok(Self::O200kBase),
            "cl100k_base" => Ok(Self::Cl100kBase),
            _ => Err(TokenError::UnknownEncoding(name.to_owned())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::O200kBase => "o200k_base",
            Self::Cl100kBase => "cl100k_base",
        }
    }

    /// The tokenizer, built on first use (the rank tables take a few hundred ms to load).
    fn bpe(self) -> &'static CoreBPE {
        let bpe = match self {
            Self::O200kBase => tiktoken_rs::o200k_base_singleton(),
            Self::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        };
        let loaded = &LOADED[self as usize];
        if !loaded.load(Ordering::Relaxed) {
            loaded.store(true, Ordering::Relaxed);
        }
        bpe
    }

    /// Whether this encoding's tables are loaded yet (its first count loads them).
    pub fn is_loaded(self) -> bool {
        LOADED[self as usize].load(Ordering::Relaxed)
    }

    /// Number of tokens in `text`; special-token text such as `<|endoftext|>` is ordinary text.
    pub fn count(self, text: &str) -> usize {
        if text.is_empty() {
            return 0;
        }
        self.bpe().encode_ordinary(text).len()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    UnknownEncoding(String),
    /// `messages` is not JSON; `offset` is the byte where parsing stopped.
    InvalidJson {
        offset: usize,
        reason: String,
    },
    NotAnArray {
        found: &'static str,
    },
    MessageNotAnObject {
        index: usize,
        found: &'static str,
    },
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownEncoding(name) => write!(
                f,
                "unknown encoding {name:?}; known encodings: {}",
                KNOWN_ENCODINGS.join(", ")
            ),
            Self::InvalidJson { offset, reason } => {
                write!(f, "invalid JSON at byte {offset}: {reason}")
            }
            Self::NotAnArray { found } => {
                write!(
                    f,
                    "messages must be a JSON array of message objects, got {found}"
                )
            }
            Self::MessageNotAnObject { index, found } => {
                write!(f, "messages[{index}] must be a JSON object, got {found}")
            }
        }
    }
}

impl std::error::Error for TokenError {}

/// The encoding OpenAI uses for `model`; unknown models get `o200k_base`, the current one.
///
/// Provider prefixes (`openai/gpt-4o`), fine-tune names (`ft:gpt-4o-mini:org::id`) and Azure
/// spellings (`gpt-35-turbo`) are understood.
pub fn encoding_for_model(model: &str) -> Encoding {
    let lower = model.trim().to_ascii_lowercase();
    let mut name = lower.rsplit('/').next().unwrap_or_default();
    if let Some(rest) = name.strip_prefix("ft:") {
        name = rest;
    }
    const O200K: [&str; 9] = [
        "gpt-4o",
        "gpt-4.1",
        "gpt-4.5",
        "gpt-5",
        "o1",
        "o3",
        "o4",
        "chatgpt-4o",
        "gpt-oss",
    ];
    const CL100K: [&str; 5] = [
        "gpt-4",
        "gpt-3.5",
        "gpt-35",
        "text-embedding-3",
        "text-embedding-ada-002",
    ];
    if O200K.iter().any(|p| name.starts_with(p)) {
        Encoding::O200kBase
    } else if CL100K.iter().any(|p| name.starts_with(p)) {
        Encoding::Cl100kBase
    } else {
        Encoding::O200kBase
    }
}

/// Tokens a chat `messages` array (JSON bytes) costs as a prompt, by the cookbook recipe:
/// 3 per message, every string field's tokens (+1 for a `name`), 3 to prime the reply.
/// `content` given as parts counts only the `text` of `type: "text"` parts; `tool_calls` and a
/// legacy `function_call` count their function name and arguments.
pub fn count_chat_tokens(messages: &[u8], encoding: Encoding) -> Result<usize, TokenError> {
    let value: Value = serde_json::from_slice(messages).map_err(|e| TokenError::InvalidJson {
        offset: byte_offset(messages, e.line(), e.column()),
        reason: reason_without_position(&e),
    })?;
    let Value::Array(items) = value else {
        return Err(TokenError::NotAnArray {
            found: kind(&value),
        });
    };
    let mut total = REPLY_PRIMING_TOKENS;
    for (index, item) in items.iter().enumerate() {
        let Value::Object(message) = item else {
            return Err(TokenError::MessageNotAnObject {
                index,
                found: kind(item),
            });
        };
        total += TOKENS_PER_MESSAGE;
        for (field, value) in message {
            total += match (field.as_str(), value) {
                ("name", Value::String(s)) => encoding.count(s) + TOKENS_PER_NAME,
                (_, Value::String(s)) => encoding.count(s),
                ("content", Value::Array(parts)) => parts
                    .iter()
                    .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .map(|t| encoding.count(t))
                    .sum(),
                ("tool_calls", Value::Array(calls)) => calls
                    .iter()
                    .filter_map(|c| c.get("function"))
                    .map(|f| count_function(f, encoding))
                    .sum(),
                ("function_call", function) => count_function(function, encoding),
                _ => 0,
            };
        }
    }
    Ok(total)
}

fn count_function(function: &Value, encoding: Encoding) -> usize {
    ["name", "arguments"]
        .iter()
        .filter_map(|k| function.get(k).and_then(Value::as_str))
        .map(|s| encoding.count(s))
        .sum()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// serde_json reports a 1-based line and a 1-based byte column (0 at the start of a line);
/// this turns them into a byte offset into `input`.
pub(crate) fn byte_offset(input: &[u8], line: usize, column: usize) -> usize {
    let line_start = if line <= 1 {
        0
    } else {
        memchr::memchr_iter(b'\n', input)
            .nth(line - 2)
            .map_or(input.len(), |i| i + 1)
    };
    (line_start + column.saturating_sub(1)).min(input.len())
}

/// serde_json's message without its " at line L column C" suffix (the caller gives a byte offset).
pub(crate) fn reason_without_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_known_strings_like_tiktoken() {
        // Reference values from Python tiktoken.
        assert_eq!(Encoding::Cl100kBase.count("hello world"), 2);
        assert_eq!(Encoding::O200kBase.count("hello world"), 2);
        assert_eq!(Encoding::O200kBase.count(""), 0);
    }

    #[test]
    fn an_encoding_is_loaded_by_its_first_count() {
        Encoding::Cl100kBase.count("warm");
        assert!(Encoding::Cl100kBase.is_loaded());
    }

    #[test]
    fn special_token_text_counts_as_ordinary_text() {
        assert!(Encoding::Cl100kBase.count("<|endoftext|>") > 1);
        assert!(Encoding::O200kBase.count("<|endoftext|>") > 1);
    }

    #[test]
    fn unknown_encoding_lists_known_ones() {
        let err = Encoding::from_name("p50k").unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown encoding \"p50k\"; known encodings: o200k_base, cl100k_base"
        );
        assert_eq!(
            Encoding::from_name("cl100k_base").unwrap().name(),
            "cl100k_base"
        );
    }

    #[test]
    fn models_map_to_their_encoding() {
        for m in [
            "gpt-4o",
            "gpt-4o-mini",
            "openai/gpt-4.1",
            "gpt-5-nano",
            "o1-mini",
            "o3",
            "o4-mini",
            "chatgpt-4o-latest",
            "GPT-4O",
            "ft:gpt-4o-mini:org::abc",
            "claude-3-5-sonnet",
            "",
        ] {
            assert_eq!(encoding_for_model(m), Encoding::O200kBase, "{m}");
        }
        for m in [
            "gpt-4",
            "gpt-4-turbo",
            "gpt-3.5-turbo",
            "azure/gpt-35-turbo",
            "text-embedding-3-small",
            "text-embedding-ada-002",
        ] {
            assert_eq!(encoding_for_model(m), Encoding::Cl100kBase, "{m}");
        }
    }

    #[test]
    fn chat_counting_follows_the_cookbook() {
        let enc = Encoding::Cl100kBase;
        let body = br#"[{"role":"system","content":"You are helpful."},{"role":"user","name":"bob","content":"hi"}]"#;
        let expected = 3
            + (3 + enc.count("system") + enc.count("You are helpful."))
            + (3 + enc.count("user") + enc.count("bob") + 1 + enc.count("hi"));
        assert_eq!(count_chat_tokens(body, enc).unwrap(), expected);
    }

    #[test]
    fn chat_counting_reads_parts_and_tool_calls() {
        let enc = Encoding::O200kBase;
        let body = br#"[{"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"http://x"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"42"}]"#;
        let expected = 3
            + (3 + enc.count("user") + enc.count("look"))
            + (3 + enc.count("assistant") + enc.count("f") + enc.count("{\"a\":1}"))
            + (3 + enc.count("tool") + enc.count("c1") + enc.count("42"));
        assert_eq!(count_chat_tokens(body, enc).unwrap(), expected);
        assert_eq!(count_chat_tokens(b"[]", enc).unwrap(), 3);
    }

    #[test]
    fn chat_errors_name_the_byte_offset() {
        let err = |b: &[u8]| {
            count_chat_tokens(b, Encoding::O200kBase)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(b"[{\"role\": }]"),
            "invalid JSON at byte 10: expected value"
        );
        assert_eq!(
            err(b"[\n {\"a\":1},\n x]"),
            "invalid JSON at byte 13: expected value"
        );
        assert_eq!(
            err(b"{}"),
            "messages must be a JSON array of message objects, got an object"
        );
        assert_eq!(
            err(b"[{}, 1]"),
            "messages[1] must be a JSON object, got a number"
        );
        assert!(err(b"").starts_with("invalid JSON at byte 0: EOF"));
    }
}
