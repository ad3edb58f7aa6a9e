//! One gRPC call as the door hands it to the event loop, and the handle that answers it.
//!
//! Nothing here waits: a unary answer goes back over a oneshot, a stream's messages over a
//! bounded channel whose `send` says `Full` instead of blocking (the caller waits and retries:
//! that is the HTTP/2 flow control reaching the producer).

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::{Code, Status};

/// The Gateway service's full name, as in proto/llm_proxy/v1/gateway.proto.
pub const SERVICE: &str = "llm_proxy.v1.Gateway";

/// Messages of a stream that may wait in the channel before `send` answers `Full`.
pub const STREAM_BUFFER: usize = 32;

/// The methods of llm_proxy.v1.Gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    ChatCompletion,
    StreamChatCompletion,
    Completion,
    Embed,
    ListModels,
}

impl Method {
    /// The method a request path (`/llm_proxy.v1.Gateway/Name`) names.
    pub fn from_path(path: &str) -> Option<Method> {
        let name = path
            .strip_prefix('/')?
            .strip_prefix(SERVICE)?
            .strip_prefix('/')?;
        Some(match name {
            "ChatCompletion" => Method::ChatCompletion,
            "StreamChatCompletion" => Method::StreamChatCompletion,
            "Completion" => Method::Completion,
            "Embed" => Method::Embed,
            "ListModels" => Method::ListModels,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::ChatCompletion => "ChatCompletion",
            Method::StreamChatCompletion => "StreamChatCompletion",
            Method::Completion => "Completion",
            Method::Embed => "Embed",
            Method::ListModels => "ListModels",
        }
    }

    pub fn is_stream(self) -> bool {
        self == Method::StreamChatCompletion
    }
}

/// A call the loop must answer.
pub struct IncomingCall {
    /// Unique in this server; a cancellation names the call by it.
    pub id: u64,
    pub method: Method,
    /// The request message, still protobuf-encoded.
    pub message: Bytes,
    /// The ASCII request metadata (binary `-bin` entries are left out).
    pub metadata: Vec<(String, String)>,
    /// The time left before the client's deadline, when it set one.
    pub timeout: Option<Duration>,
    pub reply: Reply,
}

pub(crate) type UnaryAnswer = Result<(Bytes, MetadataMap), Status>;

/// What a stream's producer sends, in order: `Start`, then messages, then an optional `Fail`.
pub(crate) enum StreamEvent {
    Start(MetadataMap, Option<Bytes>),
    Message(Bytes),
    Fail(Status),
}

/// Whether a stream event was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    Accepted,
    /// The client is not reading fast enough: wait, then send the same event again.
    Full,
    /// The call is over (the client went away or the deadline passed): stop producing.
    Gone,
}

/// A reply used against its kind (a unary answer on a stream, anything after the end).
#[derive(Debug, PartialEq, Eq)]
pub struct ReplyError(&'static str);

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ReplyError {}

enum Sink {
    Unary(Option<oneshot::Sender<UnaryAnswer>>),
    Stream(Option<mpsc::Sender<StreamEvent>>),
}

/// The answering half of a call.
pub struct Reply(Sink);

impl Reply {
    pub(crate) fn unary() -> (Reply, oneshot::Receiver<UnaryAnswer>) {
        let (tx, rx) = oneshot::channel();
        (Reply(Sink::Unary(Some(tx))), rx)
    }

    pub(crate) fn stream() -> (Reply, mpsc::Receiver<StreamEvent>) {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        (Reply(Sink::Stream(Some(tx))), rx)
    }

    pub fn is_stream(&self) -> bool {
        matches!(self.0, Sink::Stream(_))
    }

    /// Whether the call can still be answered.
    pub fn is_open(&self) -> bool {
        match &self.0 {
            Sink::Unary(tx) => tx.as_ref().is_some_and(|tx| !tx.is_closed()),
            Sink::Stream(tx) => tx.as_ref().is_some_and(|tx| !tx.is_closed()),
        }
    }

    /// The whole answer of a unary call, with its initial metadata.
    pub fn answer(
        &mut self,
        message: Bytes,
        metadata: &[(String, String)],
    ) -> Result<(), ReplyError> {
        match &mut self.0 {
            Sink::Unary(tx) => {
                let tx = tx
                    .take()
                    .ok_or(ReplyError("the call was already answered"))?;
                // A closed receiver means the client is gone; the answer has nowhere to go.
                let _ = tx.send(Ok((message, metadata_map(metadata))));
                Ok(())
            }
            Sink::Stream(_) => Err(ReplyError("a streaming call is answered with start/send")),
        }
    }

    /// Ends the call with a status (not OK) and trailing metadata.
    pub fn fail(
        &mut self,
        code: i32,
        message: &str,
        trailers: &[(String, String)],
    ) -> Result<Sent, ReplyError> {
        let status = status(code, message, trailers);
        match &mut self.0 {
            Sink::Unary(tx) => {
                let tx = tx
                    .take()
                    .ok_or(ReplyError("the call was already answered"))?;
                let _ = tx.send(Err(status));
                Ok(Sent::Accepted)
            }
            Sink::Stream(tx) => {
                let sent = push(tx, StreamEvent::Fail(status))?;
                if sent == Sent::Accepted {
                    *tx = None;
                }
                Ok(sent)
            }
        }
    }

    /// A stream's initial metadata, with its first message when there is one: both reach the
    /// server in one hand-over (one wake-up, one write for the headers and the message).
    pub fn start(
        &mut self,
        metadata: &[(String, String)],
        first: Option<Bytes>,
    ) -> Result<Sent, ReplyError> {
        match &mut self.0 {
            Sink::Stream(tx) => push(tx, StreamEvent::Start(metadata_map(metadata), first)),
            Sink::Unary(_) => Err(ReplyError("a unary call is answered with answer()")),
        }
    }

    /// One message of a stream.
    pub fn send(&mut self, message: Bytes) -> Result<Sent, ReplyError> {
        match &mut self.0 {
            Sink::Stream(tx) => push(tx, StreamEvent::Message(message)),
            Sink::Unary(_) => Err(ReplyError("a unary call is answered with answer()")),
        }
    }

    /// Ends a stream with status OK (also what dropping the reply does).
    pub fn finish(&mut self) {
        match &mut self.0 {
            Sink::Stream(tx) => *tx = None,
            Sink::Unary(tx) => *tx = None,
        }
    }
}

fn push(
    tx: &mut Option<mpsc::Sender<StreamEvent>>,
    event: StreamEvent,
) -> Result<Sent, ReplyError> {
    let sender = tx
        .as_ref()
        .ok_or(ReplyError("the stream was already ended"))?;
    Ok(match sender.try_send(event) {
        Ok(()) => Sent::Accepted,
        Err(mpsc::error::TrySendError::Full(_)) => Sent::Full,
        Err(mpsc::error::TrySendError::Closed(_)) => Sent::Gone,
    })
}

/// Metadata from pairs; an entry gRPC cannot carry (a bad key or value) is left out.
pub fn metadata_map(pairs: &[(String, String)]) -> MetadataMap {
    let mut map = MetadataMap::with_capacity(pairs.len());
    for (key, value) in pairs {
        if key.ends_with("-bin") {
            continue;
        }
        if let (Ok(k), Ok(v)) = (
            AsciiMetadataKey::from_bytes(key.as_bytes()),
            AsciiMetadataValue::try_from(value.as_str()),
        ) {
            map.append(k, v);
        }
    }
    map
}

/// A status with its trailing metadata; an unknown code is UNKNOWN.
pub fn status(code: i32, message: &str, trailers: &[(String, String)]) -> Status {
    Status::with_metadata(
        Code::from_i32(code),
        message.to_owned(),
        metadata_map(trailers),
    )
}

/// The `grpc-timeout` header: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_the_five_methods_and_nothing_else() {
        assert_eq!(
            Method::from_path("/llm_proxy.v1.Gateway/Embed"),
            Some(Method::Embed)
        );
        assert_eq!(
            Method::from_path("/llm_proxy.v1.Gateway/StreamChatCompletion"),
            Some(Method::StreamChatCompletion)
        );
        assert_eq!(Method::from_path("/llm_proxy.v1.Gateway/Nope"), None);
        assert_eq!(Method::from_path("/other.Service/Embed"), None);
        assert_eq!(Method::from_path("llm_proxy.v1.Gateway/Embed"), None);
        for m in [
            Method::ChatCompletion,
            Method::Completion,
            Method::ListModels,
        ] {
            assert_eq!(
                Method::from_path(&format!("/{SERVICE}/{}", m.name())),
                Some(m)
            );
        }
    }

    #[test]
    fn timeouts_parse_every_unit_and_reject_bad_ones() {
        assert_eq!(parse_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_timeout(b"3S"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_timeout(b"99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_timeout(b"7n"), Some(Duration::from_nanos(7)));
        for bad in [&b""[..], b"m", b"123456789m", b"12x", b"-1S", b"1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn metadata_leaves_out_what_grpc_cannot_carry() {
        let pairs = [
            ("x-request-id".to_owned(), "abc".to_owned()),
            ("Bad Key".to_owned(), "v".to_owned()),
            ("x-bin".to_owned(), "v".to_owned()),
            ("x-ok".to_owned(), "line\nbreak".to_owned()),
        ];
        let map = metadata_map(&pairs);
        assert_eq!(map.len(), 1);
        assert_eq!(map.get("x-request-id").unwrap(), "abc");
    }

    #[test]
    fn a_unary_reply_answers_once() {
        let (mut reply, mut rx) = Reply::unary();
        assert!(reply.is_open());
        reply
            .answer(Bytes::from_static(b"m"), &[("k".into(), "v".into())])
            .unwrap();
        assert!(reply.answer(Bytes::new(), &[]).is_err());
        assert!(reply.send(Bytes::new()).is_err());
        let (message, meta) = rx.try_recv().unwrap().unwrap();
        assert_eq!(&message[..], b"m");
        assert_eq!(meta.get("k").unwrap(), "v");
    }

    #[test]
    fn a_stream_reports_full_then_gone() {
        let (mut reply, mut rx) = Reply::stream();
        assert_eq!(reply.start(&[], None).unwrap(), Sent::Accepted);
        for _ in 1..STREAM_BUFFER {
            assert_eq!(
                reply.send(Bytes::from_static(b"x")).unwrap(),
                Sent::Accepted
            );
        }
        assert_eq!(reply.send(Bytes::from_static(b"x")).unwrap(), Sent::Full);
        assert!(matches!(rx.try_recv(), Ok(StreamEvent::Start(_, None))));
        assert_eq!(
            reply.send(Bytes::from_static(b"x")).unwrap(),
            Sent::Accepted
        );
        drop(rx);
        assert_eq!(reply.send(Bytes::from_static(b"x")).unwrap(), Sent::Gone);
        assert!(!reply.is_open());
    }

    #[test]
    fn a_failed_stream_carries_code_message_and_trailers() {
        let (mut reply, mut rx) = Reply::stream();
        let trailers = [("retry-after".to_owned(), "3".to_owned())];
        assert_eq!(
            reply.fail(8, "slow down", &trailers).unwrap(),
            Sent::Accepted
        );
        assert!(reply.send(Bytes::new()).is_err());
        let Ok(StreamEvent::Fail(status)) = rx.try_recv() else {
            panic!("no failure")
        };
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "slow down");
        assert_eq!(status.metadata().get("retry-after").unwrap(), "3");
    }
}
