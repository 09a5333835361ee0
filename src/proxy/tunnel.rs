//! CONNECT: blind TCP tunnels to unrouted hosts; routed hosts are intercepted (see `tls`).
//!
//! A host and port with an `http` route may be sent plain HTTP through the tunnel (undici,
//! grpcio and `websockets` do that for `http://` and `ws://` URLs), so such a tunnel is
//! opened first and its first byte decides ([`super::sniff`]): plain text is served as
//! routed plain HTTP, bound to the tunnel's host like an intercepted tunnel; a TLS
//! ClientHello is intercepted when the same host and port also has an `https` route (and
//! `[tls]` is configured), and otherwise tunnelled blind, as any unrouted CONNECT.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::listen::{serve_connection, ConnectionPermit, Drain};
use super::sniff::{sniff, Opening};
use super::target::{parse_connect_target, HostPort};
use super::{Entry, Proxy, ProxyBody, TunnelTarget};
use crate::config::Unmatched;
use crate::error::ProxyError;
use crate::policy::callers::{Caller, Listener, Peer};
use crate::policy::connect::{dial, DialError};
use crate::routes::Scheme;
use crate::snapshot::Snapshot;

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
    let https_routed = snapshot.routes.has_host(Scheme::Https, &target.host, target.port);
    if snapshot.routes.has_host(Scheme::Http, &target.host, target.port) {
        let opened = Opened { permit, drain, caller };
        return sniffed(proxy, &snapshot, req, target, opened, https_routed);
    }
    if https_routed {
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
    // Resolved once, checked, and connected to a checked address (no DNS rebinding window).
    let upstream = match checked_dial(&snapshot, &target).await {
        Ok(stream) => stream,
        Err(error) => {
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

/// What an accepted tunnel keeps of the CONNECT that opened it.
struct Opened {
    permit: Option<ConnectionPermit>,
    drain: Option<Drain>,
    caller: Option<Arc<Caller>>,
}

/// Connects to a CONNECT target at an address the policy allows (resolved once, checked, and
/// connected to the checked address), counting upstream failures.
async fn checked_dial(snapshot: &Snapshot, target: &HostPort) -> Result<tokio::net::TcpStream, ProxyError> {
    let address = || format!("{}:{}", target.host, target.port);
    let rules = Arc::clone(snapshot.policy.networks());
    match dial(&target.host, target.port, &rules, snapshot.config.proxy.connect_timeout).await {
        Ok(stream) => Ok(stream),
        Err(DialError::Denied(denied)) => Err(ProxyError::PolicyDenied(denied.to_string())),
        Err(error) => {
            let error = match error {
                DialError::TimedOut => ProxyError::UpstreamTimeout(address()),
                _ => ProxyError::UpstreamUnreachable(address()),
            };
            metrics::counter!("upstream_errors_total", "kind" => error.code()).increment(1);
            Err(error)
        }
    }
}

/// Opens a tunnel to a host and port with an `http` route, and serves it by what the client
/// sends first: plain HTTP as routed requests, TLS intercepted (when `https_routed`) or blind.
fn sniffed(
    proxy: &Proxy,
    snapshot: &Arc<Snapshot>,
    req: Request<Incoming>,
    target: HostPort,
    opened: Opened,
    https_routed: bool,
) -> Response<ProxyBody> {
    let (Ok(http_authority), Ok(https_authority)) = (target.authority(Scheme::Http), target.authority(Scheme::Https))
    else {
        metrics::counter!("proxy_requests_total", "route" => "none", "status" => "400").increment(1);
        return ProxyError::BadHost("the host is not a valid URI authority".into()).into_response();
    };
    let Opened { permit, drain, caller } = opened;
    let settings = &snapshot.config.proxy;
    let handshake_timeout = settings.handshake_timeout;
    let deny_blind = settings.unmatched == Unmatched::Deny;
    let interceptor = snapshot.interceptor.clone();
    let proxy = proxy.clone();
    let snapshot = Arc::clone(snapshot);
    snapshot.policy.connect_opened(caller.as_deref(), &target, "http");
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => return tracing::debug!(error = %e, "CONNECT upgrade failed"),
        };
        let (opening, stream) = match sniff(TokioIo::new(upgraded), handshake_timeout).await {
            Ok(sniffed) => sniffed,
            Err(e) => return tracing::debug!(host = %target.host, error = %e, "tunnel closed before its first byte"),
        };
        let peer = Peer::tunnel(caller.as_deref());
        match (opening, https_routed, interceptor) {
            (Opening::Plain, ..) => {
                let HostPort { host, port } = target;
                let tunnel = TunnelTarget { scheme: Scheme::Http, authority: http_authority, host, port };
                let entry = Entry::Tunnel(Arc::new(tunnel));
                drop(snapshot);
                serve_connection(TokioIo::new(stream), proxy, entry, permit, drain, peer).await;
            }
            (Opening::Tls, true, Some(interceptor)) => {
                drop(snapshot);
                let tunnel = crate::tls::Tunnel { target, authority: https_authority, permit, drain, peer };
                crate::tls::serve_tls(stream, proxy, &interceptor, tunnel, handshake_timeout).await;
            }
            (Opening::Tls, true, None) => {
                let reason = "TLS inside a tunnel to a routed https host, but [tls] interception is not configured";
                crate::tls::handshake_failed(&target.host, reason);
            }
            (Opening::Tls, false, _) if deny_blind => {
                tracing::debug!(host = %target.host, "TLS to a host with only http routes and unmatched = \"deny\": closed");
            }
            (Opening::Tls, false, _) => {
                // Blind, as any unrouted CONNECT: under the host and address rules.
                if let Err(error) = snapshot.policy.admit_unrouted(&target.host, caller.as_deref()) {
                    return tracing::debug!(host = %target.host, error = %error, "blind TLS tunnel refused by policy");
                }
                let _permit = permit;
                let _drain = drain.as_ref().and_then(Drain::take);
                match checked_dial(&snapshot, &target).await {
                    Ok(mut upstream) => {
                        drop(snapshot);
                        let mut client = stream;
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                    Err(error) => tracing::debug!(host = %target.host, error = %error, "blind TLS tunnel not opened"),
                }
            }
        }
    });
    metrics::counter!("proxy_requests_total", "route" => "intercept", "status" => "200").increment(1);
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

/// The proxy's own answer to `OPTIONS *`: what it serves, with an empty body.
pub fn options_answer() -> Response<ProxyBody> {
    let mut response = ok_empty();
    response.headers_mut().insert(
        http::header::ALLOW,
        http::HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, CONNECT"),
    );
    response.headers_mut().insert(http::header::CONTENT_LENGTH, http::HeaderValue::from_static("0"));
    response
}
