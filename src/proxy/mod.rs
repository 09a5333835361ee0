//! The proxy: accepts agent functions' requests and forwards them with tokens filled in.
//!
//! The request path reads top to bottom in [`forward`]: take the config snapshot, work out
//! the target, match a route, check the host binding, substitute, send upstream, respond,
//! record. Everything else here supports one of those steps.

mod body;
mod forward;
mod headers;
pub mod listen;
mod target;
mod tunnel;
pub mod upstream;

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;

use crate::snapshot::Snapshot;
pub use target::{Entry, ReverseTarget, TunnelTarget};
pub use tunnel::ok_empty;

/// Errors carried inside bodies (client or upstream I/O, a refused placeholder).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request and response the proxy handles.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// The shared handle every listener serves requests with.
#[derive(Clone)]
pub struct Proxy {
    state: Arc<ArcSwap<Snapshot>>,
}

impl Proxy {
    pub fn new(state: Arc<ArcSwap<Snapshot>>) -> Proxy {
        Proxy { state }
    }

    /// The current snapshot; each request loads it exactly once.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.load_full()
    }

    /// Serves one request that arrived through `entry`.
    pub async fn handle(&self, req: Request<Incoming>, entry: &Entry) -> Response<ProxyBody> {
        if req.method() == Method::CONNECT && matches!(entry, Entry::Proxy(_)) {
            return tunnel::connect(self, req).await;
        }
        forward::forward(self.snapshot(), entry, req).await
    }
}
