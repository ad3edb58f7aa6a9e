//! The gRPC door's server: tonic services on hyper, on a tokio runtime of its own. Calls are
//! handed to a `Dispatch` (the worker's event loop, in the bindings) and answered over
//! channels, so the server never waits for the loop.

pub mod call;
#[cfg(feature = "python")]
pub mod py;
pub mod server;
pub mod service;
pub mod translate;

pub use call::{IncomingCall, Method, Reply, ReplyError, Sent, SERVICE};
pub use server::{bind, start, RunningServer};
pub use service::{Dispatch, Gateway};
