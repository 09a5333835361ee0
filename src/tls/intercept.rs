//! Terminating an intercepted CONNECT tunnel and serving the requests inside it.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::LazyConfigAcceptor;

use crate::error::ProxyError;
use crate::policy::callers::Peer;
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
    peer: Peer,
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
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => return tracing::debug!(error = %e, "CONNECT upgrade failed"),
        };
        let tunnel = Tunnel { target, authority, permit, drain, peer };
        serve_tls(TokioIo::new(upgraded), proxy, &interceptor, tunnel, handshake_timeout).await;
    });
    metrics::counter!("proxy_requests_total", "route" => "intercept", "status" => "200").increment(1);
    crate::proxy::ok_empty()
}

/// An accepted CONNECT tunnel to a routed host, and what it keeps of its client connection.
pub struct Tunnel {
    pub target: HostPort,
    /// The tunnel's authority as sent upstream (`host`, or `host:port` off the default port).
    pub authority: http::uri::Authority,
    pub permit: Option<ConnectionPermit>,
    pub drain: Option<Drain>,
    /// Who opened the tunnel: every request inside is theirs.
    pub peer: Peer,
}

/// Terminates the client's TLS inside an open tunnel with a certificate for its host, and
/// serves the requests inside as [`Entry::Tunnel`].
pub async fn serve_tls<S>(
    stream: S,
    proxy: Proxy,
    interceptor: &Interceptor,
    tunnel: Tunnel,
    handshake_timeout: std::time::Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Tunnel { target: HostPort { host, port }, authority, permit, drain, peer } = tunnel;
    // A client that opens the tunnel and never completes a TLS handshake is dropped.
    let tls = match tokio::time::timeout(handshake_timeout, handshake(stream, &host, interceptor)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(reason)) => return handshake_failed(&host, &reason),
        Err(_) => return handshake_failed(&host, "no TLS handshake within [proxy] handshake_timeout"),
    };
    let entry = Entry::Tunnel(Arc::new(TunnelTarget { scheme: Scheme::Https, authority, host, port }));
    serve_connection(TokioIo::new(tls), proxy, entry, permit, drain, peer).await;
}

/// Terminates the client's TLS with a certificate for `host`, after checking its SNI.
async fn handshake<S>(
    stream: S,
    host: &str,
    interceptor: &Interceptor,
) -> Result<tokio_rustls::server::TlsStream<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor = rustls::server::Acceptor::default();
    let start = LazyConfigAcceptor::new(acceptor, stream).await.map_err(|e| e.to_string())?;
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

/// Counts and logs a client TLS handshake that failed (never with key material).
pub fn handshake_failed(host: &str, reason: &str) {
    metrics::counter!("tls_handshake_failures_total").increment(1);
    tracing::debug!(%host, %reason, "TLS handshake with client failed");
}
