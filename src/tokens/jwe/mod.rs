//! Encrypted tokens: compact JWE (RFC 7516) around the signed JWT, for a recipient that wants
//! its tokens confidential (a nested JWT, RFC 7519 §5.2, with `cty: "JWT"`).
//!
//! Built on aws-lc-rs primitives: AES key wrap, RSA-OAEP, ECDH (P-256, P-384, P-521, X25519)
//! with the Concat KDF, AES-GCM, AES-CBC and HMAC. Every token gets a fresh CEK, IV and (for
//! ECDH-ES) ephemeral key from the system generator; GCM's 96-bit IVs are random, which is
//! safe far beyond the number of tokens a key ever encrypts.

mod aes_kw;
pub mod config;
pub mod content;
pub mod key_management;
pub mod recipient;
#[cfg(test)]
mod tests;

use serde_json::Value;

use super::jwt::json_object;
use super::{base64url, MintError};
use content::ContentEncryption;
use key_management::{manage, Fresh, KeyAlgorithm, RecipientKey, SystemFresh};

/// Encrypts signed tokens for one recipient. Its `Debug` never shows a key.
#[derive(Debug)]
pub struct Encryptor {
    pub alg: KeyAlgorithm,
    pub enc: ContentEncryption,
    pub kid: Option<String>,
    recipient: RecipientKey,
}

impl Encryptor {
    pub fn new(alg: KeyAlgorithm, enc: ContentEncryption, kid: Option<String>, recipient: RecipientKey) -> Encryptor {
        Encryptor { alg, enc, kid, recipient }
    }

    /// The compact JWE of a signed JWT.
    pub fn encrypt(&self, jws: &[u8]) -> Result<String, MintError> {
        self.encrypt_with(jws, &mut SystemFresh)
    }

    fn encrypt_with(&self, jws: &[u8], fresh: &mut dyn Fresh) -> Result<String, MintError> {
        let failed = |e: &str| MintError::Sign(format!("encryption failed: {e}"));
        let managed = manage(self.alg, &self.recipient, self.enc, fresh).map_err(failed)?;
        let mut header: Vec<(&str, Value)> =
            vec![("alg", self.alg.name().into()), ("enc", self.enc.name().into()), ("cty", "JWT".into())];
        if let Some(kid) = &self.kid {
            header.push(("kid", kid.clone().into()));
        }
        if let Some(epk) = managed.epk {
            header.push(("epk", Value::Object(epk)));
        }
        let iv = fresh.bytes(self.enc.iv_len()).map_err(failed)?;
        seal_compact(&json_object(&header), self.enc, &managed.cek, &managed.encrypted_key, &iv, jws).map_err(failed)
    }
}

/// The compact serialization: header, encrypted key, IV, ciphertext, tag, with the encoded
/// header as the additional authenticated data (RFC 7516 §5.1 steps 14-19).
fn seal_compact(
    header_json: &str,
    enc: ContentEncryption,
    cek: &[u8],
    encrypted_key: &[u8],
    iv: &[u8],
    plaintext: &[u8],
) -> Result<String, &'static str> {
    let header = base64url(header_json.as_bytes());
    let sealed = enc.seal(cek, iv, header.as_bytes(), plaintext)?;
    Ok([header, base64url(encrypted_key), base64url(iv), base64url(&sealed.ciphertext), base64url(&sealed.tag)]
        .join("."))
}
