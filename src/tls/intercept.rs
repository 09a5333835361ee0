//! Terminating an intercepted CONNECT tunnel and serving the requests inside it.

use std::sync::Arc;

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_rustls::LazyConfigAcceptor;

use crate::error::ProxyError;
use crate::proxy::listen::serve_connection;
use crate::proxy::{Entry, Proxy, ProxyBody, TunnelTarget};
use crate::snapshot::Snapshot;

/// Answers a CONNECT to a routed host with 200, then terminates TLS inside the tunnel with a
/// certificate for that host and serves its requests as [`Entry::Tunnel`].
pub async fn intercept(
    proxy: &Proxy,
    snapshot: &Snapshot,
    req: Request<Incoming>,
    authority: Authority,
    host: String,
    port: u16,
) -> Response<ProxyBody> {
    let Some(interceptor) = snapshot.interceptor.clone() else {
        return ProxyError::InterceptionDisabled(authority.to_string()).into_response();
    };
    let proxy = proxy.clone();
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => return tracing::debug!(error = %e, "CONNECT upgrade failed"),
        };
        let acceptor = rustls::server::Acceptor::default();
        let start = match LazyConfigAcceptor::new(acceptor, TokioIo::new(upgraded)).await {
            Ok(start) => start,
            Err(e) => return handshake_failed(&host, &e.to_string()),
        };
        // Invariant 6: the name the client asks TLS for must be the tunnel's host.
        if let Some(sni) = start.client_hello().server_name() {
            if !sni.eq_ignore_ascii_case(host.trim_start_matches('[').trim_end_matches(']')) {
                return handshake_failed(&host, &format!("SNI {sni:?} does not match the CONNECT host"));
            }
        }
        let config = match interceptor.server_config(&host) {
            Ok(c) => c,
            Err(e) => return handshake_failed(&host, &e.to_string()),
        };
        let tls = match start.into_stream(config).await {
            Ok(tls) => tls,
            Err(e) => return handshake_failed(&host, &e.to_string()),
        };
        let entry = Entry::Tunnel(Arc::new(TunnelTarget { authority, host, port }));
        serve_connection(TokioIo::new(tls), proxy, entry).await;
    });
    metrics::counter!("proxy_requests_total", "route" => "intercept", "status" => "200").increment(1);
    crate::proxy::ok_empty()
}

fn handshake_failed(host: &str, reason: &str) {
    metrics::counter!("tls_handshake_failures_total").increment(1);
    tracing::debug!(%host, %reason, "TLS handshake with client failed");
}
