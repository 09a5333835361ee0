//! Key management (RFC 7518 §4): how the content encryption key reaches the recipient.
//!
//! `A128KW`/`A192KW`/`A256KW` wrap a fresh CEK with a shared key, `dir` uses the shared key as
//! the CEK, `RSA-OAEP`/`RSA-OAEP-256` encrypt a fresh CEK to the recipient's RSA key, and
//! `ECDH-ES` agrees a key with the recipient's EC or X25519 key through a fresh ephemeral key
//! and the Concat KDF (§4.6), using it as the CEK or, with `+A128KW`/`+A192KW`/`+A256KW`, to
//! wrap a fresh CEK.

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{OaepAlgorithm, OaepPublicEncryptingKey, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256};
use serde_json::{Map, Value};

use super::aes_kw;
use super::content::ContentEncryption;
use crate::tokens::base64url;

/// A key management algorithm (`alg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    A128Kw,
    A192Kw,
    A256Kw,
    Dir,
    RsaOaep,
    RsaOaep256,
    EcdhEs,
    EcdhEsA128Kw,
    EcdhEsA192Kw,
    EcdhEsA256Kw,
}

/// Every `alg` accepted, in the order shown to users.
pub const KEY_ALGORITHMS: [(&str, KeyAlgorithm); 10] = [
    ("A128KW", KeyAlgorithm::A128Kw),
    ("A192KW", KeyAlgorithm::A192Kw),
    ("A256KW", KeyAlgorithm::A256Kw),
    ("dir", KeyAlgorithm::Dir),
    ("RSA-OAEP", KeyAlgorithm::RsaOaep),
    ("RSA-OAEP-256", KeyAlgorithm::RsaOaep256),
    ("ECDH-ES", KeyAlgorithm::EcdhEs),
    ("ECDH-ES+A128KW", KeyAlgorithm::EcdhEsA128Kw),
    ("ECDH-ES+A192KW", KeyAlgorithm::EcdhEsA192Kw),
    ("ECDH-ES+A256KW", KeyAlgorithm::EcdhEsA256Kw),
];

/// The kind of key an `alg` needs from the recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientKind {
    /// A shared secret of this many bytes (`None`: as long as the `enc` key).
    Shared(Option<usize>),
    Rsa,
    Ecdh,
}

impl KeyAlgorithm {
    pub fn parse(name: &str) -> Option<KeyAlgorithm> {
        KEY_ALGORITHMS.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
    }

    pub fn name(self) -> &'static str {
        KEY_ALGORITHMS.iter().find(|(_, a)| *a == self).map_or("", |(n, _)| n)
    }

    pub fn recipient(self) -> RecipientKind {
        match self {
            KeyAlgorithm::A128Kw => RecipientKind::Shared(Some(16)),
            KeyAlgorithm::A192Kw => RecipientKind::Shared(Some(24)),
            KeyAlgorithm::A256Kw => RecipientKind::Shared(Some(32)),
            KeyAlgorithm::Dir => RecipientKind::Shared(None),
            KeyAlgorithm::RsaOaep | KeyAlgorithm::RsaOaep256 => RecipientKind::Rsa,
            KeyAlgorithm::EcdhEs
            | KeyAlgorithm::EcdhEsA128Kw
            | KeyAlgorithm::EcdhEsA192Kw
            | KeyAlgorithm::EcdhEsA256Kw => RecipientKind::Ecdh,
        }
    }

    /// For ECDH-ES with key wrapping: the wrapping key's length.
    fn ecdh_wrap_len(self) -> Option<usize> {
        match self {
            KeyAlgorithm::EcdhEsA128Kw => Some(16),
            KeyAlgorithm::EcdhEsA192Kw => Some(24),
            KeyAlgorithm::EcdhEsA256Kw => Some(32),
            _ => None,
        }
    }
}

/// The curves ECDH-ES agrees on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcdhCurve {
    P256,
    P384,
    P521,
    X25519,
}

impl EcdhCurve {
    pub fn name(self) -> &'static str {
        match self {
            EcdhCurve::P256 => "P-256",
            EcdhCurve::P384 => "P-384",
            EcdhCurve::P521 => "P-521",
            EcdhCurve::X25519 => "X25519",
        }
    }

    pub fn from_name(name: &str) -> Option<EcdhCurve> {
        [EcdhCurve::P256, EcdhCurve::P384, EcdhCurve::P521, EcdhCurve::X25519].into_iter().find(|c| c.name() == name)
    }

    pub fn agreement(self) -> &'static agreement::Algorithm {
        match self {
            EcdhCurve::P256 => &agreement::ECDH_P256,
            EcdhCurve::P384 => &agreement::ECDH_P384,
            EcdhCurve::P521 => &agreement::ECDH_P521,
            EcdhCurve::X25519 => &agreement::X25519,
        }
    }
}

/// The recipient's key, checked and ready.
pub enum RecipientKey {
    /// A shared secret (key wrap key, or the CEK itself for `dir`).
    Shared(Vec<u8>),
    Rsa(OaepPublicEncryptingKey),
    /// The recipient's public point: `04 || x || y` for the P curves, 32 bytes for X25519.
    Ecdh {
        curve: EcdhCurve,
        public: Vec<u8>,
    },
}

impl std::fmt::Debug for RecipientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecipientKey::Shared(_) => f.write_str("Shared([redacted])"),
            RecipientKey::Rsa(k) => write!(f, "Rsa({} bits)", k.key_size_bits()),
            RecipientKey::Ecdh { curve, .. } => write!(f, "Ecdh({})", curve.name()),
        }
    }
}

/// What key management produced for one token.
pub struct Managed {
    pub cek: Vec<u8>,
    pub encrypted_key: Vec<u8>,
    /// The ephemeral public key, for the `epk` header member (ECDH-ES).
    pub epk: Option<Map<String, Value>>,
}

/// Randomness a token needs, separate so tests can supply the RFC vectors' values.
pub trait Fresh {
    fn bytes(&mut self, len: usize) -> Result<Vec<u8>, &'static str>;
    fn ephemeral(&mut self, curve: EcdhCurve) -> Result<PrivateKey, &'static str>;
}

/// Fresh random values from the system's generator: a new CEK, IV and ephemeral key for
/// every token.
pub struct SystemFresh;

impl Fresh for SystemFresh {
    fn bytes(&mut self, len: usize) -> Result<Vec<u8>, &'static str> {
        let mut out = vec![0u8; len];
        SystemRandom::new().fill(&mut out).map_err(|_| "the system random generator failed")?;
        Ok(out)
    }

    fn ephemeral(&mut self, curve: EcdhCurve) -> Result<PrivateKey, &'static str> {
        PrivateKey::generate(curve.agreement()).map_err(|_| "cannot generate an ephemeral key")
    }
}

/// Produces the CEK for `enc` and what the recipient needs to recover it.
pub fn manage(
    alg: KeyAlgorithm,
    recipient: &RecipientKey,
    enc: ContentEncryption,
    fresh: &mut dyn Fresh,
) -> Result<Managed, &'static str> {
    match (alg.recipient(), recipient) {
        (RecipientKind::Shared(None), RecipientKey::Shared(key)) => {
            Ok(Managed { cek: key.clone(), encrypted_key: Vec::new(), epk: None })
        }
        (RecipientKind::Shared(Some(_)), RecipientKey::Shared(kek)) => {
            let cek = fresh.bytes(enc.key_len())?;
            let encrypted_key = aes_kw::wrap(kek, &cek)?;
            Ok(Managed { cek, encrypted_key, epk: None })
        }
        (RecipientKind::Rsa, RecipientKey::Rsa(key)) => {
            let algorithm: &'static OaepAlgorithm =
                if alg == KeyAlgorithm::RsaOaep { &OAEP_SHA1_MGF1SHA1 } else { &OAEP_SHA256_MGF1SHA256 };
            let cek = fresh.bytes(enc.key_len())?;
            let mut out = vec![0u8; key.ciphertext_size()];
            let encrypted_key =
                key.encrypt(algorithm, &cek, &mut out, None).map_err(|_| "RSA-OAEP encryption")?.to_vec();
            Ok(Managed { cek, encrypted_key, epk: None })
        }
        (RecipientKind::Ecdh, RecipientKey::Ecdh { curve, public }) => {
            let ephemeral = fresh.ephemeral(*curve)?;
            let epk = ephemeral_jwk(*curve, &ephemeral)?;
            let (algorithm_id, len) = match alg.ecdh_wrap_len() {
                None => (enc.name(), enc.key_len()),
                Some(kek_len) => (alg.name(), kek_len),
            };
            let z = agreement::agree(
                &ephemeral,
                UnparsedPublicKey::new(curve.agreement(), public),
                "ECDH agreement with the recipient's key failed",
                |z| Ok(z.to_vec()),
            )?;
            let derived = concat_kdf(&z, algorithm_id.as_bytes(), b"", b"", len);
            match alg.ecdh_wrap_len() {
                None => Ok(Managed { cek: derived, encrypted_key: Vec::new(), epk: Some(epk) }),
                Some(_) => {
                    let cek = fresh.bytes(enc.key_len())?;
                    let encrypted_key = aes_kw::wrap(&derived, &cek)?;
                    Ok(Managed { cek, encrypted_key, epk: Some(epk) })
                }
            }
        }
        _ => Err("the recipient key does not fit the key management algorithm"),
    }
}

/// The ephemeral public key as the `epk` JWK (public members only).
fn ephemeral_jwk(curve: EcdhCurve, key: &PrivateKey) -> Result<Map<String, Value>, &'static str> {
    let public = key.compute_public_key().map_err(|_| "cannot compute the ephemeral public key")?;
    let bytes = public.as_ref();
    let mut jwk = Map::new();
    if curve == EcdhCurve::X25519 {
        jwk.insert("kty".into(), "OKP".into());
        jwk.insert("crv".into(), "X25519".into());
        jwk.insert("x".into(), base64url(bytes).into());
    } else {
        let n = (bytes.len().saturating_sub(1)) / 2;
        if bytes.first() != Some(&4) || bytes.len() != 1 + 2 * n {
            return Err("unexpected ephemeral public key encoding");
        }
        jwk.insert("kty".into(), "EC".into());
        jwk.insert("crv".into(), curve.name().into());
        jwk.insert("x".into(), base64url(&bytes[1..=n]).into());
        jwk.insert("y".into(), base64url(&bytes[1 + n..]).into());
    }
    Ok(jwk)
}

/// The Concat KDF of NIST SP 800-56A §5.8.1 with SHA-256, as RFC 7518 §4.6.2 uses it:
/// OtherInfo is AlgorithmID, PartyUInfo and PartyVInfo (each length-prefixed) and
/// SuppPubInfo (the key length in bits).
pub fn concat_kdf(z: &[u8], algorithm_id: &[u8], apu: &[u8], apv: &[u8], len: usize) -> Vec<u8> {
    let prefixed = |data: &[u8]| {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(data);
        out
    };
    let mut other_info = prefixed(algorithm_id);
    other_info.extend(prefixed(apu));
    other_info.extend(prefixed(apv));
    other_info.extend_from_slice(&((len * 8) as u32).to_be_bytes());
    let mut out = Vec::with_capacity(len + 32);
    let mut counter: u32 = 1;
    while out.len() < len {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&counter.to_be_bytes());
        ctx.update(z);
        ctx.update(&other_info);
        out.extend_from_slice(ctx.finish().as_ref());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// An ephemeral (or test) private key from its raw scalar, for the RFC vectors.
#[cfg(test)]
pub fn private_key(curve: EcdhCurve, scalar: &[u8]) -> PrivateKey {
    PrivateKey::from_private_key(curve.agreement(), scalar).expect("valid test key")
}
