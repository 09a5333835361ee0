//! Opening an upstream connection: TCP to a checked address, TLS with ALPN for `https`, then
//! the HTTP/1.1 or h2 handshake, with the connection's task spawned.

use std::sync::Arc;

use http::Uri;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tower_service::Service;

use super::super::upstream::Protocol;
use super::super::ProxyBody;
use super::error::ClientError;
use super::pool::{Key, Sender};
use crate::policy::connect::CheckedConnector;

/// The ALPN identifier of h2.
const ALPN_H2: &[u8] = b"h2";

/// Opens connections for one client: its address rules, its TLS config (ALPN set for its
/// protocol) and whether it speaks only h2.
pub struct Connector {
    tcp: CheckedConnector,
    tls: tokio_rustls::TlsConnector,
    protocol: Protocol,
}

impl Connector {
    /// `tls` is the shared client config; its ALPN list is set here for `protocol`.
    pub fn new(tcp: CheckedConnector, tls: &rustls::ClientConfig, protocol: Protocol) -> Connector {
        let mut tls = tls.clone();
        tls.alpn_protocols = match protocol {
            Protocol::Negotiated => vec![ALPN_H2.to_vec(), b"http/1.1".to_vec()],
            Protocol::Http2 => vec![ALPN_H2.to_vec()],
            Protocol::Http1 => vec![b"http/1.1".to_vec()],
        };
        Connector { tcp, tls: tokio_rustls::TlsConnector::from(Arc::new(tls)), protocol }
    }

    /// A new connection to `key`, ready for a request. h2 when the client speaks only h2, or
    /// when a TLS upstream chose it; HTTP/1.1 otherwise.
    pub async fn open(&self, key: &Key) -> Result<Sender, ClientError> {
        let scheme = if key.https { http::uri::Scheme::HTTPS } else { http::uri::Scheme::HTTP };
        let uri = Uri::builder()
            .scheme(scheme)
            .authority(key.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(ClientError::connect)?;
        let mut tcp = self.tcp.clone();
        std::future::poll_fn(|cx| tcp.poll_ready(cx)).await.map_err(ClientError::connect)?;
        let stream = tcp.call(uri).await.map_err(ClientError::connect)?;
        let h2_only = self.protocol == Protocol::Http2;
        if !key.https {
            return handshake(stream, h2_only).await;
        }
        let host = key.authority.host().trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string()).map_err(ClientError::connect)?;
        let tls = self.tls.connect(name, stream.into_inner()).await.map_err(ClientError::connect)?;
        let h2 = h2_only || tls.get_ref().1.alpn_protocol() == Some(ALPN_H2);
        handshake(TokioIo::new(tls), h2).await
    }
}

/// Speaks HTTP over `io` and spawns the connection's task; HTTP/1.1 connections can be
/// handed over by a `101 Switching Protocols` answer.
async fn handshake<I>(io: I, h2: bool) -> Result<Sender, ClientError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    if h2 {
        let (mut sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake::<_, ProxyBody>(io)
            .await
            .map_err(ClientError::send)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream h2 connection ended");
            }
        });
        sender.ready().await.map_err(ClientError::send)?;
        metrics::counter!("upstream_connections_opened_total", "protocol" => "h2").increment(1);
        return Ok(Sender::Http2(sender));
    }
    let (sender, conn) = http1::Builder::new().handshake::<_, ProxyBody>(io).await.map_err(ClientError::send)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    metrics::counter!("upstream_connections_opened_total", "protocol" => "http1").increment(1);
    Ok(Sender::Http1(sender))
}
