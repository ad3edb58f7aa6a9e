//! The log record as stored (today's `LogRecord`, field for field), the content policy applied
//! to it on the writer thread, and the text made safe for every store.

use serde::{Deserialize, Serialize};

use super::redact::{redact, SecretMask};

/// The stores' columns, in order (the `requests` table).
pub const COLUMNS: [&str; 29] = [
    "id",
    "ts",
    "request_id",
    "door",
    "key_id",
    "team",
    "model",
    "provider",
    "provider_model",
    "endpoint",
    "stream",
    "status",
    "error_type",
    "error_message",
    "latency_ms",
    "upstream_ms",
    "overhead_ms",
    "ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "tokens_counted",
    "cost_usd",
    "cache_status",
    "content",
    "prompt",
    "completion",
    "tool_calls",
    "attempts",
];

fn off() -> String {
    "off".to_owned()
}

fn none() -> String {
    "none".to_owned()
}

/// One call as stored. Field order is the column order of the stores.
///
/// Decoded from the msgspec JSON of Python's `LogRecord`; `caller_key` is not a column: the
/// caller's own key, masked wherever it appears in stored text, never stored or spooled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    #[serde(default)]
    pub id: String,
    pub ts: f64,
    pub request_id: String,
    pub door: String,
    #[serde(default)]
    pub key_id: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    pub model: String,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub provider_model: Option<String>,
    pub endpoint: String,
    #[serde(default)]
    pub stream: bool,
    pub status: i64,
    #[serde(default)]
    pub error_type: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
    pub latency_ms: f64,
    pub upstream_ms: f64,
    pub overhead_ms: f64,
    #[serde(default)]
    pub ttft_ms: Option<f64>,
    #[serde(default)]
    pub prompt_tokens: Option<i64>,
    #[serde(default)]
    pub completion_tokens: Option<i64>,
    #[serde(default)]
    pub total_tokens: Option<i64>,
    #[serde(default)]
    pub tokens_counted: bool,
    #[serde(default)]
    pub cost_usd: Option<f64>,
    #[serde(default = "off")]
    pub cache_status: String,
    #[serde(default = "none")]
    pub content: String,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub completion: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<String>,
    /// A model group's attempts as JSON text (schema v2); None for a one-deployment model.
    #[serde(default)]
    pub attempts: Option<String>,
    #[serde(default, skip_serializing)]
    pub caller_key: Option<String>,
}

impl LogRecord {
    pub fn decode(raw: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(raw)
    }

    /// One spool or dead-letter line (no newline).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record always serialises")
    }

    /// Every text field, for the sanitizer.
    fn texts_mut(&mut self) -> [&mut String; 7] {
        [
            &mut self.id,
            &mut self.request_id,
            &mut self.door,
            &mut self.model,
            &mut self.endpoint,
            &mut self.cache_status,
            &mut self.content,
        ]
    }

    fn optional_texts_mut(&mut self) -> [&mut Option<String>; 10] {
        [
            &mut self.key_id,
            &mut self.team,
            &mut self.provider,
            &mut self.provider_model,
            &mut self.error_type,
            &mut self.error_message,
            &mut self.prompt,
            &mut self.completion,
            &mut self.tool_calls,
            &mut self.attempts,
        ]
    }

    /// Make every text field safe for every store: NUL, which PostgreSQL text cannot hold
    /// (and which C readers of SQLite cut text at), is written as the six characters `\u0000`.
    /// Returns whether anything changed.
    pub fn sanitize(&mut self) -> bool {
        let mut changed = false;
        for text in self.texts_mut() {
            changed |= escape_nul(text);
        }
        for text in self.optional_texts_mut().into_iter().flatten() {
            changed |= escape_nul(text);
        }
        changed
    }
}

/// Replace NUL in place; false (and no allocation) when there is none.
pub fn escape_nul(text: &mut String) -> bool {
    if !text.as_bytes().contains(&0) {
        return false;
    }
    *text = text.replace('\0', "\\u0000");
    true
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    #[allow(dead_code)]
    cached_tokens: i64,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    #[allow(dead_code)]
    prompt_tokens: i64,
    #[serde(default)]
    #[allow(dead_code)]
    completion_tokens: i64,
    #[serde(default)]
    #[allow(dead_code)]
    prompt_tokens_details: Option<Details>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(default)]
    content: Option<String>,
    #[serde(default, borrow)]
    tool_calls: Option<&'a serde_json::value::RawValue>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    message: Option<Message<'a>>,
    #[serde(default)]
    text: Option<String>,
}

/// The parts of an OpenAI-shaped answer the log reads (Python's `_Answer`: the same fields
/// and types, so the same bodies are refused).
#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(default, borrow)]
    choices: Vec<Choice<'a>>,
    #[serde(default)]
    #[allow(dead_code)]
    usage: Option<Usage>,
}

/// The completion text and tool calls of a whole (non-stream) answer body, as Python's
/// `_completion_of(_read_answer(body))`: texts joined by newlines; one choice's tool calls as
/// the upstream spelt them, several as a JSON array of those; ("", None) for a body that is
/// not such an answer.
pub fn completion_of(body: &[u8]) -> (String, Option<String>) {
    let Ok(answer) = serde_json::from_slice::<Answer<'_>>(body) else {
        return (String::new(), None);
    };
    let mut texts: Vec<String> = Vec::new();
    let mut tools: Vec<&str> = Vec::new();
    for choice in answer.choices {
        if let Some(message) = choice.message {
            if let Some(content) = message.content.filter(|c| !c.is_empty()) {
                texts.push(content);
            }
            if let Some(raw) = message.tool_calls.filter(|r| r.get() != "null") {
                tools.push(raw.get());
            }
        } else if let Some(text) = choice.text.filter(|t| !t.is_empty()) {
            texts.push(text);
        }
    }
    let tool_calls = match tools.len() {
        0 => None,
        1 => Some(tools[0].to_owned()),
        _ => Some(format!("[{}]", tools.join(","))),
    };
    (texts.join("\n"), tool_calls)
}

/// What of the prompt and completion is stored (`logging.content`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentPolicy {
    Full,
    Redacted,
    None,
}

impl ContentPolicy {
    pub fn from_name(name: &str) -> Result<Self, String> {
        match name {
            "full" => Ok(Self::Full),
            "redacted" => Ok(Self::Redacted),
            "none" => Ok(Self::None),
            other => Err(format!(
                "unknown content mode {other:?}: use full, redacted or none"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Redacted => "redacted",
            Self::None => "none",
        }
    }
}

/// Gives records their final content, as Python's `RecordBuilder._clean` and `add_content` do.
#[derive(Debug, Clone)]
pub struct ContentFilter {
    pub policy: ContentPolicy,
    pub secrets: SecretMask,
    /// The process's id prefix (`calls.PROCESS_PREFIX[:10]`) and a sequence, for new ids.
    pub id_prefix: String,
    sequence: u64,
}

impl ContentFilter {
    pub fn new(policy: ContentPolicy, secrets: SecretMask, id_prefix: &str) -> Self {
        let id_prefix: String = id_prefix.chars().take(10).collect();
        Self {
            policy,
            secrets,
            id_prefix,
            sequence: 0,
        }
    }

    fn clean(&self, text: &mut Option<String>, caller_key: Option<&str>) {
        if let Some(value) = text.as_mut() {
            *value = match self.policy {
                ContentPolicy::Redacted => self.secrets.apply(&redact(value), caller_key),
                _ => self.secrets.apply(value, caller_key),
            };
        }
    }

    /// Fill the prompt and completion the loop left to the writer: the request's prompt bytes
    /// (decoded as Python's `decode("utf-8", "replace")`) and the completion read from a whole
    /// answer's body; fields the record already has are kept. Nothing under `none`.
    pub fn fill(&self, record: &mut LogRecord, prompt: Option<&[u8]>, answer: Option<&[u8]>) {
        if self.policy == ContentPolicy::None {
            return;
        }
        if let (None, Some(prompt)) = (&record.prompt, prompt) {
            record.prompt = Some(String::from_utf8_lossy(prompt).into_owned());
        }
        if let (None, None, Some(answer)) = (&record.completion, &record.tool_calls, answer) {
            let (completion, tool_calls) = completion_of(answer);
            record.completion = Some(completion);
            record.tool_calls = tool_calls;
        }
    }

    /// Id, content policy, secret mask and safe text: the record as it is stored or spooled.
    pub fn prepare(&mut self, record: &mut LogRecord) {
        if record.id.is_empty() {
            record.id = self.new_id(record.ts + record.latency_ms / 1000.0);
        }
        let caller_key = record.caller_key.take();
        let key = caller_key.as_deref();
        record.content = self.policy.name().to_owned();
        self.clean(&mut record.error_message, key);
        if self.policy == ContentPolicy::None {
            record.prompt = None;
            record.completion = None;
            record.tool_calls = None;
        } else {
            self.clean(&mut record.prompt, key);
            self.clean(&mut record.completion, key);
            self.clean(&mut record.tool_calls, key);
        }
        record.sanitize();
    }

    /// Python's `new_id`: time-sortable, unique across processes (the prefix) and calls.
    pub fn new_id(&mut self, ts: f64) -> String {
        let seq = self.sequence & 0xFF_FFFF;
        self.sequence = self.sequence.wrapping_add(1);
        format!(
            "{:014x}{}{:06x}",
            (ts * 1_000_000.0) as i64,
            self.id_prefix,
            seq
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(n: usize) -> LogRecord {
        LogRecord {
            id: String::new(),
            ts: 1_765_000_000.25 + n as f64,
            request_id: format!("req-{n}"),
            door: "http".into(),
            key_id: None,
            team: None,
            model: "gpt-4o-mini".into(),
            provider: Some("up".into()),
            provider_model: Some("gpt-4o-mini".into()),
            endpoint: "chat".into(),
            stream: false,
            status: 200,
            error_type: None,
            error_message: None,
            latency_ms: 1.5,
            upstream_ms: 1.0,
            overhead_ms: 0.5,
            ttft_ms: None,
            prompt_tokens: Some(12),
            completion_tokens: Some(3),
            total_tokens: Some(15),
            tokens_counted: false,
            cost_usd: Some(0.0001),
            cache_status: "off".into(),
            content: "full".into(),
            prompt: Some("Say hello sk-provider-secret".into()),
            completion: Some("hello there".into()),
            tool_calls: None,
            attempts: None,
            caller_key: None,
        }
    }

    #[test]
    fn nul_is_escaped_in_every_text_field() {
        let mut r = sample(1);
        r.model = "gpt\0x".into();
        r.error_message = Some("bad\0".into());
        r.prompt = Some("\0\0".into());
        assert!(r.sanitize());
        assert_eq!(r.model, "gpt\\u0000x");
        assert_eq!(r.error_message.as_deref(), Some("bad\\u0000"));
        assert_eq!(r.prompt.as_deref(), Some("\\u0000\\u0000"));
        assert!(!r.sanitize());
        assert!(!String::from_utf8(r.encode()).unwrap().contains('\0'));
    }

    #[test]
    fn decodes_the_msgspec_form_with_defaults_and_ignores_unknown_fields() {
        let raw = br#"{"id":"","ts":1.5,"request_id":"r","door":"grpc","model":"m","endpoint":"chat","status":499,"latency_ms":2.0,"upstream_ms":0,"overhead_ms":2.0,"extra":1}"#;
        let r = LogRecord::decode(raw).unwrap();
        assert_eq!(r.cache_status, "off");
        assert_eq!(r.content, "none");
        assert_eq!(r.upstream_ms, 0.0);
        assert!(r.prompt.is_none());
    }

    #[test]
    fn prepare_applies_the_policy_and_the_masks() {
        let mask = SecretMask::new(&["sk-provider-secret"]);
        let mut full = ContentFilter::new(ContentPolicy::Full, mask.clone(), "abcdefghijklmnop");
        let mut r = sample(1);
        r.caller_key = Some("callerkey1".into());
        r.completion = Some("you said callerkey1".into());
        full.prepare(&mut r);
        assert_eq!(r.prompt.as_deref(), Some("Say hello [SECRET]"));
        assert_eq!(r.completion.as_deref(), Some("you said [SECRET]"));
        assert_eq!(r.id.len(), 14 + 10 + 6);
        assert!(r.id.contains("abcdefghij"));
        assert!(!String::from_utf8(r.encode())
            .unwrap()
            .contains("caller_key"));

        let mut none = ContentFilter::new(ContentPolicy::None, mask, "p");
        let mut r = sample(2);
        none.prepare(&mut r);
        assert_eq!(
            (r.prompt, r.completion, r.content.as_str()),
            (None, None, "none")
        );
    }

    #[test]
    fn completion_is_read_from_the_answer_as_python_reads_it() {
        let body = br#"{"choices":[{"message":{"content":"a","tool_calls":[{"id":"t"}]}},
            {"message":{"content":"b","tool_calls": [ {"id":"u"} ]}},{"text":"c"}]}"#;
        let (text, tools) = completion_of(body);
        assert_eq!(text, "a\nb\nc");
        assert_eq!(tools.as_deref(), Some(r#"[[{"id":"t"}],[ {"id":"u"} ]]"#));
        assert_eq!(completion_of(b"{}"), (String::new(), None));
        assert_eq!(completion_of(b"not json"), (String::new(), None));
        // A field of the wrong type refuses the whole body, as msgspec does.
        let bad = br#"{"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":"x"}}"#;
        assert_eq!(completion_of(bad), (String::new(), None));
    }

    #[test]
    fn floats_round_trip_exactly() {
        // Python's repr of 42.1 - 30.0; an approximate parse reads 12.1.
        let mut r = sample(1);
        r.overhead_ms = 12.100000000000001;
        let back = LogRecord::decode(&r.encode()).unwrap();
        assert_eq!(back.overhead_ms.to_bits(), r.overhead_ms.to_bits());
    }

    #[test]
    fn ids_follow_pythons_new_id() {
        let mut f = ContentFilter::new(ContentPolicy::Full, SecretMask::default(), "0123456789ab");
        // f"{int(1765000000.25 * 1_000_000):014x}" in Python
        assert_eq!(f.new_id(1_765_000_000.25), "064542160b20900123456789000000");
        assert_eq!(f.new_id(1_765_000_000.25), "064542160b20900123456789000001");
    }
}
