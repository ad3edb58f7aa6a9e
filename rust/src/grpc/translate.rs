//! The chat hot path's translation, protobuf <-> OpenAI JSON, without Python objects: a
//! `ChatCompletionRequest` straight to the JSON body the HTTP door would receive, and the
//! upstream's JSON answer straight to a `ChatCompletionResponse`.
//!
//! Only the common shape is handled here (text messages, sampling fields, no tools, no
//! `extra_json`): anything else, and anything invalid, answers `None` and the Python code
//! (python/llm_proxy/grpc/bodies.py, replies.py) does the work and names the error. The two
//! must agree; tests/e2e/test_grpc.py compares what reaches the upstream and the client.

use bytes::Bytes;
use prost::Message;
use serde::Deserialize;

// -- the request ---------------------------------------------------------------------------

/// ChatCompletionRequest and StreamChatCompletionRequest (the same fields). Fields the fast
/// path does not translate are kept as bytes, only to see whether they are set.
#[derive(Clone, PartialEq, Message)]
struct ChatRequest {
    #[prost(string, tag = "1")]
    model: String,
    #[prost(message, repeated, tag = "2")]
    messages: Vec<RequestMessage>,
    #[prost(double, optional, tag = "3")]
    temperature: Option<f64>,
    #[prost(double, optional, tag = "4")]
    top_p: Option<f64>,
    #[prost(int32, optional, tag = "5")]
    max_tokens: Option<i32>,
    #[prost(string, repeated, tag = "6")]
    stop: Vec<String>,
    #[prost(int64, optional, tag = "7")]
    seed: Option<i64>,
    #[prost(int32, optional, tag = "8")]
    n: Option<i32>,
    #[prost(bytes = "bytes", repeated, tag = "9")]
    tools: Vec<Bytes>,
    #[prost(bytes = "bytes", optional, tag = "10")]
    tool_choice: Option<Bytes>,
    #[prost(bytes = "bytes", optional, tag = "11")]
    response_format: Option<Bytes>,
    #[prost(string, tag = "15")]
    extra_json: String,
}

#[derive(Clone, PartialEq, Message)]
struct RequestMessage {
    #[prost(string, tag = "1")]
    role: String,
    #[prost(string, optional, tag = "2")]
    content: Option<String>,
    #[prost(bytes = "bytes", repeated, tag = "3")]
    content_parts: Vec<Bytes>,
    #[prost(string, optional, tag = "4")]
    name: Option<String>,
    #[prost(bytes = "bytes", repeated, tag = "5")]
    tool_calls: Vec<Bytes>,
    #[prost(string, optional, tag = "6")]
    tool_call_id: Option<String>,
    #[prost(string, optional, tag = "7")]
    refusal: Option<String>,
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes a string exactly as JSON needs; it cannot fail on a Vec.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn push_key(out: &mut Vec<u8>, key: &str) {
    out.push(b',');
    push_str(out, key);
    out.push(b':');
}

fn push_f64(out: &mut Vec<u8>, key: &str, v: f64) -> Option<()> {
    if !v.is_finite() {
        return None; // JSON has no NaN or infinity: let the Python path answer
    }
    push_key(out, key);
    let _ = serde_json::to_writer(&mut *out, &v);
    Some(())
}

/// The OpenAI chat body for a serialized chat request, or None when the fast path does not
/// apply (the Python path then builds it, or names what is wrong).
pub fn chat_body(message: &[u8], stream: bool) -> Option<Vec<u8>> {
    let request = ChatRequest::decode(message).ok()?;
    if request.model.is_empty()
        || !request.tools.is_empty()
        || request.tool_choice.is_some()
        || request.response_format.is_some()
        || !request.extra_json.is_empty()
    {
        return None;
    }
    let mut out = Vec::with_capacity(message.len() + 128);
    out.extend_from_slice(b"{\"model\":");
    push_str(&mut out, &request.model);
    out.extend_from_slice(b",\"messages\":[");
    for (i, m) in request.messages.iter().enumerate() {
        if m.role.is_empty() || !m.content_parts.is_empty() || !m.tool_calls.is_empty() {
            return None;
        }
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"role\":");
        push_str(&mut out, &m.role);
        out.extend_from_slice(b",\"content\":");
        match &m.content {
            Some(content) => push_str(&mut out, content),
            None => out.extend_from_slice(b"null"),
        }
        for (key, value) in [
            ("name", &m.name),
            ("tool_call_id", &m.tool_call_id),
            ("refusal", &m.refusal),
        ] {
            if let Some(value) = value {
                push_key(&mut out, key);
                push_str(&mut out, value);
            }
        }
        out.push(b'}');
    }
    out.push(b']');
    if let Some(v) = request.temperature {
        push_f64(&mut out, "temperature", v)?;
    }
    if let Some(v) = request.top_p {
        push_f64(&mut out, "top_p", v)?;
    }
    if let Some(v) = request.max_tokens {
        push_key(&mut out, "max_tokens");
        out.extend_from_slice(v.to_string().as_bytes());
    }
    if !request.stop.is_empty() {
        push_key(&mut out, "stop");
        let _ = serde_json::to_writer(&mut out, &request.stop);
    }
    if let Some(v) = request.seed {
        push_key(&mut out, "seed");
        out.extend_from_slice(v.to_string().as_bytes());
    }
    if let Some(v) = request.n {
        push_key(&mut out, "n");
        out.extend_from_slice(v.to_string().as_bytes());
    }
    if stream {
        out.extend_from_slice(b",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    }
    out.push(b'}');
    Some(out)
}

// -- the answer ----------------------------------------------------------------------------

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    created: i64,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<JsonUsage>,
    #[serde(default)]
    system_fingerprint: Option<String>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    index: i64,
    #[serde(default)]
    message: Option<JsonMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct JsonMessage {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<JsonToolCall>>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct JsonToolCall {
    #[serde(default)]
    #[allow(dead_code)] // read so that a wrong type fails as it does in Python
    index: i64,
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    function: Option<JsonFunction>,
}

#[derive(Deserialize)]
struct JsonFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct JsonUsage {
    #[serde(default)]
    prompt_tokens: i64,
    #[serde(default)]
    completion_tokens: i64,
    #[serde(default)]
    total_tokens: i64,
}

#[derive(Clone, PartialEq, Message)]
struct ChatResponse {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "2")]
    model: String,
    #[prost(int64, tag = "3")]
    created: i64,
    #[prost(message, repeated, tag = "4")]
    choices: Vec<ChatChoice>,
    #[prost(message, optional, tag = "5")]
    usage: Option<Usage>,
    #[prost(string, tag = "6")]
    request_id: String,
    #[prost(string, tag = "7")]
    cache_status: String,
    #[prost(string, optional, tag = "8")]
    system_fingerprint: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ChatChoice {
    #[prost(int32, tag = "1")]
    index: i32,
    #[prost(message, optional, tag = "2")]
    message: Option<AnswerMessage>,
    #[prost(string, tag = "3")]
    finish_reason: String,
}

#[derive(Clone, PartialEq, Message)]
struct AnswerMessage {
    #[prost(string, tag = "1")]
    role: String,
    #[prost(string, optional, tag = "2")]
    content: Option<String>,
    #[prost(message, repeated, tag = "5")]
    tool_calls: Vec<ToolCall>,
    #[prost(string, optional, tag = "7")]
    refusal: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ToolCall {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "2")]
    kind: String,
    #[prost(message, optional, tag = "3")]
    function: Option<FunctionCall>,
}

#[derive(Clone, PartialEq, Message)]
struct FunctionCall {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    arguments: String,
}

#[derive(Clone, PartialEq, Message)]
struct Usage {
    #[prost(int32, tag = "1")]
    prompt_tokens: i32,
    #[prost(int32, tag = "2")]
    completion_tokens: i32,
    #[prost(int32, tag = "3")]
    total_tokens: i32,
}

/// Python's `value or default`: an empty string counts as missing.
fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|s| !s.is_empty())
}

fn int32(v: i64) -> Option<i32> {
    i32::try_from(v).ok()
}

/// A serialized ChatCompletionResponse for the upstream's JSON chat answer, or None when the
/// answer is not of the expected shape (the Python path then names the problem).
pub fn chat_response(body: &[u8], request_id: &str, cache_status: &str) -> Option<Vec<u8>> {
    // serde would also take a struct written as an array; the Python decoder does not.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let data: Completion = serde_json::from_slice(body).ok()?;
    let mut choices = Vec::with_capacity(data.choices.len());
    for c in data.choices {
        let m = c.message.unwrap_or(JsonMessage {
            role: None,
            content: None,
            tool_calls: None,
            refusal: None,
        });
        let tool_calls = m
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .map(|t| {
                let f = t.function.unwrap_or(JsonFunction {
                    name: None,
                    arguments: None,
                });
                ToolCall {
                    id: t.id.unwrap_or_default(),
                    kind: non_empty(t.kind).unwrap_or_else(|| "function".into()),
                    function: Some(FunctionCall {
                        name: f.name.unwrap_or_default(),
                        arguments: f.arguments.unwrap_or_default(),
                    }),
                }
            })
            .collect();
        let message = AnswerMessage {
            role: non_empty(m.role).unwrap_or_else(|| "assistant".into()),
            content: m.content,
            tool_calls,
            refusal: m.refusal,
        };
        choices.push(ChatChoice {
            index: int32(c.index)?,
            message: Some(message),
            finish_reason: c.finish_reason.unwrap_or_default(),
        });
    }
    let usage = match data.usage {
        Some(u) => Some(Usage {
            prompt_tokens: int32(u.prompt_tokens)?,
            completion_tokens: int32(u.completion_tokens)?,
            total_tokens: int32(u.total_tokens)?,
        }),
        None => None,
    };
    let response = ChatResponse {
        id: data.id,
        model: data.model,
        created: data.created,
        choices,
        usage,
        request_id: request_id.to_owned(),
        cache_status: cache_status.to_owned(),
        system_fingerprint: data.system_fingerprint,
    };
    Some(response.encode_to_vec())
}

// -- stream chunks -------------------------------------------------------------------------

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    created: i64,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<JsonUsage>,
    #[serde(default)]
    system_fingerprint: Option<String>,
    #[serde(default)]
    error: Option<Box<serde_json::value::RawValue>>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    index: i64,
    #[serde(default)]
    delta: Option<JsonDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct JsonToolCallDelta {
    #[serde(default)]
    index: i64,
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    function: Option<JsonFunction>,
}

#[derive(Deserialize)]
struct JsonDelta {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<JsonToolCallDelta>>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct StreamResponse {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "2")]
    model: String,
    #[prost(int64, tag = "3")]
    created: i64,
    #[prost(message, repeated, tag = "4")]
    choices: Vec<StreamChoice>,
    #[prost(message, optional, tag = "5")]
    usage: Option<Usage>,
    #[prost(string, tag = "6")]
    request_id: String,
    #[prost(string, tag = "7")]
    cache_status: String,
    #[prost(string, optional, tag = "8")]
    system_fingerprint: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct StreamChoice {
    #[prost(int32, tag = "1")]
    index: i32,
    #[prost(message, optional, tag = "2")]
    delta: Option<ChoiceDelta>,
    #[prost(string, optional, tag = "3")]
    finish_reason: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ChoiceDelta {
    #[prost(string, optional, tag = "1")]
    role: Option<String>,
    #[prost(string, optional, tag = "2")]
    content: Option<String>,
    #[prost(message, repeated, tag = "3")]
    tool_calls: Vec<ToolCallDelta>,
    #[prost(string, optional, tag = "4")]
    refusal: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ToolCallDelta {
    #[prost(int32, tag = "1")]
    index: i32,
    #[prost(string, optional, tag = "2")]
    id: Option<String>,
    #[prost(string, optional, tag = "3")]
    kind: Option<String>,
    #[prost(string, optional, tag = "4")]
    function_name: Option<String>,
    #[prost(string, optional, tag = "5")]
    arguments: Option<String>,
}

fn stream_message(data: &[u8]) -> Option<StreamResponse> {
    if data.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let chunk: Chunk = serde_json::from_slice(data).ok()?;
    if chunk.error.is_some() {
        return None; // a failure mid-stream: the Python path names it
    }
    let mut choices = Vec::with_capacity(chunk.choices.len());
    for c in chunk.choices {
        let d = c.delta.unwrap_or(JsonDelta {
            role: None,
            content: None,
            tool_calls: None,
            refusal: None,
        });
        let mut tool_calls = Vec::new();
        for t in d.tool_calls.unwrap_or_default() {
            let (function_name, arguments) = match t.function {
                Some(f) => (f.name, f.arguments),
                None => (None, None),
            };
            tool_calls.push(ToolCallDelta {
                index: int32(t.index)?,
                id: t.id,
                kind: t.kind,
                function_name,
                arguments,
            });
        }
        let delta = ChoiceDelta {
            role: d.role,
            content: d.content,
            tool_calls,
            refusal: d.refusal,
        };
        choices.push(StreamChoice {
            index: int32(c.index)?,
            delta: Some(delta),
            finish_reason: c.finish_reason,
        });
    }
    let usage = match chunk.usage {
        Some(u) => Some(Usage {
            prompt_tokens: int32(u.prompt_tokens)?,
            completion_tokens: int32(u.completion_tokens)?,
            total_tokens: int32(u.total_tokens)?,
        }),
        None => None,
    };
    Some(StreamResponse {
        id: chunk.id,
        model: chunk.model,
        created: chunk.created,
        choices,
        usage,
        request_id: String::new(),
        cache_status: String::new(),
        system_fingerprint: chunk.system_fingerprint,
    })
}

/// Serialized StreamChatCompletionResponses for OpenAI SSE events (`data: {...}` blocks, as
/// the relay hands them over), the first of them carrying `request_id` and `cache_status`
/// when `first`; or None when the events are not of that plain shape or one is unexpected
/// (the Python path then renders them, and names any error).
pub fn chat_chunks(
    events: &[u8],
    first: bool,
    request_id: &str,
    cache_status: &str,
) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut first = first;
    for block in events.split_inner() {
        if block.is_empty() {
            continue;
        }
        let data = block.strip_prefix(b"data: ")?;
        if data.contains(&b'\n') || data.contains(&b'\r') {
            return None;
        }
        if data == b"[DONE]" {
            continue;
        }
        let mut message = stream_message(data)?;
        if first {
            first = false;
            message.request_id = request_id.to_owned();
            message.cache_status = cache_status.to_owned();
        }
        out.push(message.encode_to_vec());
    }
    Some(out)
}

trait Blocks {
    fn split_inner(&self) -> BlockIter<'_>;
}

impl Blocks for [u8] {
    fn split_inner(&self) -> BlockIter<'_> {
        BlockIter { rest: self }
    }
}

/// The blocks of an event stream, split at blank lines (`\n\n`).
struct BlockIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for BlockIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        match memchr::memmem::find(self.rest, b"\n\n") {
            Some(at) => {
                let block = &self.rest[..at];
                self.rest = &self.rest[at + 2..];
                Some(block)
            }
            None => {
                let block = self.rest;
                self.rest = &[];
                Some(block)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(messages: Vec<RequestMessage>) -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages,
            ..ChatRequest::default()
        }
    }

    fn text(role: &str, content: &str) -> RequestMessage {
        RequestMessage {
            role: role.into(),
            content: Some(content.into()),
            ..RequestMessage::default()
        }
    }

    fn json(body: &[u8]) -> serde_json::Value {
        serde_json::from_slice(body).unwrap()
    }

    #[test]
    fn a_plain_chat_request_becomes_the_openai_body() {
        let mut r = request(vec![
            text("system", "Be \"brief\"\n"),
            text("user", "héllo"),
        ]);
        r.temperature = Some(0.5);
        r.max_tokens = Some(12);
        r.stop = vec!["\n\n".into()];
        r.seed = Some(-3);
        r.messages[1].name = Some("ana".into());
        let body = chat_body(&r.encode_to_vec(), false).unwrap();
        assert_eq!(
            json(&body),
            serde_json::json!({
                "model": "m",
                "messages": [
                    {"role": "system", "content": "Be \"brief\"\n"},
                    {"role": "user", "content": "héllo", "name": "ana"},
                ],
                "temperature": 0.5, "max_tokens": 12, "stop": ["\n\n"], "seed": -3,
            })
        );
        let streamed = json(&chat_body(&r.encode_to_vec(), true).unwrap());
        assert_eq!(streamed["stream"], true);
        assert_eq!(
            streamed["stream_options"],
            serde_json::json!({"include_usage": true})
        );
    }

    #[test]
    fn a_message_without_content_sends_null() {
        let mut m = text("assistant", "");
        m.content = None;
        let body = json(&chat_body(&request(vec![m]).encode_to_vec(), false).unwrap());
        assert_eq!(body["messages"][0]["content"], serde_json::Value::Null);
    }

    #[test]
    fn anything_beyond_the_plain_shape_goes_to_python() {
        let plain = request(vec![text("user", "x")]);
        let mut cases = Vec::new();
        let mut r = plain.clone();
        r.model.clear();
        cases.push(r);
        let mut r = plain.clone();
        r.extra_json = "{}".into();
        cases.push(r);
        let mut r = plain.clone();
        r.tools.push(Bytes::new());
        cases.push(r);
        let mut r = plain.clone();
        r.response_format = Some(Bytes::new());
        cases.push(r);
        let mut r = plain.clone();
        r.messages[0].content_parts.push(Bytes::new());
        cases.push(r);
        let mut r = plain.clone();
        r.messages[0].role.clear();
        cases.push(r);
        let mut r = plain.clone();
        r.temperature = Some(f64::NAN);
        cases.push(r);
        for case in cases {
            assert_eq!(chat_body(&case.encode_to_vec(), false), None);
        }
        assert_eq!(chat_body(b"\xff\xff", false), None);
        assert!(chat_body(&plain.encode_to_vec(), false).is_some());
    }

    #[test]
    fn an_openai_answer_becomes_the_response_message() {
        let body = br#"{"id":"c1","object":"chat.completion","created":17,"model":"g",
            "choices":[{"index":0,"message":{"role":"assistant","content":"Hi",
            "tool_calls":[{"id":"t1","type":"function","function":{"name":"f","arguments":"{}"}}]},
            "finish_reason":"tool_calls","logprobs":null}],
            "usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        let encoded = chat_response(body, "rid", "miss").unwrap();
        let r = ChatResponse::decode(&encoded[..]).unwrap();
        assert_eq!(
            (r.id.as_str(), r.model.as_str(), r.created),
            ("c1", "g", 17)
        );
        assert_eq!(
            (r.request_id.as_str(), r.cache_status.as_str()),
            ("rid", "miss")
        );
        let choice = &r.choices[0];
        let message = choice.message.as_ref().unwrap();
        assert_eq!(message.content.as_deref(), Some("Hi"));
        assert_eq!(message.tool_calls[0].function.as_ref().unwrap().name, "f");
        assert_eq!(choice.finish_reason, "tool_calls");
        assert_eq!(r.usage.unwrap().total_tokens, 5);
        assert_eq!(r.system_fingerprint, None);
    }

    #[test]
    fn chunks_become_stream_messages_and_only_the_first_carries_the_ids() {
        let events = b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":null}]}\n\ndata: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\ndata: [DONE]\n\n";
        let messages = chat_chunks(events, true, "rid", "miss").unwrap();
        assert_eq!(messages.len(), 2);
        let one = StreamResponse::decode(&messages[0][..]).unwrap();
        let two = StreamResponse::decode(&messages[1][..]).unwrap();
        assert_eq!(
            (one.request_id.as_str(), one.cache_status.as_str()),
            ("rid", "miss")
        );
        assert_eq!(
            one.choices[0].delta.as_ref().unwrap().content.as_deref(),
            Some("Hi")
        );
        assert_eq!(one.choices[0].finish_reason, None);
        assert_eq!(two.request_id, "");
        assert_eq!(two.usage.unwrap().total_tokens, 3);
        assert!(chat_chunks(b"data: [DONE]\n\n", true, "r", "c")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn other_event_shapes_and_stream_errors_go_to_python() {
        for events in [
            &b": keep-alive\n\n"[..],
            b"event: x\ndata: {}\n\n",
            b"data: {}\r\n\r\n",
            b"data: {\"error\":{\"message\":\"boom\"}}\n\n",
            b"data: nope\n\n",
        ] {
            assert_eq!(
                chat_chunks(events, false, "r", "c"),
                None,
                "{:?}",
                String::from_utf8_lossy(events)
            );
        }
    }

    #[test]
    fn an_answer_of_another_shape_goes_to_python() {
        for body in [
            &b"nope"[..],
            br#"{"choices":[{"message":{"content":[1]}}]}"#,
            br#"{"created":"x"}"#,
            b"[]",
        ] {
            assert_eq!(chat_response(body, "r", "off"), None);
        }
    }
}
