//! CONNECT: blind TCP tunnels to unrouted hosts; routed hosts are intercepted (see `tls`).

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::listen::{ConnectionPermit, Drain};
use super::target::{parse_connect_target, HostPort};
use super::{Proxy, ProxyBody};
use crate::config::Unmatched;
use crate::error::ProxyError;
use crate::policy::callers::{Listener, Peer};
use crate::policy::connect::{dial, DialError};
use crate::routes::Scheme;

/// Answers a CONNECT request: intercept, tunnel blind, or refuse.
pub async fn connect(proxy: &Proxy, mut req: Request<Incoming>, peer: &Peer) -> Response<ProxyBody> {
    let snapshot = proxy.snapshot();
    let target = match connect_target(req.uri()) {
        Ok(t) => t,
        Err(error) => {
            metrics::counter!("proxy_requests_total", "route" => "none", "status" => "400").increment(1);
            return error.into_response();
        }
    };
    // The tunnel's requests are this caller's: it is asked once, here.
    let caller = match snapshot.policy.identify(Listener::Proxy, peer, req.headers()) {
        Ok(caller) => caller,
        Err(error) => {
            metrics::counter!("proxy_requests_total", "route" => "none", "status" => "407").increment(1);
            return snapshot.policy.connect_answered(None, &target, error);
        }
    };
    // The tunnel keeps the client connection's slot of max_connections.
    let permit = req.extensions_mut().remove::<ConnectionPermit>();
    // ... and is drained on shutdown like the listener's own connections.
    let drain = req.extensions_mut().remove::<Drain>();
    if snapshot.routes.has_host(Scheme::Https, &target.host, target.port) {
        let tunnel_peer = Peer::tunnel(caller.as_deref());
        let response = crate::tls::intercept(proxy, &snapshot, req, target.clone(), permit, drain, tunnel_peer).await;
        let error = response.headers().get(crate::error::ERROR_HEADER).is_some();
        if !error {
            snapshot.policy.connect_opened(caller.as_deref(), &target, "https");
        }
        return response;
    }
    let address = format!("{}:{}", target.host, target.port);
    if snapshot.config.proxy.unmatched == Unmatched::Deny {
        metrics::counter!("proxy_requests_total", "route" => "none", "status" => "403").increment(1);
        return snapshot.policy.connect_answered(caller.as_deref(), &target, ProxyError::UnmatchedDenied(address));
    }
    if let Err(error) = snapshot.policy.admit_unrouted(&target.host, caller.as_deref()) {
        let status = error.status();
        metrics::counter!("proxy_requests_total", "route" => "none", "status" => status.as_str().to_owned())
            .increment(1);
        return snapshot.policy.connect_answered(caller.as_deref(), &target, error);
    }
    let connect_timeout = snapshot.config.proxy.connect_timeout;
    let rules = std::sync::Arc::clone(snapshot.policy.networks());
    // Resolved once, checked, and connected to a checked address (no DNS rebinding window).
    let upstream = match dial(&target.host, target.port, &rules, connect_timeout).await {
        Ok(stream) => stream,
        Err(error) => {
            let error = match error {
                DialError::Denied(denied) => ProxyError::PolicyDenied(denied.to_string()),
                DialError::Unreachable => ProxyError::UpstreamUnreachable(address),
                DialError::TimedOut => ProxyError::UpstreamTimeout(address),
            };
            if !matches!(error, ProxyError::PolicyDenied(_)) {
                metrics::counter!("upstream_errors_total", "kind" => error.code()).increment(1);
            }
            let status = error.status();
            metrics::counter!("proxy_requests_total", "route" => "tunnel", "status" => status.as_str().to_owned())
                .increment(1);
            return snapshot.policy.connect_answered(caller.as_deref(), &target, error);
        }
    };
    let closed = snapshot.policy.tunnel_record(caller.as_deref(), &target);
    drop(snapshot);
    tokio::spawn(async move {
        let _permit = permit;
        // Shutdown waits for the tunnel (up to the grace period): it cannot be asked to end.
        let _drain = drain.as_ref().and_then(Drain::take);
        let copied = match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let mut upstream = upstream;
                tokio::io::copy_bidirectional(&mut client, &mut upstream).await.ok()
            }
            Err(e) => {
                tracing::debug!(error = %e, "CONNECT upgrade failed");
                None
            }
        };
        if let Some(closed) = closed {
            closed.finish(copied);
        }
    });
    metrics::counter!("proxy_requests_total", "route" => "tunnel", "status" => "200").increment(1);
    ok_empty()
}

/// The host and port of a CONNECT request: authority-form only (`host:port`).
fn connect_target(uri: &http::Uri) -> Result<HostPort, ProxyError> {
    let refuse = |why: &str| ProxyError::BadConnectTarget(why.to_string());
    if uri.scheme().is_some() {
        return Err(refuse("a CONNECT target is host:port, without a scheme or path"));
    }
    if uri.path_and_query().is_some_and(|pq| !pq.as_str().is_empty() && pq.as_str() != "/") {
        return Err(refuse("a CONNECT target is host:port, without a scheme or path"));
    }
    let Some(authority) = uri.authority() else {
        return Err(refuse("CONNECT needs a host:port target"));
    };
    parse_connect_target(authority.as_str())
}

/// A `200` with an empty body: the tunnel is open.
pub fn ok_empty() -> Response<ProxyBody> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = StatusCode::OK;
    response
}
