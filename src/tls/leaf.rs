//! Leaf certificates for intercepted hosts, minted on first use and cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::ca::{load_ca, CaError, LoadedCa};
use crate::config::TlsSettings;
use crate::proxy::upstream::crypto_provider;

/// How long a leaf certificate is valid.
const LEAF_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Cached leaves are replaced after half their lifetime, long before they expire.
const LEAF_REFRESH_AFTER: Duration = Duration::from_secs(7 * 24 * 3600 / 2);

/// Mints and caches a TLS server config per intercepted host.
pub struct Interceptor {
    ca: LoadedCa,
    /// One key for every leaf: generating a key per host would cost more than the signature.
    leaf_key: KeyPair,
    settings: TlsSettings,
    /// Digest of the CA files as loaded: a rotated CA (same paths, new bytes) is a new
    /// interceptor on reload, not a restart.
    files_digest: [u8; 32],
    cache: Mutex<HashMap<String, (Arc<ServerConfig>, Instant)>>,
    /// Issues and opens the session tickets of every leaf: resumption that costs the sidecar
    /// no memory per client. rustls's default keeps 256 sessions per certificate, two per
    /// handshake: with more than 128 clients of one host, each full handshake evicts the
    /// sessions of the next clients to come back, and none of them resumes. Its keys are
    /// random, made at start-up, rotated every 6 hours, and never leave memory; rustls accepts
    /// a ticket only for the server name it was issued to.
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor").field("ca_cert", &self.settings.ca_cert).finish_non_exhaustive()
    }
}

impl Interceptor {
    pub fn load(settings: &TlsSettings) -> Result<Interceptor, CaError> {
        // Taken before reading: a rotation during the read is seen by the next reload.
        let files_digest = crate::reload::digest_files(&[settings.ca_cert.clone(), settings.ca_key.clone()]);
        let ca = load_ca(settings)?;
        let leaf_key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| CaError::Generate(e.to_string()))?;
        let ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| CaError::Generate(e.to_string()))?;
        Ok(Interceptor {
            ca,
            leaf_key,
            settings: settings.clone(),
            files_digest,
            cache: Mutex::new(HashMap::new()),
            ticketer,
        })
    }

    /// Whether this interceptor was built from the same settings and CA bytes (so a reload
    /// can keep it, with its leaf cache).
    pub fn is_current(&self, settings: &TlsSettings) -> bool {
        &self.settings == settings
            && self.files_digest == crate::reload::digest_files(&[settings.ca_cert.clone(), settings.ca_key.clone()])
    }

    /// The CA certificate clients must trust, in PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// Number of cached leaf configs (bounded by `leaf_cache_size`).
    pub fn cache_len(&self) -> usize {
        self.cache.lock().map_or(0, |c| c.len())
    }

    /// The server config presenting a certificate for `host`, from the cache when fresh.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let now = Instant::now();
        if let Ok(cache) = self.cache.lock() {
            if let Some((config, minted)) = cache.get(&host) {
                if now.duration_since(*minted) < LEAF_REFRESH_AFTER {
                    return Ok(Arc::clone(config));
                }
            }
        }
        let config = Arc::new(self.mint(&host)?);
        metrics::counter!("tls_leaf_certificates_minted_total").increment(1);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= self.settings.leaf_cache_size && !cache.contains_key(&host) {
                // Evict the oldest entry: a simple bound that keeps hot hosts (re-minted
                // entries are young) without a full LRU.
                if let Some(oldest) = cache.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| k.clone()) {
                    cache.remove(&oldest);
                }
            }
            cache.insert(host, (Arc::clone(&config), now));
        }
        Ok(config)
    }

    fn mint(&self, host: &str) -> Result<ServerConfig, CaError> {
        let generate = |e: rcgen::Error| CaError::Generate(e.to_string());
        let mut params = CertificateParams::new(vec![host.to_string()]).map_err(generate)?;
        params.distinguished_name.push(DnType::CommonName, host);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::try_from(LEAF_LIFETIME).unwrap_or(time::Duration::days(7));
        let cert = params.signed_by(&self.leaf_key, &self.ca.issuer).map_err(generate)?;
        let chain = vec![cert.der().clone(), CertificateDer::clone(&self.ca.cert_der)];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(interception_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| CaError::Generate(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| CaError::Generate(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.ticketer = Arc::clone(&self.ticketer);
        // The sidecar's order, not the client's: see `interception_provider`.
        config.ignore_client_order = true;
        Ok(config)
    }
}

/// The crypto provider of intercepting TLS servers: the process-wide one, with the TLS 1.3
/// suites in the order that costs an intercepted connection least. Clients (OpenSSL's
/// default order, so Python, curl and Node) ask for AES-256-GCM with SHA-384 first; but
/// SHA-384 has no instructions of its own on x86, and aws-lc uses its portable code for it on
/// AMD processors, so the handshake's key schedule costs several times what it does with
/// SHA-256 (SHA extensions), and every record 40% more AES rounds. AES-128-GCM-SHA256 is the
/// suite every TLS 1.3 client must support; ChaCha20 follows for clients without AES
/// instructions. The tunnel is local (the client runs next to the sidecar), and what the
/// sidecar sends upstream is protected as the upstream chooses.
fn interception_provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::aws_lc_rs::cipher_suite;
    let mut provider = (*crypto_provider()).clone();
    let preferred = [
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
    ];
    let rest = provider.cipher_suites.iter().filter(|s| !preferred.contains(s)).copied();
    provider.cipher_suites = preferred.into_iter().chain(rest).collect();
    Arc::new(provider)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &std::path::Path) -> TlsSettings {
        TlsSettings {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            leaf_cache_size: 10,
            generate_if_missing: false,
        }
    }

    /// A CA rotated in place (same paths, new bytes) must not be kept by a reload.
    #[test]
    fn a_rotated_ca_is_not_current() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = settings(dir.path());
        crate::tls::generate_ca_files(&settings.ca_cert, &settings.ca_key).expect("first CA");
        let first = Interceptor::load(&settings).expect("load");
        assert!(first.is_current(&settings));
        let other = TlsSettings { leaf_cache_size: 11, ..settings.clone() };
        assert!(!first.is_current(&other), "changed settings");

        std::fs::remove_file(&settings.ca_cert).expect("remove cert");
        std::fs::remove_file(&settings.ca_key).expect("remove key");
        crate::tls::generate_ca_files(&settings.ca_cert, &settings.ca_key).expect("second CA");
        assert!(!first.is_current(&settings), "same paths, new CA");
        let second = Interceptor::load(&settings).expect("load");
        assert_ne!(first.ca_pem(), second.ca_pem());
    }
}
