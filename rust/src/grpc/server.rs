//! The server: one tokio runtime on its own thread, hyper's HTTP/2 connections, and a router
//! to the Gateway, health and reflection (v1 and v1alpha) services.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::Status;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;
use tower_service::Service;

use super::call::SERVICE;
use super::service::{Dispatch, Gateway};

/// Opens `host:port` with SO_REUSEPORT (workers share the port), non-blocking.
pub fn bind(host: &str, port: u16) -> io::Result<StdListener> {
    let addr: SocketAddr = (host, port).to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{host} resolves to no address"),
        )
    })?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Serving,
    Draining,
    Aborted,
}

/// A server started by `start`; `drain`, then `abort` whatever has not finished.
pub struct RunningServer {
    port: u16,
    phase: watch::Sender<Phase>,
    health: HealthReporter,
    handle: Handle,
    stopped: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

type BoxResponse = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

/// Routes each request by its service name; every service is a plain tower service.
struct Router<D, H, R1, R2> {
    gateway: Gateway<D>,
    health: H,
    reflection_v1: R1,
    reflection_v1alpha: R2,
}

impl<D, H: Clone, R1: Clone, R2: Clone> Clone for Router<D, H, R1, R2> {
    fn clone(&self) -> Self {
        Router {
            gateway: self.gateway.clone(),
            health: self.health.clone(),
            reflection_v1: self.reflection_v1.clone(),
            reflection_v1alpha: self.reflection_v1alpha.clone(),
        }
    }
}

fn boxed<S>(mut service: S, request: http::Request<Body>) -> BoxResponse
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    Box::pin(service.call(request))
}

fn service_name(path: &str) -> &str {
    path.strip_prefix('/')
        .and_then(|p| p.split('/').next())
        .unwrap_or("")
}

impl<D, H, R1, R2> hyper::service::Service<http::Request<Incoming>> for Router<D, H, R1, R2>
where
    D: Dispatch,
    H: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone,
    H::Future: Send + 'static,
    R1: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone,
    R1::Future: Send + 'static,
    R2: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone,
    R2::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxResponse;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let request = request.map(Body::new);
        match service_name(request.uri().path()) {
            SERVICE => {
                let gateway = self.gateway.clone();
                Box::pin(async move { Ok(gateway.handle(request).await) })
            }
            name if name == H::NAME => boxed(self.health.clone(), request),
            name if name == R1::NAME => boxed(self.reflection_v1.clone(), request),
            name if name == R2::NAME => boxed(self.reflection_v1alpha.clone(), request),
            other => {
                let status = Status::unimplemented(format!("unknown service {other}"));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// Starts serving `listener` on a new thread. `descriptors`: encoded FileDescriptorSets of the
/// Gateway's protos, for reflection.
pub fn start<D: Dispatch>(
    listener: StdListener,
    gateway: Gateway<D>,
    descriptors: &[&[u8]],
) -> io::Result<RunningServer> {
    let port = listener.local_addr()?.port();
    let invalid = |e: tonic_reflection::server::Error| {
        io::Error::new(io::ErrorKind::InvalidData, e.to_string())
    };
    let mut reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    for set in descriptors {
        reflection = reflection.register_encoded_file_descriptor_set(set);
    }
    let mut reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    for set in descriptors {
        reflection_alpha = reflection_alpha.register_encoded_file_descriptor_set(set);
    }
    let reporter = HealthReporter::new();
    let router = Router {
        gateway,
        health: HealthServer::new(HealthService::from_health_reporter(reporter.clone())),
        reflection_v1: reflection.build_v1().map_err(invalid)?,
        reflection_v1alpha: reflection_alpha.build_v1alpha().map_err(invalid)?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("llm-proxy-grpc")
        .build()?;
    let handle = runtime.handle().clone();
    let (phase, phase_rx) = watch::channel(Phase::Serving);
    let stopped = Arc::new(AtomicBool::new(false));
    let done = stopped.clone();
    let health = reporter.clone();
    let listener = {
        let _entered = runtime.enter();
        TcpListener::from_std(listener)?
    };
    let thread = std::thread::Builder::new()
        .name("llm-proxy-grpc".into())
        .spawn(move || {
            runtime.block_on(async move {
                for name in ["", SERVICE] {
                    health
                        .set_service_status(name, ServingStatus::Serving)
                        .await;
                }
                serve(listener, router, phase_rx).await;
            });
            // Dropping the runtime ends whatever connection is still open (after `abort`).
            drop(runtime);
            done.store(true, Ordering::Release);
        })?;
    Ok(RunningServer {
        port,
        phase,
        health: reporter,
        handle,
        stopped,
        thread: Some(thread),
    })
}

async fn serve<D, H, R1, R2>(
    listener: TcpListener,
    router: Router<D, H, R1, R2>,
    mut phase: watch::Receiver<Phase>,
) where
    Router<D, H, R1, R2>: hyper::service::Service<
            http::Request<Incoming>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future = BoxResponse,
        > + Clone
        + Send
        + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2.timer(TokioTimer::new()).max_concurrent_streams(1024);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let connection = graceful.watch(http2.serve_connection(TokioIo::new(stream), router.clone()));
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
            _ = phase.changed() => break,
        }
    }
    drop(listener);
    if *phase.borrow() == Phase::Draining {
        // GOAWAY to every connection; calls in flight go on until they end or `abort`.
        tokio::select! {
            () = graceful.shutdown() => {}
            _ = phase.wait_for(|p| *p == Phase::Aborted) => {}
        }
    }
}

impl RunningServer {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What health checks answer for the server and the Gateway.
    pub fn set_serving(&self, serving: bool) {
        let health = self.health.clone();
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.handle.spawn(async move {
            for name in ["", SERVICE] {
                health.set_service_status(name, status).await;
            }
        });
    }

    /// Stops taking connections and calls; calls in flight go on.
    pub fn drain(&self) {
        self.phase.send_if_modified(|p| {
            let changed = *p == Phase::Serving;
            if changed {
                *p = Phase::Draining;
            }
            changed
        });
    }

    /// Ends every connection now.
    pub fn abort(&self) {
        self.phase.send_replace(Phase::Aborted);
    }

    /// Whether the server thread has ended (every connection closed).
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Aborts and waits for the server thread.
    pub fn join(&mut self) {
        self.abort();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.join();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::{BufMut, Bytes, BytesMut};
    use http_body_util::{BodyExt, Full};
    use tokio::net::TcpStream;

    use super::*;
    use crate::grpc::call::{IncomingCall, Method};

    /// Keeps every call and cancellation; answers per `mode`.
    #[derive(Default)]
    struct Probe {
        calls: Mutex<Vec<IncomingCall>>,
        cancelled: Mutex<Vec<u64>>,
        answer: bool,
    }

    #[derive(Clone)]
    struct Shared(Arc<Probe>);

    impl Dispatch for Shared {
        fn call(&self, mut call: IncomingCall) {
            if self.0.answer {
                if call.reply.is_stream() {
                    let first = Some(Bytes::from_static(b"one"));
                    call.reply
                        .start(&[("x-request-id".into(), "r1".into())], first)
                        .unwrap();
                    call.reply.send(call.message.clone()).unwrap();
                    let trailers = [("retry-after".to_owned(), "2".to_owned())];
                    call.reply.fail(8, "slow down", &trailers).unwrap();
                } else {
                    let echo = call.message.clone();
                    let meta: Vec<_> = call
                        .metadata
                        .iter()
                        .filter(|(k, _)| k == "x-request-id")
                        .cloned()
                        .collect();
                    call.reply.answer(echo, &meta).unwrap();
                }
            }
            self.0.calls.lock().unwrap().push(call);
        }

        fn cancel(&self, id: u64) {
            self.0.cancelled.lock().unwrap().push(id);
        }
    }

    fn serve(answer: bool, max_message: usize) -> (RunningServer, Arc<Probe>) {
        let probe = Arc::new(Probe {
            answer,
            ..Probe::default()
        });
        let gateway = Gateway::new(Shared(probe.clone()), max_message);
        let server = start(bind("127.0.0.1", 0).unwrap(), gateway, &[]).unwrap();
        (server, probe)
    }

    fn framed(message: &[u8]) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_u8(0);
        buf.put_u32(message.len() as u32);
        buf.put_slice(message);
        buf.freeze()
    }

    /// One call over a fresh HTTP/2 connection: (headers, messages' bytes, trailers).
    fn call(
        port: u16,
        method: &str,
        message: &[u8],
        headers: &[(&str, &str)],
    ) -> (http::HeaderMap, Bytes, http::HeaderMap) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let mut request =
                http::Request::post(format!("http://127.0.0.1:{port}/{SERVICE}/{method}"))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers");
            for (k, v) in headers {
                request = request.header(*k, *v);
            }
            let response = send
                .send_request(request.body(Full::new(framed(message))).unwrap())
                .await
                .unwrap();
            let (parts, body) = response.into_parts();
            let collected = body.collect().await.unwrap();
            let trailers = collected.trailers().cloned().unwrap_or_default();
            (parts.headers, collected.to_bytes(), trailers)
        })
    }

    fn grpc_status(headers: &http::HeaderMap, trailers: &http::HeaderMap) -> String {
        let value = headers
            .get("grpc-status")
            .or_else(|| trailers.get("grpc-status"))
            .expect("a grpc-status");
        value.to_str().unwrap().to_owned()
    }

    #[test]
    fn a_unary_call_is_handed_over_and_answered_with_metadata() {
        let (server, probe) = serve(true, 1024);
        let (headers, body, trailers) =
            call(server.port(), "Embed", b"hello", &[("x-request-id", "abc")]);
        assert_eq!(grpc_status(&headers, &trailers), "0");
        assert_eq!(headers.get("x-request-id").unwrap(), "abc");
        assert_eq!(body, framed(b"hello"));
        let calls = probe.calls.lock().unwrap();
        assert_eq!(calls[0].method, Method::Embed);
        assert!(
            probe.cancelled.lock().unwrap().is_empty(),
            "an answered call is not cancelled"
        );
    }

    #[test]
    fn a_stream_sends_its_messages_then_the_status_and_trailers() {
        let (server, _probe) = serve(true, 1024);
        let (headers, body, trailers) = call(server.port(), "StreamChatCompletion", b"two", &[]);
        assert_eq!(headers.get("x-request-id").unwrap(), "r1");
        let mut expected = BytesMut::from(&framed(b"one")[..]);
        expected.extend_from_slice(&framed(b"two"));
        assert_eq!(body, expected.freeze());
        assert_eq!(grpc_status(&headers, &trailers), "8");
        assert_eq!(trailers.get("grpc-message").unwrap(), "slow%20down");
        assert_eq!(trailers.get("retry-after").unwrap(), "2");
    }

    #[test]
    fn a_deadline_is_deadline_exceeded_and_cancels_the_call() {
        let (server, probe) = serve(false, 1024);
        for method in ["ChatCompletion", "StreamChatCompletion"] {
            let started = std::time::Instant::now();
            let (headers, _, trailers) =
                call(server.port(), method, b"x", &[("grpc-timeout", "100m")]);
            assert_eq!(grpc_status(&headers, &trailers), "4", "{method}");
            assert!(started.elapsed() < Duration::from_secs(2));
        }
        let calls: Vec<u64> = probe.calls.lock().unwrap().iter().map(|c| c.id).collect();
        assert_eq!(*probe.cancelled.lock().unwrap(), calls);
        let timeout = probe.calls.lock().unwrap()[0].timeout.unwrap();
        assert!(timeout <= Duration::from_millis(100) && timeout > Duration::from_millis(50));
    }

    #[test]
    fn an_oversized_message_is_resource_exhausted_and_never_handed_over() {
        let (server, probe) = serve(true, 16);
        let (headers, _, trailers) = call(server.port(), "ChatCompletion", &[b'x'; 17], &[]);
        assert_eq!(grpc_status(&headers, &trailers), "8");
        assert!(headers
            .get("grpc-message")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("limit%20of%2016%20bytes"));
        assert!(probe.calls.lock().unwrap().is_empty());
    }

    #[test]
    fn an_unknown_method_or_service_is_unimplemented() {
        let (server, probe) = serve(true, 1024);
        let (headers, _, trailers) = call(server.port(), "Nope", b"", &[]);
        assert_eq!(grpc_status(&headers, &trailers), "12");
        assert!(probe.calls.lock().unwrap().is_empty());
    }

    #[test]
    fn drain_stops_the_server_once_calls_end() {
        let (mut server, _probe) = serve(true, 1024);
        server.drain();
        for _ in 0..200 {
            if server.is_stopped() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(server.is_stopped());
        server.join();
    }

    #[test]
    fn service_names_come_from_the_path() {
        assert_eq!(
            service_name("/llm_proxy.v1.Gateway/Embed"),
            "llm_proxy.v1.Gateway"
        );
        assert_eq!(
            service_name("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health"
        );
        assert_eq!(service_name("/"), "");
        assert_eq!(service_name(""), "");
    }

    #[test]
    fn two_listeners_share_a_port() {
        let first = bind("127.0.0.1", 0).unwrap();
        let port = first.local_addr().unwrap().port();
        let second = bind("127.0.0.1", port).unwrap();
        assert_eq!(second.local_addr().unwrap().port(), port);
    }
}
