//! HTTPS_PROXY from the client's side: CONNECT on the proxy port, then TLS inside the tunnel
//! with tokio-rustls trusting only the given roots (the sidecar's CA for intercepted tunnels,
//! the upstream's for blind ones), then HTTP/1.1 ([`RawConn`]) or h2 inside.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::ca::client_config;
use super::raw::{RawConn, RawResponse, DEADLINE};

/// Sends `CONNECT target` (with `Host: target`) on the proxy port. `Ok` with the open stream on
/// a 2xx, else the whole refusal.
pub async fn open_tunnel(proxy: SocketAddr, target: &str) -> Result<TcpStream, RawResponse> {
    let mut conn = RawConn::tcp(proxy).await;
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    let response = conn.request(request.as_bytes()).await.unwrap_or_else(|e| panic!("CONNECT {target}: {e}"));
    if (200..300).contains(&response.status) {
        let (stream, leftover) = conn.into_parts();
        assert!(leftover.is_empty(), "bytes after the CONNECT 200 before TLS: {leftover:?}");
        Ok(stream)
    } else {
        Err(response)
    }
}

/// A TLS client handshake over `stream` with SNI `sni`, trusting only the certificates in
/// `roots_pem`, offering `alpn`.
pub async fn tls_over<S>(stream: S, roots_pem: &str, sni: &str, alpn: &[&[u8]]) -> std::io::Result<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tls_with(stream, client_config(roots_pem, alpn), sni).await
}

/// A TLS client handshake over `stream` with SNI `sni` and the client config `config` (such as
/// [`super::ca::insecure_client_config`]), within [`DEADLINE`].
pub async fn tls_with<S>(stream: S, config: Arc<rustls::ClientConfig>, sni: &str) -> std::io::Result<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from(sni.to_string()).map_err(std::io::Error::other)?;
    tokio::time::timeout(DEADLINE, connector.connect(name, stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// CONNECT `target` and complete TLS inside the tunnel (SNI `sni`, trusting `ca_pem`);
/// panics, saying which step failed, if either step fails.
pub async fn intercepted(
    proxy: SocketAddr,
    target: &str,
    ca_pem: &str,
    sni: &str,
    alpn: &[&[u8]],
) -> TlsStream<TcpStream> {
    let stream = match open_tunnel(proxy, target).await {
        Ok(s) => s,
        Err(r) => panic!("CONNECT {target} refused: {}\n{}", r.head, r.text()),
    };
    tls_over(stream, ca_pem, sni, alpn)
        .await
        .unwrap_or_else(|e| panic!("TLS (SNI {sni}) inside the tunnel to {target} failed: {e}"))
}

/// An h1 keep-alive raw connection inside an intercepted tunnel.
pub async fn intercepted_raw(
    proxy: SocketAddr,
    target: &str,
    ca_pem: &str,
    sni: &str,
) -> RawConn<TlsStream<TcpStream>> {
    RawConn::new(intercepted(proxy, target, ca_pem, sni, &[b"http/1.1"]).await)
}

/// An h2 client over an intercepted tunnel (ALPN h2).
pub async fn intercepted_h2(
    proxy: SocketAddr,
    target: &str,
    ca_pem: &str,
    sni: &str,
) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let tls = intercepted(proxy, target, ca_pem, sni, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "the sidecar did not negotiate h2");
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .expect("h2 handshake inside the tunnel");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

/// Sends one request on an h2 connection; returns status, headers and body.
pub async fn h2_send(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    req: http::Request<Full<Bytes>>,
) -> (u16, http::HeaderMap, Bytes) {
    let response = tokio::time::timeout(DEADLINE, sender.send_request(req))
        .await
        .expect("h2 response in time")
        .expect("h2 response");
    let status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(DEADLINE, body.collect()).await.expect("h2 body in time").expect("h2 body");
    (status, parts.headers, body.to_bytes())
}
