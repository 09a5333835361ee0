//! The proxy: accepts agent functions' requests and forwards them with tokens filled in.
//!
//! The request path reads top to bottom in [`forward`]: take the config snapshot, work out
//! the target, match a route, check the host binding, substitute, send upstream, respond,
//! record. Everything else here supports one of those steps.

pub mod body;
pub mod budget;
pub mod client;
mod forward;
mod headers;
pub mod listen;
mod malformed;
pub mod path;
mod protocol;
mod sniff;
pub mod status_counters;
pub mod target;
mod timed;
mod tunnel;
mod upgrade;
pub mod upstream;

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;

use crate::policy::callers::Peer;
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
    /// Shared by every request of every listener, across reloads.
    budget: Arc<budget::BufferBudget>,
}

impl Proxy {
    pub fn new(state: Arc<ArcSwap<Snapshot>>) -> Proxy {
        Proxy { state, budget: budget::BufferBudget::new() }
    }

    /// The current snapshot; each request loads it exactly once.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.load_full()
    }

    /// Answers a CONNECT request that arrived through `entry` from `peer`.
    pub async fn connect(&self, req: Request<Incoming>, entry: &Entry, peer: &Peer) -> Response<ProxyBody> {
        match entry {
            Entry::Proxy(_) | Entry::Unix(_) => tunnel::connect(self, req, peer).await,
            // CONNECT opens a tunnel, which only the proxy port offers. Elsewhere its target
            // would be treated as a path and could end up in a library's log line.
            _ => {
                metrics::counter!("proxy_requests_total", "route" => "none", "status" => "405").increment(1);
                crate::error::ProxyError::ConnectNotAllowed.into_response()
            }
        }
    }

    /// The answer to a request the proxy answers itself without awaiting anything: `OPTIONS *`
    /// on the proxy port asks about the proxy, not about an upstream.
    pub fn answer_locally(&self, req: &Request<Incoming>, entry: &Entry) -> Option<Response<ProxyBody>> {
        if matches!(entry, Entry::Proxy(_) | Entry::Unix(_)) && req.method() == Method::OPTIONS && req.uri() == "*" {
            metrics::counter!("proxy_requests_total", "route" => "none", "status" => "200").increment(1);
            return Some(tunnel::options_answer());
        }
        None
    }

    /// Forwards any other request that arrived through `entry` from `peer`.
    ///
    /// A plain function returning the request path's future rather than an `async fn`
    /// awaiting it: every async layer stores its callee's whole state and copies it when it
    /// starts, so the listener decides what kind of request it serves before anything is
    /// awaited, and the forwarded request's future holds neither a CONNECT tunnel's state
    /// nor a dispatcher's.
    pub fn forward(
        &self,
        req: Request<Incoming>,
        entry: Entry,
        peer: Peer,
    ) -> impl std::future::Future<Output = Response<ProxyBody>> + Send + 'static {
        forward::forward(self.snapshot(), Arc::clone(&self.budget), entry, peer, req)
    }
}
