//! The Gateway service: tonic frames and unframes the messages (kept as protobuf bytes), each
//! call is handed to a `Dispatch`, and its reply comes back over a channel.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::header::HeaderValue;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_stream::Stream;
use tonic::body::Body;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::BoxFuture;
use tonic::metadata::KeyAndValueRef;
use tonic::server::{Grpc, ServerStreamingService, UnaryService};
use tonic::{Code, Status};

use super::call::{parse_timeout, IncomingCall, Method, Reply, StreamEvent};

/// Where the door hands calls: the event loop, in the extension.
pub trait Dispatch: Send + Sync + 'static {
    /// A new call; answer it through `call.reply`.
    fn call(&self, call: IncomingCall);
    /// The call `id` is over before it was answered (client gone, deadline passed): stop it.
    fn cancel(&self, id: u64);
}

/// Messages pass through as bytes: the loop's code decodes and encodes them.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

struct Shared<D> {
    dispatch: D,
    next_id: AtomicU64,
    max_message: usize,
}

/// The llm_proxy.v1.Gateway service.
pub struct Gateway<D> {
    shared: Arc<Shared<D>>,
}

impl<D> Clone for Gateway<D> {
    fn clone(&self) -> Self {
        Gateway {
            shared: self.shared.clone(),
        }
    }
}

impl<D: Dispatch> Gateway<D> {
    /// `max_message`: the largest request message taken (larger: RESOURCE_EXHAUSTED).
    pub fn new(dispatch: D, max_message: usize) -> Self {
        let shared = Shared {
            dispatch,
            next_id: AtomicU64::new(1),
            max_message,
        };
        Gateway {
            shared: Arc::new(shared),
        }
    }

    pub fn dispatch(&self) -> &D {
        &self.shared.dispatch
    }

    /// Serves one request to `/llm_proxy.v1.Gateway/...`.
    pub async fn handle(&self, request: http::Request<Body>) -> http::Response<Body> {
        let Some(method) = Method::from_path(request.uri().path()) else {
            let message = format!("unknown method {}", request.uri().path());
            return Status::unimplemented(message).into_http();
        };
        // Our own deadline, not a timeout layer's: the client must see DEADLINE_EXCEEDED, and
        // the call on the loop must be cancelled.
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| parse_timeout(v.as_bytes()));
        let handler = Handler {
            shared: self.shared.clone(),
            method,
            timeout,
        };
        // Requests may come gzip-compressed (grpcio's server took them); answers go plain.
        let mut grpc = Grpc::new(RawCodec)
            .accept_compressed(CompressionEncoding::Gzip)
            .apply_max_message_size_config(Some(self.shared.max_message), None);
        let response = if method.is_stream() {
            grpc.server_streaming(handler, request).await
        } else {
            grpc.unary(handler, request).await
        };
        too_large_is_resource_exhausted(response, self.shared.max_message)
    }
}

/// tonic answers an oversized message with OUT_OF_RANGE; gRPC's convention (and grpcio's) is
/// RESOURCE_EXHAUSTED.
fn too_large_is_resource_exhausted(
    mut response: http::Response<Body>,
    limit: usize,
) -> http::Response<Body> {
    let headers = response.headers_mut();
    let too_large = headers.get("grpc-status").is_some_and(|s| s == "11")
        && headers.get("grpc-message").is_some_and(|m| {
            let m = m.as_bytes();
            contains(m, b"length%20too%20large") || contains(m, b"length too large")
        });
    if too_large {
        headers.insert("grpc-status", HeaderValue::from_static("8"));
        let message = format!("the request message is larger than the limit of {limit} bytes");
        if let Ok(value) = HeaderValue::from_str(&message.replace(' ', "%20")) {
            headers.insert("grpc-message", value);
        }
    }
    response
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

struct Handler<D> {
    shared: Arc<Shared<D>>,
    method: Method,
    timeout: Option<Duration>,
}

impl<D: Dispatch> Handler<D> {
    fn hand_over(&self, request: tonic::Request<Bytes>, reply: Reply) -> CancelGuard<D> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (metadata, _, message) = request.into_parts();
        let metadata = metadata
            .iter()
            .filter_map(|entry| match entry {
                KeyAndValueRef::Ascii(k, v) => {
                    Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned()))
                }
                KeyAndValueRef::Binary(..) => None,
            })
            .collect();
        let call = IncomingCall {
            id,
            method: self.method,
            message,
            metadata,
            timeout: self.timeout,
            reply,
        };
        self.shared.dispatch.call(call);
        CancelGuard {
            shared: Some(self.shared.clone()),
            id,
        }
    }
}

fn deadline_exceeded() -> Status {
    Status::new(Code::DeadlineExceeded, "Deadline Exceeded")
}

fn dropped() -> Status {
    Status::internal("the gateway ended the call without an answer")
}

impl<D: Dispatch> UnaryService<Bytes> for Handler<D> {
    type Response = Bytes;
    type Future = BoxFuture<tonic::Response<Bytes>, Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let (reply, rx) = Reply::unary();
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let guard = self.hand_over(request, reply);
        Box::pin(async move {
            let answer = match deadline {
                Some(at) => match tokio::time::timeout_at(at, rx).await {
                    Ok(answer) => answer,
                    Err(_) => return Err(deadline_exceeded()), // the guard cancels the call
                },
                None => rx.await,
            };
            guard.disarm();
            match answer {
                Ok(Ok((message, metadata))) => {
                    let mut response = tonic::Response::new(message);
                    *response.metadata_mut() = metadata;
                    Ok(response)
                }
                Ok(Err(status)) => Err(status),
                Err(_) => Err(dropped()),
            }
        })
    }
}

impl<D: Dispatch> ServerStreamingService<Bytes> for Handler<D> {
    type Response = Bytes;
    type ResponseStream = ReplyStream<D>;
    type Future = BoxFuture<tonic::Response<ReplyStream<D>>, Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let (reply, mut rx) = Reply::stream();
        let deadline = self.timeout.map(|t| Box::pin(tokio::time::sleep(t)));
        let guard = self.hand_over(request, reply);
        Box::pin(async move {
            let mut deadline = deadline;
            let first = match deadline.as_mut() {
                Some(sleep) => tokio::select! {
                    event = rx.recv() => event,
                    () = sleep.as_mut() => return Err(deadline_exceeded()),
                },
                None => rx.recv().await,
            };
            let (metadata, pending) = match first {
                Some(StreamEvent::Start(metadata, message)) => (metadata, message),
                Some(StreamEvent::Fail(status)) => {
                    guard.disarm();
                    return Err(status);
                }
                Some(StreamEvent::Message(message)) => (Default::default(), Some(message)),
                None => {
                    guard.disarm();
                    return Err(dropped());
                }
            };
            let stream = ReplyStream {
                rx,
                pending,
                deadline,
                guard: Some(guard),
                done: false,
            };
            let mut response = tonic::Response::new(stream);
            *response.metadata_mut() = metadata;
            Ok(response)
        })
    }
}

/// A stream's messages as the loop sends them, ended by the loop, a failure or the deadline.
pub struct ReplyStream<D: Dispatch> {
    rx: mpsc::Receiver<StreamEvent>,
    pending: Option<Bytes>,
    deadline: Option<Pin<Box<Sleep>>>,
    guard: Option<CancelGuard<D>>,
    done: bool,
}

impl<D: Dispatch> ReplyStream<D> {
    fn end(&mut self) {
        self.done = true;
        if let Some(guard) = self.guard.take() {
            guard.disarm();
        }
    }
}

impl<D: Dispatch> Stream for ReplyStream<D> {
    type Item = Result<Bytes, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(message) = this.pending.take() {
            return Poll::Ready(Some(Ok(message)));
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(StreamEvent::Message(message))) => {
                return Poll::Ready(Some(Ok(message)))
            }
            Poll::Ready(Some(StreamEvent::Start(..))) => {
                // A second start is a bug on the loop's side; the stream goes on without it.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(Some(StreamEvent::Fail(status))) => {
                this.end();
                return Poll::Ready(Some(Err(status)));
            }
            Poll::Ready(None) => {
                this.end();
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        if let Some(sleep) = this.deadline.as_mut() {
            if sleep.as_mut().poll(cx).is_ready() {
                this.done = true; // the guard stays armed: dropping the stream cancels the call
                return Poll::Ready(Some(Err(deadline_exceeded())));
            }
        }
        Poll::Pending
    }
}

/// Cancels the call on the loop when dropped before it is disarmed: the client reset the
/// stream, the connection closed, or the deadline passed.
pub struct CancelGuard<D: Dispatch> {
    shared: Option<Arc<Shared<D>>>,
    id: u64,
}

impl<D: Dispatch> CancelGuard<D> {
    fn disarm(mut self) {
        self.shared = None;
    }
}

impl<D: Dispatch> Drop for CancelGuard<D> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.dispatch.cancel(self.id);
        }
    }
}
