//! The upstream client: pooled HTTP/1.1 and h2 over rustls, with verified certificates.

use std::sync::Arc;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::ProxyBody;
use crate::config::ProxySettings;
use crate::policy::connect::CheckedConnector;
use crate::policy::networks::NetworkRules;

/// The pooled client type: every connection goes to an address its rules allow.
pub type UpstreamClient = Client<HttpsConnector<CheckedConnector>, ProxyBody>;

/// Pooled clients for all upstream requests of one snapshot (kept across reloads that do
/// not change their settings, so the pools survive).
pub struct Upstream {
    /// The client under `[policy]`'s address rules: unrouted traffic, token exchanges, and
    /// routes without `allow_networks`.
    pub client: UpstreamClient,
    /// One client (and connection pool) per further rule set, for routes that allow more.
    routed: Vec<UpstreamClient>,
    /// The rule sets, `[0]` for `client`, then one per entry of `routed`.
    network_sets: Vec<Arc<NetworkRules>>,
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

impl Upstream {
    /// Clients for `network_sets` (`[0]` is `[policy]`'s; there is at least one).
    pub fn new(settings: &ProxySettings, network_sets: &[Arc<NetworkRules>]) -> Result<Upstream, String> {
        let roots = root_store(settings.extra_ca_file.as_deref())?;
        let tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = |rules: &Arc<NetworkRules>| {
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(CheckedConnector::new(Arc::clone(rules), settings.connect_timeout));
            Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(settings.pool_idle_timeout)
                .build(connector)
        };
        let first = network_sets.first().cloned().unwrap_or_else(|| Arc::new(NetworkRules::new(&[], &[])));
        let ca_digest = crate::reload::digest_files(settings.extra_ca_file.as_slice());
        Ok(Upstream {
            client: client(&first),
            routed: network_sets.iter().skip(1).map(client).collect(),
            network_sets: std::iter::once(first).chain(network_sets.iter().skip(1).cloned()).collect(),
            ca_digest,
            request_timeout: settings.request_timeout,
        })
    }

    /// The client for rule set `index` of the policy.
    pub fn client_for(&self, index: usize) -> &UpstreamClient {
        index.checked_sub(1).and_then(|i| self.routed.get(i)).unwrap_or(&self.client)
    }

    /// Whether these clients were built for exactly `network_sets`.
    pub fn has_networks(&self, network_sets: &[Arc<NetworkRules>]) -> bool {
        self.network_sets.len() == network_sets.len() && self.network_sets.iter().zip(network_sets).all(|(a, b)| a == b)
    }
}
