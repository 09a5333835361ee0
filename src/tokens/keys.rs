//! Loading signing keys in the forms users actually have, and saying exactly what is wrong
//! with the ones that cannot be used.
//!
//! jsonwebtoken is strict about forms (EC keys must be PKCS#8, RSA DER must be PKCS#1, Ed25519
//! must be PKCS#8 v1 for its JWK export) and only finds a bad key when it first signs. Here
//! every key is parsed with aws-lc-rs up front, converted to the form jsonwebtoken wants, and
//! anything unusable is rejected with a message naming the fix.

use aws_lc_rs::signature::{
    EcdsaKeyPair, EcdsaSigningAlgorithm, Ed25519KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    ECDSA_P384_SHA384_FIXED_SIGNING,
};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, Engine};
use jsonwebtoken::{Algorithm, EncodingKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use super::algorithm::{KeyFamily, KeyType};

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

/// Parses key material of the given type for the given algorithm into a signing key.
pub fn load_encoding_key(alg: Algorithm, key_type: KeyType, material: &[u8]) -> Result<EncodingKey, KeyError> {
    if material.iter().all(u8::is_ascii_whitespace) {
        return Err(KeyError::Empty);
    }
    match key_type {
        KeyType::Secret => Ok(EncodingKey::from_secret(material)),
        KeyType::Base64Secret => secret(decode_base64(material, STANDARD_LENIENT, "base64")?),
        KeyType::UrlSafeBase64Secret => secret(decode_base64(material, URL_SAFE_LENIENT, "URL-safe base64")?),
        KeyType::GoogleServiceAccountJson => {
            let account = ServiceAccount::parse(material)?;
            let der = pem_private_key(account.private_key.as_bytes(), KeyType::RsaPem)?;
            from_der(alg, KeyType::RsaPem, &der)
        }
        KeyType::RsaPem | KeyType::EcPem | KeyType::EdPem => {
            let der = pem_private_key(material, key_type)?;
            from_der(alg, key_type, &der)
        }
        KeyType::RsaDer | KeyType::EcDer | KeyType::EdDer => {
            if contains(material, b"-----BEGIN") {
                let pem_type = match key_type.family() {
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

fn secret(bytes: Vec<u8>) -> Result<EncodingKey, KeyError> {
    if bytes.is_empty() {
        return Err(KeyError::Empty);
    }
    Ok(EncodingKey::from_secret(&bytes))
}

fn decode_base64(material: &[u8], engine: GeneralPurpose, encoding: &'static str) -> Result<Vec<u8>, KeyError> {
    let compact: Vec<u8> = material.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    engine.decode(&compact).map_err(|e| KeyError::BadEncoding { encoding, detail: e.to_string() })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// Finds the private key in PEM text, explaining what else was found when there is none.
fn pem_private_key(material: &[u8], key_type: KeyType) -> Result<Vec<u8>, KeyError> {
    if contains(material, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(KeyError::Encrypted);
    }
    match PrivateKeyDer::from_pem_slice(material) {
        Ok(key) => Ok(key.secret_der().to_vec()),
        Err(_) if contains(material, b"PUBLIC KEY-----") => Err(KeyError::NotPrivate("public key")),
        Err(_) if contains(material, b"-----BEGIN CERTIFICATE-----") => Err(KeyError::NotPrivate("certificate")),
        Err(_) if !contains(material, b"-----BEGIN") => {
            let der_type = match key_type.family() {
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
    } else if EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, der).is_ok()
        || EcdsaKeyPair::from_private_key_der(&ECDSA_P384_SHA384_FIXED_SIGNING, der).is_ok()
    {
        Some("an EC key")
    } else if Ed25519KeyPair::from_pkcs8(der).is_ok() {
        Some("an Ed25519 key")
    } else {
        None
    }
}

fn from_der(alg: Algorithm, key_type: KeyType, der: &[u8]) -> Result<EncodingKey, KeyError> {
    let mismatch = |expected: &'static str| match sniff_family(der) {
        Some(found) => KeyError::WrongFamily { found, key_type: key_type.name(), expected },
        None => KeyError::Malformed { expected, reason: "not a private key this program can read".into() },
    };
    match key_type.family() {
        KeyFamily::Rsa => rsa(der).ok_or_else(|| mismatch("an RSA private key (PKCS#1 or PKCS#8)"))?,
        KeyFamily::Ec => ec(alg, der).ok_or_else(|| mismatch("an EC private key (SEC1 or PKCS#8)"))?,
        KeyFamily::Ed => ed(der).ok_or_else(|| mismatch("an Ed25519 private key (PKCS#8)"))?,
        KeyFamily::Hmac => Err(KeyError::Malformed { expected: "a secret", reason: "not DER".into() }),
    }
}

/// RSA: jsonwebtoken wants PKCS#1 DER, or PEM it converts itself; PKCS#8 DER is re-wrapped as
/// PEM so jsonwebtoken's own converter extracts the PKCS#1 part.
fn rsa(der: &[u8]) -> Option<Result<EncodingKey, KeyError>> {
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
    let (pair, pkcs1) = match RsaKeyPair::from_der(der) {
        Ok(pair) => (pair, true),
        Err(_) => (RsaKeyPair::from_pkcs8(der).ok()?, false),
    };
    let bits = pair.public_modulus_len() * 8;
    if bits < 2048 {
        return Some(Err(KeyError::RsaTooSmall { bits }));
    }
    if pkcs1 {
        return Some(Ok(EncodingKey::from_rsa_der(der)));
    }
    let pem = pem_wrap("PRIVATE KEY", der);
    Some(
        EncodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|e| KeyError::Malformed { expected: "an RSA private key", reason: e.to_string() }),
    )
}

fn ec(alg: Algorithm, der: &[u8]) -> Option<Result<EncodingKey, KeyError>> {
    const P256: &EcdsaSigningAlgorithm = &ECDSA_P256_SHA256_FIXED_SIGNING;
    const P384: &EcdsaSigningAlgorithm = &ECDSA_P384_SHA384_FIXED_SIGNING;
    let (wanted, other, expected, found, suggest) = if alg == Algorithm::ES384 {
        (P384, P256, "P-384", "P-256", "ES256")
    } else {
        (P256, P384, "P-256", "P-384", "ES384")
    };
    match EcdsaKeyPair::from_private_key_der(wanted, der) {
        Ok(pair) => Some(
            pair.to_pkcs8v1()
                .map(|doc| EncodingKey::from_ec_der(doc.as_ref()))
                .map_err(|_| KeyError::Malformed { expected: "an EC private key", reason: "cannot re-encode".into() }),
        ),
        Err(_) if EcdsaKeyPair::from_private_key_der(other, der).is_ok() => {
            let algorithm = super::algorithm::algorithm_name(alg);
            Some(Err(KeyError::WrongCurve { algorithm, expected, found, suggest }))
        }
        Err(_) => None,
    }
}

fn ed(der: &[u8]) -> Option<Result<EncodingKey, KeyError>> {
    let pair = Ed25519KeyPair::from_pkcs8(der).ok()?;
    Some(
        pair.to_pkcs8v1()
            .map(|doc| EncodingKey::from_ed_der(doc.as_ref()))
            .map_err(|_| KeyError::Malformed { expected: "an Ed25519 private key", reason: "cannot re-encode".into() }),
    )
}

/// Reads one DER element: (tag, contents, rest).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)), &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The PKCS#1 body of a PKCS#8 key whose algorithm is rsassaPss (OID 1.2.840.113549.1.1.10).
/// Its parameters, if any, restrict the hash; the configured PS* algorithm decides instead.
fn pss_pkcs1_body(der: &[u8]) -> Option<&[u8]> {
    const RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
    let (0x30, body, _) = der_element(der)? else { return None };
    let (0x02, _version, rest) = der_element(body)? else { return None };
    let (0x30, algorithm, rest) = der_element(rest)? else { return None };
    let (0x06, oid, _) = der_element(algorithm)? else { return None };
    if oid != RSASSA_PSS {
        return None;
    }
    let (0x04, pkcs1, _) = der_element(rest)? else { return None };
    Some(pkcs1)
}

/// The modulus size of an RSA private key in PKCS#1 or PKCS#8 DER, if it is one.
fn rsa_modulus_bits(der: &[u8]) -> Option<usize> {
    const SEQUENCE: u8 = 0x30;
    const INTEGER: u8 = 0x02;
    const OCTET_STRING: u8 = 0x04;
    let (tag, body, _) = der_element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, _version, rest) = der_element(body)?;
    if tag != INTEGER {
        return None;
    }
    let (tag, second, rest) = der_element(rest)?;
    let modulus = match tag {
        // PKCS#1: version, modulus, ...
        INTEGER => second,
        // PKCS#8: version, AlgorithmIdentifier, OCTET STRING { PKCS#1 }
        SEQUENCE => {
            let (tag, inner, _) = der_element(rest)?;
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
