//! The upstream clients: pooled HTTP/1.1 and h2 over rustls, with verified certificates.
//!
//! Three pools, one per way of choosing the protocol ([`Protocol`]): the usual one lets TLS
//! upstreams pick h2 or HTTP/1.1 over ALPN (plain HTTP is HTTP/1.1); the h2 one speaks only
//! h2 (gRPC needs it end to end, and a plain-HTTP upstream gets it with prior knowledge); the
//! HTTP/1.1 one carries `Upgrade` requests, which h2 cannot express.

use std::sync::Arc;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::ProxyBody;
use crate::config::ProxySettings;

/// A pooled client for all upstream requests of one snapshot (kept across reloads that do
/// not change its settings, so the pool survives).
pub struct Upstream {
    /// ALPN picks h2 or HTTP/1.1 for TLS upstreams; plain HTTP is HTTP/1.1.
    pub client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    /// h2 only: ALPN offers only `h2`, plain HTTP uses prior knowledge.
    h2: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    /// HTTP/1.1 only, for requests that upgrade the connection.
    http1: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    /// Digest of `extra_ca_file` as it was loaded: a reload that finds other bytes builds a
    /// new client, so a rotated CA is trusted at once.
    pub ca_digest: [u8; 32],
    /// How long a request may wait for response headers; token exchanges use it too.
    pub request_timeout: std::time::Duration,
}

/// The process-wide crypto provider: aws-lc-rs, named explicitly so no other provider is
/// ever picked up from a dependency's features.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Roots for verifying upstreams: the Mozilla set, plus a private CA file if configured.
pub fn root_store(extra_ca_file: Option<&std::path::Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = extra_ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read extra_ca_file {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("extra_ca_file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("extra_ca_file {} holds no certificate", path.display()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| format!("extra_ca_file {}: {e}", path.display()))?;
        }
    }
    Ok(roots)
}

/// Which HTTP version a request goes upstream with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1, or h2 when a TLS upstream picks it over ALPN.
    Negotiated,
    /// h2 only (prior knowledge over plain HTTP).
    Http2,
    /// HTTP/1.1 only.
    Http1,
}

impl Upstream {
    pub fn new(settings: &ProxySettings) -> Result<Upstream, String> {
        let roots = root_store(settings.extra_ca_file.as_deref())?;
        let tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = |protocol: Protocol| {
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_nodelay(true);
            http.set_connect_timeout(Some(settings.connect_timeout));
            let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls.clone()).https_or_http();
            let connector = match protocol {
                Protocol::Negotiated => builder.enable_http1().enable_http2().wrap_connector(http),
                Protocol::Http2 => builder.enable_http2().wrap_connector(http),
                Protocol::Http1 => builder.enable_http1().wrap_connector(http),
            };
            Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(settings.pool_idle_timeout)
                .http2_only(protocol == Protocol::Http2)
                .build(connector)
        };
        let ca_digest = crate::reload::digest_files(settings.extra_ca_file.as_slice());
        Ok(Upstream {
            client: client(Protocol::Negotiated),
            h2: client(Protocol::Http2),
            http1: client(Protocol::Http1),
            ca_digest,
            request_timeout: settings.request_timeout,
        })
    }

    /// The pooled client that speaks `protocol`.
    pub fn client_for(&self, protocol: Protocol) -> &Client<HttpsConnector<HttpConnector>, ProxyBody> {
        match protocol {
            Protocol::Negotiated => &self.client,
            Protocol::Http2 => &self.h2,
            Protocol::Http1 => &self.http1,
        }
    }
}
