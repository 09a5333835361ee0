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

    /// Serves one request that arrived through `entry` from `peer`.
    pub async fn handle(&self, req: Request<Incoming>, entry: &Entry, peer: &Peer) -> Response<ProxyBody> {
        if req.method() == Method::CONNECT {
            // CONNECT opens a tunnel, which only the proxy port offers. Elsewhere its target
            // would be treated as a path and could end up in a library's log line.
            return match entry {
                Entry::Proxy(_) | Entry::Unix(_) => tunnel::connect(self, req, peer).await,
                _ => {
                    metrics::counter!("proxy_requests_total", "route" => "none", "status" => "405").increment(1);
                    crate::error::ProxyError::ConnectNotAllowed.into_response()
                }
            };
        }
        if matches!(entry, Entry::Proxy(_) | Entry::Unix(_)) && req.method() == Method::OPTIONS && req.uri() == "*" {
            // `OPTIONS *` on the proxy port asks about the proxy itself.
            metrics::counter!("proxy_requests_total", "route" => "none", "status" => "200").increment(1);
            return tunnel::options_answer();
        }
        forward::forward(self.snapshot(), &self.budget, entry, peer, req).await
    }
}
