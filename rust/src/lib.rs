//! The hot-path core of llm-proxy. This file only binds: the logic lives in the plain-Rust
//! modules below, which `cargo test` exercises without an interpreter.

pub mod cache_key;
pub mod grpc;
pub mod logwriter;
pub mod messages_stream;
pub mod sse;
pub mod tokens;

#[cfg(feature = "python")]
mod bindings {
    use pyo3::create_exception;
    use pyo3::exceptions::PyValueError;
    use pyo3::prelude::*;
    use pyo3::types::{PyBytes, PyDict, PyList};

    use crate::cache_key as keys;
    use crate::logwriter::{self, record::ContentPolicy, redact as redaction};
    use crate::messages_stream;
    use crate::sse::{self, Dialect};
    use crate::tokens::{self, Encoding};

    /// Inputs larger than this are processed without the GIL; smaller ones are quicker with it.
    const RELEASE_GIL_BYTES: usize = 64 * 1024;

    create_exception!(
        llm_proxy._core,
        SseError,
        PyValueError,
        "The upstream's event stream cannot be relayed (e.g. an event over max_event_bytes)."
    );

    fn value_error(err: impl std::fmt::Display) -> PyErr {
        PyValueError::new_err(err.to_string())
    }

    fn encoding(name: &str) -> PyResult<Encoding> {
        Encoding::from_name(name).map_err(value_error)
    }

    /// xxh3-128 (32 hex chars) of the namespace and the canonical form of a JSON request body.
    #[pyfunction]
    #[pyo3(signature = (body, namespace = ""))]
    fn cache_key(py: Python<'_>, body: &[u8], namespace: &str) -> PyResult<String> {
        if body.len() > RELEASE_GIL_BYTES {
            py.detach(|| keys::cache_key_hex(body, namespace))
        } else {
            keys::cache_key_hex(body, namespace)
        }
        .map_err(value_error)
    }

    /// The canonical bytes `cache_key` hashes (without the namespace).
    #[pyfunction]
    fn canonical_json<'py>(py: Python<'py>, body: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let canonical = if body.len() > RELEASE_GIL_BYTES {
            py.detach(|| keys::canonical_json(body))
        } else {
            keys::canonical_json(body)
        }
        .map_err(value_error)?;
        Ok(PyBytes::new(py, &canonical))
    }

    /// Exact token count of `text`; special-token text counts as ordinary text.
    #[pyfunction]
    #[pyo3(signature = (text, encoding = "o200k_base"))]
    fn count_tokens(py: Python<'_>, text: &str, encoding: &str) -> PyResult<usize> {
        let enc = self::encoding(encoding)?;
        Ok(if text.len() > RELEASE_GIL_BYTES {
            py.detach(|| enc.count(text))
        } else {
            enc.count(text)
        })
    }

    /// The encoding OpenAI uses for `model` (`o200k_base` when unknown).
    #[pyfunction]
    fn encoding_for_model(model: &str) -> &'static str {
        tokens::encoding_for_model(model).name()
    }

    /// Whether `encoding`'s tables are loaded in this process (its first count loads them).
    /// The OpenAI finish_reason for an Anthropic stop_reason (the one table both languages use).
    #[pyfunction]
    #[pyo3(signature = (stop_reason = None))]
    fn openai_finish_reason(stop_reason: Option<&str>) -> &'static str {
        sse::openai_finish_reason(stop_reason.unwrap_or("end_turn"))
    }

    #[pyfunction]
    fn encoding_loaded(encoding: &str) -> PyResult<bool> {
        Ok(self::encoding(encoding)?.is_loaded())
    }

    /// Prompt tokens of a JSON `messages` array, counted the way OpenAI bills them.
    #[pyfunction]
    fn count_chat_tokens(py: Python<'_>, messages: &[u8], model: &str) -> PyResult<usize> {
        let enc = tokens::encoding_for_model(model);
        if messages.len() > RELEASE_GIL_BYTES {
            py.detach(|| tokens::count_chat_tokens(messages, enc))
        } else {
            tokens::count_chat_tokens(messages, enc)
        }
        .map_err(value_error)
    }

    /// What a relayed stream said; see `_core.pyi`.
    #[pyclass(frozen, module = "llm_proxy._core", skip_from_py_object)]
    struct StreamSummary {
        #[pyo3(get)]
        text: String,
        #[pyo3(get)]
        tool_calls_json: String,
        #[pyo3(get)]
        finish_reason: Option<String>,
        #[pyo3(get)]
        prompt_tokens: u64,
        #[pyo3(get)]
        completion_tokens: u64,
        #[pyo3(get)]
        usage_counted: bool,
        #[pyo3(get)]
        events: u64,
        #[pyo3(get)]
        done: bool,
        #[pyo3(get)]
        error: Option<String>,
    }

    #[pymethods]
    impl StreamSummary {
        fn __repr__(&self) -> String {
            let mut text: String = self.text.chars().take(40).collect();
            if text.len() < self.text.len() {
                text.push_str("...");
            }
            format!(
                "StreamSummary(text={text:?}, tool_calls_json={:?}, finish_reason={}, \
                 prompt_tokens={}, completion_tokens={}, usage_counted={}, events={}, done={}, \
                 error={})",
                self.tool_calls_json,
                py_optional(&self.finish_reason),
                self.prompt_tokens,
                self.completion_tokens,
                py_bool(self.usage_counted),
                self.events,
                py_bool(self.done),
                py_optional(&self.error),
            )
        }
    }

    fn py_optional(value: &Option<String>) -> String {
        value
            .as_ref()
            .map_or_else(|| "None".to_owned(), |v| format!("{v:?}"))
    }

    fn py_bool(b: bool) -> &'static str {
        if b {
            "True"
        } else {
            "False"
        }
    }

    impl From<sse::Summary> for StreamSummary {
        fn from(s: sse::Summary) -> Self {
            Self {
                text: s.text,
                tool_calls_json: s.tool_calls_json,
                finish_reason: s.finish_reason,
                prompt_tokens: s.prompt_tokens,
                completion_tokens: s.completion_tokens,
                usage_counted: s.usage_counted,
                events: s.events,
                done: s.done,
                error: s.error,
            }
        }
    }

    /// Relays an upstream SSE stream event by event and summarizes it; see `_core.pyi`.
    #[pyclass(module = "llm_proxy._core")]
    struct SseRelay {
        inner: sse::SseRelay,
    }

    #[pymethods]
    impl SseRelay {
        #[new]
        #[pyo3(signature = (dialect = "openai", keep_comments = false, max_event_bytes = 1_048_576, model = ""))]
        fn new(
            dialect: &str,
            keep_comments: bool,
            max_event_bytes: usize,
            model: &str,
        ) -> PyResult<Self> {
            let dialect = Dialect::from_name(dialect).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "unknown SSE dialect {dialect:?}; known dialects: {}",
                    Dialect::NAMES.join(", ")
                ))
            })?;
            if max_event_bytes == 0 {
                return Err(PyValueError::new_err("max_event_bytes must be positive"));
            }
            let encoding = tokens::encoding_for_model(model);
            Ok(Self {
                inner: sse::SseRelay::new(dialect, keep_comments, max_event_bytes, encoding),
            })
        }

        /// The complete events in `chunk` (with what came before), as the upstream sent them.
        fn feed<'py>(&mut self, py: Python<'py>, chunk: &[u8]) -> PyResult<Bound<'py, PyList>> {
            let mut events: Vec<Bound<'py, PyBytes>> = Vec::new();
            self.inner
                .feed(chunk, |event| events.push(PyBytes::new(py, event)))
                .map_err(|e| SseError::new_err(e.to_string()))?;
            PyList::new(py, events)
        }

        /// The first content problem seen so far, or None (lets a caller stop relaying early).
        #[getter]
        fn error(&self) -> Option<String> {
            self.inner.error().map(str::to_owned)
        }

        /// Ends the stream and returns its summary (the same one on every call).
        fn finish(&mut self, py: Python<'_>) -> StreamSummary {
            let inner = &mut self.inner;
            if inner.text_len() > RELEASE_GIL_BYTES {
                py.detach(|| inner.finish()).into()
            } else {
                inner.finish().into()
            }
        }
    }

    /// One stream's translation from OpenAI chat chunks to Anthropic's Messages events.
    #[pyclass(module = "llm_proxy._core")]
    struct MessagesStream {
        inner: messages_stream::MessagesStream,
        out: Vec<u8>,
    }

    #[pymethods]
    impl MessagesStream {
        #[new]
        fn new(model: &str) -> Self {
            Self {
                inner: messages_stream::MessagesStream::new(model),
                out: Vec::new(),
            }
        }

        /// The Anthropic events for one item (one or more complete OpenAI SSE events).
        fn feed<'py>(&mut self, py: Python<'py>, item: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
            self.out.clear();
            self.inner.feed(item, &mut self.out).map_err(value_error)?;
            Ok(PyBytes::new(py, &self.out))
        }

        /// The closing events (once; after `[DONE]`, or when the stream ended without it).
        fn finish<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
            self.out.clear();
            self.inner.finish(&mut self.out);
            PyBytes::new(py, &self.out)
        }

        #[getter]
        fn started(&self) -> bool {
            self.inner.started()
        }

        #[getter]
        fn finished(&self) -> bool {
            self.inner.finished()
        }
    }

    fn seconds(name: &str, value: f64) -> PyResult<std::time::Duration> {
        std::time::Duration::try_from_secs_f64(value)
            .map_err(|_| value_error(format!("{name} must be a finite number of seconds >= 0")))
    }

    /// Mask API keys, Luhn-valid card numbers, IBANs, e-mail addresses and phone numbers.
    #[pyfunction]
    fn redact(py: Python<'_>, text: &str) -> String {
        if text.len() > RELEASE_GIL_BYTES {
            py.detach(|| redaction::redact(text))
        } else {
            redaction::redact(text)
        }
    }

    /// The request-log writer: a Rust thread batches, redacts and writes records; see
    /// `_core.pyi`.
    #[pyclass(frozen, module = "llm_proxy._core")]
    struct LogWriter {
        inner: logwriter::LogWriter,
    }

    #[pymethods]
    impl LogWriter {
        #[new]
        #[pyo3(signature = (
            store, spool_path, *, queue_max_bytes = 256 << 20, batch_size = 500,
            max_batch_delay_s = 0.025, store_timeout_s = 2.0, retry_interval_s = 1.0,
            retention_days = 30.0, max_rows = None, purge_interval_s = 300.0,
            content = "full", secrets = Vec::new(), id_prefix = "", priority = "normal"
        ))]
        #[allow(clippy::too_many_arguments)]
        fn new(
            store: &str,
            spool_path: &str,
            queue_max_bytes: usize,
            batch_size: usize,
            max_batch_delay_s: f64,
            store_timeout_s: f64,
            retry_interval_s: f64,
            retention_days: f64,
            max_rows: Option<u64>,
            purge_interval_s: f64,
            content: &str,
            secrets: Vec<String>,
            id_prefix: &str,
            priority: &str,
        ) -> PyResult<Self> {
            let idle_priority = match priority {
                "normal" => false,
                "idle" => true,
                other => {
                    return Err(value_error(format!(
                        "unknown writer priority {other:?}: use normal or idle"
                    )))
                }
            };
            let settings = logwriter::Settings {
                store_url: store.to_owned(),
                spool_path: spool_path.into(),
                queue_max_bytes,
                batch_size,
                max_batch_delay: seconds("max_batch_delay_s", max_batch_delay_s)?,
                store_timeout: seconds("store_timeout_s", store_timeout_s)?,
                retry_interval: seconds("retry_interval_s", retry_interval_s)?,
                retention_days,
                max_rows,
                purge_interval: seconds("purge_interval_s", purge_interval_s)?,
                content: ContentPolicy::from_name(content).map_err(value_error)?,
                secrets,
                id_prefix: id_prefix.to_owned(),
                idle_priority,
            };
            let inner = logwriter::LogWriter::start(settings).map_err(value_error)?;
            Ok(Self { inner })
        }

        /// Queue one record (msgspec JSON of a LogRecord, and optionally the prompt and answer
        /// bodies its content is read from); False if dropped (and counted).
        #[pyo3(signature = (record, prompt = None, answer = None))]
        fn submit(&self, record: &[u8], prompt: Option<&[u8]>, answer: Option<&[u8]>) -> bool {
            self.inner.submit_with(record, prompt, answer)
        }

        /// Wait (without the GIL) until everything submitted so far is stored or spooled.
        fn flush(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
            let timeout = seconds("timeout", timeout)?;
            Ok(py.detach(|| self.inner.flush(timeout)))
        }

        /// Stop taking records, store or spool everything queued, and stop the thread.
        fn close(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
            let timeout = seconds("timeout", timeout)?;
            Ok(py.detach(|| self.inner.close(timeout)))
        }

        /// The writer's counters (see `_core.pyi`).
        fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
            let s = self.inner.stats();
            let d = PyDict::new(py);
            d.set_item("written", s.written)?;
            d.set_item("spooled", s.spooled)?;
            d.set_item("spool_pending", s.spool_pending)?;
            d.set_item("dropped", s.dropped)?;
            d.set_item("dead_lettered", s.dead_lettered)?;
            d.set_item("store_errors", s.store_errors)?;
            d.set_item("store_up", s.store_up)?;
            d.set_item("queue_bytes", s.queue_bytes)?;
            d.set_item("queue_len", s.queue_len)?;
            d.set_item("purged", s.purged)?;
            Ok(d)
        }
    }

    #[pymodule]
    fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add("SseError", m.py().get_type::<SseError>())?;
        m.add_function(wrap_pyfunction!(cache_key, m)?)?;
        m.add_function(wrap_pyfunction!(canonical_json, m)?)?;
        m.add_function(wrap_pyfunction!(count_tokens, m)?)?;
        m.add_function(wrap_pyfunction!(encoding_for_model, m)?)?;
        m.add_function(wrap_pyfunction!(encoding_loaded, m)?)?;
        m.add_function(wrap_pyfunction!(openai_finish_reason, m)?)?;
        m.add_function(wrap_pyfunction!(count_chat_tokens, m)?)?;
        m.add_class::<SseRelay>()?;
        m.add_class::<StreamSummary>()?;
        m.add_class::<MessagesStream>()?;
        m.add_function(wrap_pyfunction!(redact, m)?)?;
        m.add_class::<LogWriter>()?;
        m.add_class::<crate::grpc::py::GrpcServer>()?;
        m.add_class::<crate::grpc::py::GrpcCall>()?;
        m.add_function(wrap_pyfunction!(crate::grpc::py::grpc_chat_body, m)?)?;
        m.add_function(wrap_pyfunction!(crate::grpc::py::grpc_chat_response, m)?)?;
        m.add_function(wrap_pyfunction!(crate::grpc::py::grpc_chat_chunks, m)?)?;
        Ok(())
    }
}
