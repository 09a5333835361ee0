//! The local certificate authority: created once by `token-sidecar ca init`, loaded at start.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use time::{Duration, OffsetDateTime};

use crate::config::TlsSettings;
use crate::files::{Staged, Visibility};

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{} already exists; refusing to overwrite the CA (clients trust it)", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: not a usable CA private key (expected PEM PKCS#8, as `token-sidecar ca init` writes): {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("{}: not a usable CA certificate: {reason}", path.display())]
    BadCert { path: PathBuf, reason: String },
    #[error("certificate generation failed: {0}")]
    Generate(String),
}

/// A CA ready to sign leaf certificates.
pub struct LoadedCa {
    pub issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub cert_der: rustls_pki_types::CertificateDer<'static>,
}

/// Creates a new EC P-256 CA valid for ten years in `dir` as `ca.pem` and `ca.key` (0600).
pub fn generate_ca(dir: &Path) -> Result<(PathBuf, PathBuf), CaError> {
    let cert_path = dir.join("ca.pem");
    let key_path = dir.join("ca.key");
    generate_ca_files(&cert_path, &key_path)?;
    Ok((cert_path, key_path))
}

/// Creates a new CA at exactly these paths; neither may exist yet.
pub fn generate_ca_files(cert_path: &Path, key_path: &Path) -> Result<(), CaError> {
    for p in [cert_path, key_path] {
        if p.exists() {
            return Err(CaError::Exists(p.to_path_buf()));
        }
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| CaError::Write { path: dir.to_path_buf(), source })?;
        }
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| CaError::Generate(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "token-sidecar local CA");
    params.distinguished_name.push(DnType::OrganizationName, "token-sidecar");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(3650);
    let cert = params.self_signed(&key).map_err(|e| CaError::Generate(e.to_string()))?;
    // Both files are written in full before either appears, so a reader never finds half a
    // file and the pair is visible within two link calls; if the key cannot take its name, the
    // certificate published a moment before is taken back.
    let cert_file = stage(cert_path, cert.pem().as_bytes(), Visibility::Public)?;
    let key_file = stage(key_path, key.serialize_pem().as_bytes(), Visibility::Private)?;
    publish(cert_file)?;
    publish(key_file).inspect_err(|_| {
        let _ = std::fs::remove_file(cert_path);
    })
}

/// Loads and checks the CA named by `[tls]`.
pub fn load_ca(settings: &TlsSettings) -> Result<LoadedCa, CaError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| CaError::Read { path: path.to_path_buf(), source })
    };
    let key_pem = read(&settings.ca_key)?;
    let cert_pem = read(&settings.ca_cert)?;
    let key = KeyPair::from_pem(&key_pem)
        .map_err(|e| CaError::BadKey { path: settings.ca_key.clone(), reason: e.to_string() })?;
    let public_key = key.public_key_raw().to_vec();
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
        .map_err(|e| CaError::BadCert { path: settings.ca_cert.clone(), reason: e.to_string() })?;
    use rustls_pki_types::pem::PemObject;
    let cert_der = rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| CaError::BadCert { path: settings.ca_cert.clone(), reason: e.to_string() })?;
    // The key must belong to the certificate, or every leaf would fail verification.
    let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
        .map_err(|e| CaError::BadCert { path: settings.ca_cert.clone(), reason: e.to_string() })?;
    if parsed.public_key().subject_public_key.data.as_ref() != public_key.as_slice() {
        return Err(CaError::BadKey { path: settings.ca_key.clone(), reason: "it does not match ca_cert".into() });
    }
    Ok(LoadedCa { issuer, cert_pem, cert_der })
}

fn stage(path: &Path, contents: &[u8], visibility: Visibility) -> Result<Staged, CaError> {
    crate::files::stage(path, contents, visibility)
        .map_err(|source| CaError::Write { path: path.to_path_buf(), source })
}

fn publish(file: Staged) -> Result<(), CaError> {
    let path = file.target().to_path_buf();
    file.publish().map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => CaError::Exists(path),
        _ => CaError::Write { path, source },
    })
}
