//! Terminating an intercepted CONNECT tunnel and serving the requests inside it.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_rustls::LazyConfigAcceptor;

use crate::error::ProxyError;
use crate::proxy::listen::{serve_connection, ConnectionPermit, Drain};
use crate::proxy::target::HostPort;
use crate::proxy::{Entry, Proxy, ProxyBody, TunnelTarget};
use crate::routes::Scheme;
use crate::snapshot::Snapshot;
use crate::tls::Interceptor;

/// Answers a CONNECT to a routed host with 200, then terminates TLS inside the tunnel with a
/// certificate for that host and serves its requests as [`Entry::Tunnel`].
pub async fn intercept(
    proxy: &Proxy,
    snapshot: &Snapshot,
    req: Request<Incoming>,
    target: HostPort,
    permit: Option<ConnectionPermit>,
    drain: Option<Drain>,
    peer: crate::policy::callers::Peer,
) -> Response<ProxyBody> {
    let authority = match target.authority(Scheme::Https) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let Some(interceptor) = snapshot.interceptor.clone() else {
        metrics::counter!("proxy_requests_total", "route" => "intercept", "status" => "403").increment(1);
        return ProxyError::InterceptionDisabled(authority.to_string()).into_response();
    };
    let handshake_timeout = snapshot.config.proxy.handshake_timeout;
    let proxy = proxy.clone();
    tokio::spawn(async move {
        let HostPort { host, port } = target;
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => return tracing::debug!(error = %e, "CONNECT upgrade failed"),
        };
        // A client that opens the tunnel and never completes a TLS handshake is dropped.
        let handshake = tokio::time::timeout(handshake_timeout, handshake(upgraded, &host, &interceptor)).await;
        let tls = match handshake {
            Ok(Ok(tls)) => tls,
            Ok(Err(reason)) => return handshake_failed(&host, &reason),
            Err(_) => return handshake_failed(&host, "no TLS handshake within [proxy] handshake_timeout"),
        };
        let entry = Entry::Tunnel(Arc::new(TunnelTarget { authority, host, port }));
        serve_connection(TokioIo::new(tls), proxy, entry, permit, drain, peer).await;
    });
    metrics::counter!("proxy_requests_total", "route" => "intercept", "status" => "200").increment(1);
    crate::proxy::ok_empty()
}

/// Terminates the client's TLS with a certificate for `host`, after checking its SNI.
async fn handshake(
    upgraded: hyper::upgrade::Upgraded,
    host: &str,
    interceptor: &Interceptor,
) -> Result<tokio_rustls::server::TlsStream<TokioIo<hyper::upgrade::Upgraded>>, String> {
    let acceptor = rustls::server::Acceptor::default();
    let start = LazyConfigAcceptor::new(acceptor, TokioIo::new(upgraded)).await.map_err(|e| e.to_string())?;
    // Invariant 6: the name the client asks TLS for must be the tunnel's host.
    if let Some(sni) = start.client_hello().server_name() {
        let sni = sni.strip_suffix('.').unwrap_or(sni);
        if !sni.eq_ignore_ascii_case(host.trim_start_matches('[').trim_end_matches(']')) {
            return Err(format!("SNI {sni:?} does not match the CONNECT host"));
        }
    }
    let config = interceptor.server_config(host).map_err(|e| e.to_string())?;
    start.into_stream(config).await.map_err(|e| e.to_string())
}

fn handshake_failed(host: &str, reason: &str) {
    metrics::counter!("tls_handshake_failures_total").increment(1);
    tracing::debug!(%host, %reason, "TLS handshake with client failed");
}
