//! The hand-off to the worker's event loop, as Granian hands HTTP requests over: the server
//! queues each call (never waiting for the GIL); one thread takes the GIL for whatever is
//! queued and schedules it all with one `loop.call_soon_threadsafe(on_events, [..])`. Replies
//! go back through `GrpcCall`, straight into the server's channels.

use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use super::call::{IncomingCall, Method, Reply, ReplyError, Sent};
use super::server::{bind, start, RunningServer};
use super::service::{Dispatch, Gateway};
use super::translate;

/// The most events scheduled by one `call_soon_threadsafe`.
const BATCH: usize = 256;

enum LoopEvent {
    Call(IncomingCall),
    Cancel(u64),
}

struct LoopDispatch {
    tx: mpsc::Sender<LoopEvent>,
}

impl Dispatch for LoopDispatch {
    fn call(&self, call: IncomingCall) {
        // The hand-off thread is gone only when the loop is: the dropped reply answers INTERNAL.
        let _ = self.tx.send(LoopEvent::Call(call));
    }

    fn cancel(&self, id: u64) {
        let _ = self.tx.send(LoopEvent::Cancel(id));
    }
}

fn hand_off(rx: mpsc::Receiver<LoopEvent>, event_loop: Py<PyAny>, on_events: Py<PyAny>) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        Python::attach(|py| {
            let events = batch.drain(..).map(|event| match event {
                LoopEvent::Call(call) => Py::new(py, GrpcCall::from(call)).map(Py::into_any),
                LoopEvent::Cancel(id) => Ok(id.into_pyobject(py)?.into_any().unbind()),
            });
            let scheduled = events
                .collect::<PyResult<Vec<_>>>()
                .and_then(|events| PyList::new(py, events))
                .and_then(|events| {
                    event_loop.call_method1(py, "call_soon_threadsafe", (&on_events, events))
                });
            // A closed loop (the worker is stopping): the calls are dropped and answer INTERNAL.
            if let Err(err) = scheduled {
                if !err.is_instance_of::<PyRuntimeError>(py) {
                    err.print(py);
                }
            }
        });
    }
    Python::attach(|_| {
        drop(event_loop);
        drop(on_events);
    });
}

fn runtime_error(err: ReplyError) -> PyErr {
    PyRuntimeError::new_err(err.to_string())
}

fn sent(s: Sent) -> u8 {
    match s {
        Sent::Accepted => 0,
        Sent::Full => 1,
        Sent::Gone => 2,
    }
}

/// One gRPC call, handed to the loop by `GrpcServer`.
#[pyclass(module = "llm_proxy._core")]
pub struct GrpcCall {
    #[pyo3(get)]
    id: u64,
    method: Method,
    message: Bytes,
    metadata: Vec<(String, String)>,
    timeout: Option<Duration>,
    reply: Reply,
}

impl From<IncomingCall> for GrpcCall {
    fn from(call: IncomingCall) -> Self {
        GrpcCall {
            id: call.id,
            method: call.method,
            message: call.message,
            metadata: call.metadata,
            timeout: call.timeout,
            reply: call.reply,
        }
    }
}

#[pymethods]
impl GrpcCall {
    /// The method's name, e.g. "ChatCompletion".
    #[getter]
    fn method(&self) -> &'static str {
        self.method.name()
    }

    /// The request message (protobuf bytes).
    #[getter]
    fn message<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.message)
    }

    /// The request's ASCII metadata (a repeated key keeps its last value).
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (key, value) in &self.metadata {
            dict.set_item(key, value)?;
        }
        Ok(dict)
    }

    /// Seconds left before the client's deadline when the call arrived (None: no deadline).
    #[getter]
    fn timeout(&self) -> Option<f64> {
        self.timeout.map(|t| t.as_secs_f64())
    }

    /// Whether the call can still be answered (false once the client has gone).
    #[getter]
    fn open(&self) -> bool {
        self.reply.is_open()
    }

    /// The whole answer of a unary call, with its initial metadata.
    fn answer(&mut self, message: &[u8], metadata: Vec<(String, String)>) -> PyResult<()> {
        self.reply
            .answer(Bytes::copy_from_slice(message), &metadata)
            .map_err(runtime_error)
    }

    /// Ends the call with a gRPC status code (not 0), message and trailing metadata.
    /// Returns 0 (taken), 1 (a stream's buffer is full: try again) or 2 (the call is over).
    fn fail(&mut self, code: i32, message: &str, trailers: Vec<(String, String)>) -> PyResult<u8> {
        self.reply
            .fail(code, message, &trailers)
            .map(sent)
            .map_err(runtime_error)
    }

    /// A stream's initial metadata, with its first message when there is one (one hand-over
    /// for both). Returns 0, 1 or 2 as `fail` does.
    #[pyo3(signature = (metadata, first = None))]
    fn start(&mut self, metadata: Vec<(String, String)>, first: Option<&[u8]>) -> PyResult<u8> {
        let first = first.map(Bytes::copy_from_slice);
        self.reply
            .start(&metadata, first)
            .map(sent)
            .map_err(runtime_error)
    }

    /// One message of a stream. Returns 0, 1 or 2 as `fail` does.
    fn send(&mut self, message: &[u8]) -> PyResult<u8> {
        self.reply
            .send(Bytes::copy_from_slice(message))
            .map(sent)
            .map_err(runtime_error)
    }

    /// Ends a stream with status OK.
    fn finish(&mut self) {
        self.reply.finish();
    }
}

/// The gRPC server of one worker, serving on its own thread.
#[pyclass(module = "llm_proxy._core")]
pub struct GrpcServer {
    running: Option<RunningServer>,
    port: u16,
}

impl GrpcServer {
    fn running(&self) -> PyResult<&RunningServer> {
        self.running
            .as_ref()
            .ok_or_else(|| PyRuntimeError::new_err("the gRPC server is closed"))
    }
}

#[pymethods]
impl GrpcServer {
    /// Binds `host:port` (SO_REUSEPORT) and starts serving. Calls are scheduled on
    /// `event_loop` as `on_events(events)`, a list of `GrpcCall` (new calls) and ints (the ids of
    /// calls to cancel), in order. `descriptor`: the encoded FileDescriptorSet for reflection.
    #[new]
    fn new(
        host: &str,
        port: u16,
        event_loop: Py<PyAny>,
        on_events: Py<PyAny>,
        descriptor: &[u8],
        max_message_bytes: usize,
    ) -> PyResult<Self> {
        let listener = bind(host, port).map_err(|e| {
            PyOSError::new_err(format!("gRPC could not listen on {host}:{port}: {e}"))
        })?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("llm-proxy-grpc-loop".into())
            .spawn(move || hand_off(rx, event_loop, on_events))?;
        let gateway = Gateway::new(LoopDispatch { tx }, max_message_bytes);
        let running = start(listener, gateway, &[descriptor])
            .map_err(|e| PyOSError::new_err(format!("gRPC server did not start: {e}")))?;
        let port = running.port();
        Ok(GrpcServer {
            running: Some(running),
            port,
        })
    }

    /// The port bound (the one asked for, or the one chosen for 0).
    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    /// What health checks answer: SERVING or NOT_SERVING.
    fn set_serving(&self, serving: bool) -> PyResult<()> {
        self.running()?.set_serving(serving);
        Ok(())
    }

    /// Stops taking connections and calls (GOAWAY); calls in flight go on.
    fn drain(&self) -> PyResult<()> {
        self.running()?.drain();
        Ok(())
    }

    /// Whether every connection has closed after `drain`.
    #[getter]
    fn stopped(&self) -> bool {
        self.running.as_ref().is_none_or(RunningServer::is_stopped)
    }

    /// Ends every connection now and waits for the server thread.
    fn close(&mut self, py: Python<'_>) {
        if let Some(mut running) = self.running.take() {
            py.detach(move || running.join());
        }
    }
}

/// The OpenAI JSON body for a serialized (Stream)ChatCompletionRequest of the common shape,
/// or None (the Python translation then applies, and names any error).
#[pyfunction]
pub fn grpc_chat_body<'py>(
    py: Python<'py>,
    message: &[u8],
    stream: bool,
) -> Option<Bound<'py, PyBytes>> {
    translate::chat_body(message, stream).map(|body| PyBytes::new(py, &body))
}

/// A serialized ChatCompletionResponse for an upstream's JSON chat answer of the expected
/// shape, or None (the Python translation then applies, and names any error).
#[pyfunction]
pub fn grpc_chat_response<'py>(
    py: Python<'py>,
    body: &[u8],
    request_id: &str,
    cache_status: &str,
) -> Option<Bound<'py, PyBytes>> {
    translate::chat_response(body, request_id, cache_status).map(|m| PyBytes::new(py, &m))
}

/// Serialized StreamChatCompletionResponses for plain OpenAI SSE `data:` events (the first
/// one with the ids when `first`), or None (the Python renderer then applies).
#[pyfunction]
pub fn grpc_chat_chunks<'py>(
    py: Python<'py>,
    events: &[u8],
    first: bool,
    request_id: &str,
    cache_status: &str,
) -> Option<Vec<Bound<'py, PyBytes>>> {
    let messages = translate::chat_chunks(events, first, request_id, cache_status)?;
    Some(messages.iter().map(|m| PyBytes::new(py, m)).collect())
}
