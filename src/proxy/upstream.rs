//! The upstream clients: pooled HTTP/1.1 and h2 over rustls, with verified certificates,
//! connecting only to addresses the policy allows.
//!
//! Three pools per address rule set, one per way of choosing the protocol ([`Protocol`]): the
//! usual one lets TLS upstreams pick h2 or HTTP/1.1 over ALPN (plain HTTP is HTTP/1.1); the h2
//! one speaks only h2 (gRPC needs it end to end, and a plain-HTTP upstream gets it with prior
//! knowledge); the HTTP/1.1 one carries `Upgrade` requests, which h2 cannot express. A route
//! that may reach more networks than `[policy]` allows gets pools of its own, so a connection
//! opened under its allowance is never reused by other traffic.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::client::{Client, ClientError, Connector, UpstreamBody};
use super::ProxyBody;
use crate::config::ProxySettings;
use crate::policy::connect::CheckedConnector;
use crate::policy::networks::NetworkRules;

/// The pooled client type: every connection goes to an address its rules allow.
pub type UpstreamClient = Client;

/// Pooled clients for all upstream requests of one snapshot (kept across reloads that do
/// not change their settings, so the pools survive).
pub struct Upstream {
    /// The clients under `[policy]`'s address rules: unrouted traffic, token exchanges, and
    /// routes without `allow_networks`.
    pub client: ProtocolClients,
    /// One set of clients (and connection pools) per further rule set, for routes that allow
    /// more.
    routed: Vec<ProtocolClients>,
    /// The rule sets, `[0]` for `client`, then one per entry of `routed`.
    network_sets: Vec<Arc<NetworkRules>>,
    /// Digest of `extra_ca_file` as it was loaded: a reload that finds other bytes builds a
    /// new client, so a rotated CA is trusted at once.
    pub ca_digest: [u8; 32],
    /// How long a request may wait for response headers; token exchanges use it too.
    pub request_timeout: std::time::Duration,
}

/// The three pools of one address rule set, one per [`Protocol`].
pub struct ProtocolClients {
    /// ALPN picks h2 or HTTP/1.1 for TLS upstreams; plain HTTP is HTTP/1.1.
    negotiated: UpstreamClient,
    /// h2 only: ALPN offers only `h2`, plain HTTP uses prior knowledge.
    h2: UpstreamClient,
    /// HTTP/1.1 only, for requests that upgrade the connection.
    http1: UpstreamClient,
}

impl ProtocolClients {
    /// The pooled client that speaks `protocol`.
    pub fn speaking(&self, protocol: Protocol) -> &UpstreamClient {
        match protocol {
            Protocol::Negotiated => &self.negotiated,
            Protocol::Http2 => &self.h2,
            Protocol::Http1 => &self.http1,
        }
    }

    /// Sends with the usual client (ALPN decides), for token exchanges and other requests of
    /// the sidecar's own.
    pub async fn request(&self, req: http::Request<ProxyBody>) -> Result<http::Response<UpstreamBody>, ClientError> {
        self.negotiated.request(req).await
    }
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
    /// Clients for `network_sets` (`[0]` is `[policy]`'s; there is at least one).
    pub fn new(settings: &ProxySettings, network_sets: &[Arc<NetworkRules>]) -> Result<Upstream, String> {
        let roots = root_store(settings.extra_ca_file.as_deref())?;
        let tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = |rules: &Arc<NetworkRules>, protocol: Protocol| {
            let tcp = CheckedConnector::new(Arc::clone(rules), settings.connect_timeout);
            Client::new(Connector::new(tcp, &tls, protocol), protocol, settings.pool_idle_timeout)
        };
        let clients = |rules: &Arc<NetworkRules>| ProtocolClients {
            negotiated: client(rules, Protocol::Negotiated),
            h2: client(rules, Protocol::Http2),
            http1: client(rules, Protocol::Http1),
        };
        let first = network_sets.first().cloned().unwrap_or_else(|| Arc::new(NetworkRules::new(&[], &[])));
        let ca_digest = crate::reload::digest_files(settings.extra_ca_file.as_slice());
        Ok(Upstream {
            client: clients(&first),
            routed: network_sets.iter().skip(1).map(clients).collect(),
            network_sets: std::iter::once(first).chain(network_sets.iter().skip(1).cloned()).collect(),
            ca_digest,
            request_timeout: settings.request_timeout,
        })
    }

    /// The client for rule set `index` of the policy that speaks `protocol`.
    pub fn client_for(&self, index: usize, protocol: Protocol) -> &UpstreamClient {
        index.checked_sub(1).and_then(|i| self.routed.get(i)).unwrap_or(&self.client).speaking(protocol)
    }

    /// Whether these clients were built for exactly `network_sets`.
    pub fn has_networks(&self, network_sets: &[Arc<NetworkRules>]) -> bool {
        self.network_sets.len() == network_sets.len() && self.network_sets.iter().zip(network_sets).all(|(a, b)| a == b)
    }
}
