//! Loading signing keys in the forms users actually have, and saying exactly what is wrong
//! with the ones that cannot be used.
//!
//! Every key is parsed with aws-lc-rs when the config loads, into a [`Signer`] that is ready
//! to sign, and anything unusable is rejected with a message naming the fix: a bad key is
//! found by `check`, never by the first refresh.

use aws_lc_rs::signature::{
    EcdsaKeyPair, EcdsaSigningAlgorithm, Ed25519KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    ECDSA_P384_SHA384_FIXED_SIGNING, ECDSA_P521_SHA512_FIXED_SIGNING,
};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, Engine};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use super::algorithm::{algorithm_curve, algorithm_family, algorithm_name, Algorithm, Curve, KeyFamily, KeyType};
use super::der;
use super::signer::Signer;

/// Why key material cannot be used. Messages never include the material itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key is empty")]
    Empty,
    #[error("the key is not valid {encoding}: {detail}")]
    BadEncoding { encoding: &'static str, detail: String },
    #[error("no PEM block found; expected text starting with \"-----BEGIN PRIVATE KEY-----\" (for base64 DER use key_type = \"{der_type}\")")]
    NotPem { der_type: &'static str },
    #[error("the key looks like PEM text, but key_type {key_type} expects base64 DER; use key_type = \"{pem_type}\"")]
    PemGivenForDer { key_type: &'static str, pem_type: &'static str },
    #[error("the PEM file holds an encrypted private key, which cannot be used unattended; decrypt it with `openssl pkcs8 -in KEY -out PLAIN.pem` (it will ask for the passphrase)")]
    Encrypted,
    #[error("the PEM file holds only a {0}; the sidecar needs the private key to sign")]
    NotPrivate(&'static str),
    #[error("this is {found}, but key_type {key_type} needs {expected}")]
    WrongFamily { found: &'static str, key_type: &'static str, expected: &'static str },
    #[error("{algorithm} needs a {expected} key, but this is a {found} key (use {suggest})")]
    WrongCurve { algorithm: &'static str, expected: &'static str, found: &'static str, suggest: &'static str },
    #[error("the RSA key has {bits} bits; at least 2048 are required")]
    RsaTooSmall { bits: usize },
    #[error("the key could not be parsed as {expected} ({reason})")]
    Malformed { expected: &'static str, reason: String },
    /// A JWK that cannot sign, with the reason (never a key value).
    #[error("the JWK {0}")]
    Jwk(String),
    /// A key that does not fit how it is used, with the reason (never a key value).
    #[error("{0}")]
    Unusable(String),
}

/// The fields of a Google service-account key file the sidecar uses.
#[derive(serde::Deserialize)]
pub struct ServiceAccount {
    private_key: String,
    /// The default `kid`.
    pub private_key_id: Option<String>,
    /// The default `iss` and `sub`.
    pub client_email: Option<String>,
}

impl ServiceAccount {
    /// Reads a downloaded service-account JSON file. Errors never quote the file.
    pub fn parse(material: &[u8]) -> Result<ServiceAccount, KeyError> {
        serde_json::from_slice(material).map_err(|e| KeyError::Malformed {
            expected: "a Google service-account JSON key file (with a \"private_key\" string)",
            reason: format!("{} at line {} column {}", classify(&e), e.line(), e.column()),
        })
    }
}

fn classify(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "a field is missing or of the wrong type",
        serde_json::error::Category::Eof => "the JSON ends early",
    }
}

/// Parses key material of the given type for the given algorithm into a ready signing key.
pub fn load_signing_key(alg: Algorithm, key_type: KeyType, material: &[u8]) -> Result<Signer, KeyError> {
    if material.iter().all(u8::is_ascii_whitespace) {
        return Err(KeyError::Empty);
    }
    match key_type {
        KeyType::Secret => secret(alg, material.to_vec()),
        KeyType::Base64Secret => secret(alg, decode_base64(material, STANDARD_LENIENT, "base64")?),
        KeyType::UrlSafeBase64Secret => secret(alg, decode_base64(material, URL_SAFE_LENIENT, "URL-safe base64")?),
        KeyType::Jwk => super::jwk::signing_key(alg, material),
        KeyType::GoogleServiceAccountJson => {
            let account = ServiceAccount::parse(material)?;
            let der = pem_private_key(account.private_key.as_bytes(), KeyFamily::Rsa)?;
            from_der(alg, KeyType::RsaPem, &der)
        }
        KeyType::RsaPem | KeyType::EcPem | KeyType::EdPem => {
            let der = pem_private_key(material, algorithm_family(alg))?;
            from_der(alg, key_type, &der)
        }
        KeyType::RsaDer | KeyType::EcDer | KeyType::EdDer => {
            if contains(material, b"-----BEGIN") {
                let pem_type = match algorithm_family(alg) {
                    KeyFamily::Rsa => "RsaPem",
                    KeyFamily::Ec => "EcPem",
                    _ => "EdPem",
                };
                return Err(KeyError::PemGivenForDer { key_type: key_type.name(), pem_type });
            }
            let der = decode_base64(material, STANDARD_LENIENT, "base64 DER")?;
            from_der(alg, key_type, &der)
        }
    }
}

const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);

fn secret(alg: Algorithm, bytes: Vec<u8>) -> Result<Signer, KeyError> {
    if bytes.is_empty() {
        return Err(KeyError::Empty);
    }
    Ok(Signer::hmac(alg, &bytes))
}

fn decode_base64(material: &[u8], engine: GeneralPurpose, encoding: &'static str) -> Result<Vec<u8>, KeyError> {
    let compact: Vec<u8> = material.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    engine.decode(&compact).map_err(|e| KeyError::BadEncoding { encoding, detail: e.to_string() })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// Finds the private key in PEM text, explaining what else was found when there is none.
fn pem_private_key(material: &[u8], family: KeyFamily) -> Result<Vec<u8>, KeyError> {
    if contains(material, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(KeyError::Encrypted);
    }
    match PrivateKeyDer::from_pem_slice(material) {
        Ok(key) => Ok(key.secret_der().to_vec()),
        Err(_) if contains(material, b"PUBLIC KEY-----") => Err(KeyError::NotPrivate("public key")),
        Err(_) if contains(material, b"-----BEGIN CERTIFICATE-----") => Err(KeyError::NotPrivate("certificate")),
        Err(_) if !contains(material, b"-----BEGIN") => {
            let der_type = match family {
                KeyFamily::Rsa => "RsaDer",
                KeyFamily::Ec => "EcDer",
                _ => "EdDer",
            };
            Err(KeyError::NotPem { der_type })
        }
        Err(e) => Err(KeyError::Malformed { expected: "a PEM private key", reason: e.to_string() }),
    }
}

/// Which family a DER private key belongs to, if any: used to explain a mismatch.
fn sniff_family(der: &[u8]) -> Option<&'static str> {
    if RsaKeyPair::from_der(der).is_ok() || RsaKeyPair::from_pkcs8(der).is_ok() {
        Some("an RSA key")
    } else if ec_curve(der).is_some() {
        Some("an EC key")
    } else if Ed25519KeyPair::from_pkcs8(der).is_ok() {
        Some("an Ed25519 key")
    } else {
        None
    }
}

fn from_der(alg: Algorithm, key_type: KeyType, der: &[u8]) -> Result<Signer, KeyError> {
    let mismatch = |expected: &'static str| match sniff_family(der) {
        Some(found) => KeyError::WrongFamily { found, key_type: key_type.name(), expected },
        None => KeyError::Malformed { expected, reason: "not a private key this program can read".into() },
    };
    match algorithm_family(alg) {
        KeyFamily::Rsa => rsa(alg, der).ok_or_else(|| mismatch("an RSA private key (PKCS#1 or PKCS#8)"))?,
        KeyFamily::Ec => ec(alg, der).ok_or_else(|| mismatch("an EC private key (SEC1 or PKCS#8)"))?,
        KeyFamily::Ed => ed(der).ok_or_else(|| mismatch("an Ed25519 private key (PKCS#8)"))?,
        KeyFamily::Hmac => Err(KeyError::Malformed { expected: "a secret", reason: "not DER".into() }),
    }
}

/// RSA in PKCS#1 or PKCS#8 (also labelled rsassaPss), at least 2048 bits.
fn rsa(alg: Algorithm, der: &[u8]) -> Option<Result<Signer, KeyError>> {
    // aws-lc-rs refuses keys outside 2048..=8192 bits without saying why, so read the
    // modulus size from the DER first to give the real reason.
    if let Some(bits) = rsa_modulus_bits(der) {
        if bits < 2048 {
            return Some(Err(KeyError::RsaTooSmall { bits }));
        }
    }
    // A PKCS#8 key labelled rsassaPss (what `openssl genpkey -algorithm RSA-PSS` writes, as in
    // NetSuite's recipe) holds an ordinary RSA key; its PKCS#1 body signs like any other.
    let der = pss_pkcs1_body(der).unwrap_or(der);
    let pair = RsaKeyPair::from_der(der).or_else(|_| RsaKeyPair::from_pkcs8(der)).ok()?;
    Some(rsa_pair(alg, pair))
}

/// Checks an RSA key's size and makes it a signer.
pub(super) fn rsa_pair(alg: Algorithm, pair: RsaKeyPair) -> Result<Signer, KeyError> {
    let bits = pair.public_modulus_len() * 8;
    if bits < 2048 {
        return Err(KeyError::RsaTooSmall { bits });
    }
    Ok(Signer::rsa(alg, pair))
}

/// The fixed-signature ECDSA algorithm of a curve.
pub fn ecdsa_algorithm(curve: Curve) -> &'static EcdsaSigningAlgorithm {
    match curve {
        Curve::P256 => &ECDSA_P256_SHA256_FIXED_SIGNING,
        Curve::P384 => &ECDSA_P384_SHA384_FIXED_SIGNING,
        Curve::P521 => &ECDSA_P521_SHA512_FIXED_SIGNING,
    }
}

/// The curve of an EC private key (SEC1 or PKCS#8), if it is one on a supported curve.
fn ec_curve(der: &[u8]) -> Option<Curve> {
    [Curve::P256, Curve::P384, Curve::P521]
        .into_iter()
        .find(|c| EcdsaKeyPair::from_private_key_der(ecdsa_algorithm(*c), der).is_ok())
}

fn ec(alg: Algorithm, der: &[u8]) -> Option<Result<Signer, KeyError>> {
    let wanted = algorithm_curve(alg)?;
    match EcdsaKeyPair::from_private_key_der(ecdsa_algorithm(wanted), der) {
        Ok(pair) => Some(Ok(Signer::ecdsa(alg, pair))),
        Err(_) => ec_curve(der).map(|found| Err(wrong_curve(alg, wanted, found))),
    }
}

/// The error for an EC key on another curve than `alg` signs on.
pub(super) fn wrong_curve(alg: Algorithm, wanted: Curve, found: Curve) -> KeyError {
    KeyError::WrongCurve {
        algorithm: algorithm_name(alg),
        expected: wanted.name(),
        found: found.name(),
        suggest: algorithm_name(found.algorithm()),
    }
}

fn ed(der: &[u8]) -> Option<Result<Signer, KeyError>> {
    let pair = Ed25519KeyPair::from_pkcs8(der).ok()?;
    Some(Ok(Signer::ed25519(pair)))
}

/// The PKCS#1 body of a PKCS#8 key whose algorithm is rsassaPss (OID 1.2.840.113549.1.1.10).
/// Its parameters, if any, restrict the hash; the configured PS* algorithm decides instead.
fn pss_pkcs1_body(der: &[u8]) -> Option<&[u8]> {
    const RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
    let (0x30, body, _) = der::element(der)? else { return None };
    let (0x02, _version, rest) = der::element(body)? else { return None };
    let (0x30, algorithm, rest) = der::element(rest)? else { return None };
    let (0x06, oid, _) = der::element(algorithm)? else { return None };
    if oid != RSASSA_PSS {
        return None;
    }
    let (0x04, pkcs1, _) = der::element(rest)? else { return None };
    Some(pkcs1)
}

/// The modulus size of an RSA private key in PKCS#1 or PKCS#8 DER, if it is one.
fn rsa_modulus_bits(der: &[u8]) -> Option<usize> {
    const SEQUENCE: u8 = 0x30;
    const INTEGER: u8 = 0x02;
    const OCTET_STRING: u8 = 0x04;
    let (tag, body, _) = der::element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, _version, rest) = der::element(body)?;
    if tag != INTEGER {
        return None;
    }
    let (tag, second, rest) = der::element(rest)?;
    let modulus = match tag {
        // PKCS#1: version, modulus, ...
        INTEGER => second,
        // PKCS#8: version, AlgorithmIdentifier, OCTET STRING { PKCS#1 }
        SEQUENCE => {
            let (tag, inner, _) = der::element(rest)?;
            if tag != OCTET_STRING {
                return None;
            }
            return rsa_modulus_bits(inner);
        }
        _ => return None,
    };
    let significant = modulus.iter().skip_while(|b| **b == 0).count();
    Some(significant * 8)
}

/// PEM text for DER bytes, 64 columns per line as RFC 7468 asks.
pub fn pem_wrap(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
