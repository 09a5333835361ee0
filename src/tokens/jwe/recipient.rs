//! The recipient's key from `[tokens.NAME.encrypt]`: a shared secret, or the recipient's
//! *public* key as PEM (SubjectPublicKeyInfo or a certificate) or as a JWK.
//!
//! The sidecar never needs the recipient's private key, so one given here is refused: it
//! would mean a secret of the recipient's sits in the sidecar's config.

use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, Engine};
use rustls_pki_types::pem::{PemObject, SectionKind};

use super::content::ContentEncryption;
use super::key_management::{EcdhCurve, KeyAlgorithm, RecipientKey, RecipientKind};
use crate::tokens::der;
use crate::tokens::jwk::Jwk;
use crate::tokens::keys::KeyError;

/// How the recipient key material is written (`[encrypt] key_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientKeyType {
    /// A public key or certificate in PEM.
    PublicPem,
    /// A JWK: public (`RSA`, `EC`, `OKP` X25519) or symmetric (`oct`).
    Jwk,
    /// A shared secret's bytes as written.
    Secret,
    Base64Secret,
    UrlSafeBase64Secret,
}

pub const RECIPIENT_KEY_TYPES: [(&str, RecipientKeyType); 5] = [
    ("PublicPem", RecipientKeyType::PublicPem),
    ("Jwk", RecipientKeyType::Jwk),
    ("Secret", RecipientKeyType::Secret),
    ("Base64Secret", RecipientKeyType::Base64Secret),
    ("UrlSafeBase64Secret", RecipientKeyType::UrlSafeBase64Secret),
];

impl RecipientKeyType {
    pub fn parse(name: &str) -> Option<RecipientKeyType> {
        RECIPIENT_KEY_TYPES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }

    /// What the material looks like when no `key_type` is given: a JWK (`{`) or PEM.
    pub fn detect(material: &[u8]) -> Option<RecipientKeyType> {
        let text = material.trim_ascii_start();
        if text.starts_with(b"{") {
            Some(RecipientKeyType::Jwk)
        } else if text.starts_with(b"-----BEGIN") {
            Some(RecipientKeyType::PublicPem)
        } else {
            None
        }
    }
}

const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);

/// Reads and checks the recipient key for `alg` (and `enc`, whose key length `dir` needs).
pub fn recipient_key(
    alg: KeyAlgorithm,
    enc: ContentEncryption,
    key_type: RecipientKeyType,
    material: &[u8],
) -> Result<RecipientKey, KeyError> {
    let kind = alg.recipient();
    let shared_len = match kind {
        RecipientKind::Shared(len) => Some(len.unwrap_or(enc.key_len())),
        _ => None,
    };
    let secret = |bytes: Vec<u8>| -> Result<RecipientKey, KeyError> {
        let Some(len) = shared_len else {
            return Err(KeyError::Unusable(format!(
                "{} needs the recipient's public key (PEM or JWK), not a shared secret",
                alg.name()
            )));
        };
        if bytes.len() != len {
            let what = if alg == KeyAlgorithm::Dir { format!("dir with {}", enc.name()) } else { alg.name().into() };
            return Err(KeyError::Malformed {
                expected: "a shared key of the right length",
                reason: format!("{what} needs exactly {len} bytes ({} bits), this key has {}", len * 8, bytes.len()),
            });
        }
        Ok(RecipientKey::Shared(bytes))
    };
    let decode = |engine: GeneralPurpose, name: &'static str| {
        let compact: Vec<u8> = material.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
        engine.decode(compact).map_err(|e| KeyError::BadEncoding { encoding: name, detail: e.to_string() })
    };
    match key_type {
        RecipientKeyType::Secret => secret(material.to_vec()),
        RecipientKeyType::Base64Secret => {
            secret(decode(GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT), "base64")?)
        }
        RecipientKeyType::UrlSafeBase64Secret => {
            secret(decode(GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT), "URL-safe base64")?)
        }
        RecipientKeyType::Jwk => {
            let jwk = Jwk::parse(material)?;
            if let Ok(stated) = jwk.text("alg") {
                if stated != alg.name() {
                    return Err(KeyError::Jwk(format!(
                        "is marked \"alg\": {stated:?}, but is used for {}",
                        alg.name()
                    )));
                }
            }
            if jwk.text("use").ok().is_some_and(|u| u != "enc") {
                return Err(KeyError::Jwk("is not marked for encryption (\"use\" is not \"enc\")".into()));
            }
            match jwk.kty()? {
                "oct" => secret(jwk.bytes("k")?),
                _ if jwk.is_private() => Err(private_given()),
                "RSA" if kind == RecipientKind::Rsa => {
                    let public = jwk.rsa_public()?;
                    check_rsa_size(public.n.iter().skip_while(|b| **b == 0).count() * 8)?;
                    rsa(public.try_into().ok())
                }
                "EC" if kind == RecipientKind::Ecdh => {
                    let (curve, point) = jwk.ec_point()?;
                    let curve = EcdhCurve::from_name(curve.name())
                        .ok_or_else(|| KeyError::Jwk("has an unsupported curve".into()))?;
                    ecdh(curve, point)
                }
                "OKP" if kind == RecipientKind::Ecdh => match jwk.text("crv")? {
                    "X25519" => ecdh(EcdhCurve::X25519, jwk.bytes("x")?),
                    other => Err(KeyError::Jwk(format!("has \"crv\": {other:?}; ECDH-ES takes X25519 OKP keys"))),
                },
                kty => Err(KeyError::Jwk(format!("has \"kty\": {kty:?}, which {} cannot use", alg.name()))),
            }
        }
        RecipientKeyType::PublicPem => {
            if shared_len.is_some() {
                return Err(KeyError::Unusable(format!(
                    "{} needs a shared secret; set key_type to Secret, Base64Secret, UrlSafeBase64Secret or Jwk",
                    alg.name()
                )));
            }
            let spki = public_pem(material)?;
            match kind {
                RecipientKind::Rsa => {
                    if let Some(bits) = spki_rsa_bits(&spki) {
                        check_rsa_size(bits)?;
                    }
                    rsa(PublicEncryptingKey::from_der(&spki).ok())
                }
                _ => {
                    let info = der::read_subject_public_key_info(&spki).ok_or_else(|| KeyError::Malformed {
                        expected: "a public key",
                        reason: "unreadable SubjectPublicKeyInfo".into(),
                    })?;
                    let curve = match (info.algorithm, info.parameter) {
                        (der::X25519, _) => EcdhCurve::X25519,
                        (der::EC_PUBLIC_KEY, Some(der::P256)) => EcdhCurve::P256,
                        (der::EC_PUBLIC_KEY, Some(der::P384)) => EcdhCurve::P384,
                        (der::EC_PUBLIC_KEY, Some(der::P521)) => EcdhCurve::P521,
                        (der::RSA_ENCRYPTION, _) => {
                            return Err(KeyError::WrongFamily {
                                found: "an RSA public key",
                                key_type: "PublicPem",
                                expected: "an EC (P-256, P-384, P-521) or X25519 public key for ECDH-ES",
                            })
                        }
                        _ => {
                            return Err(KeyError::Malformed {
                                expected: "an EC (P-256, P-384, P-521) or X25519 public key",
                                reason: "another kind of key".into(),
                            })
                        }
                    };
                    ecdh(curve, info.key.to_vec())
                }
            }
        }
    }
}

fn private_given() -> KeyError {
    KeyError::Jwk(
        "holds a private key (\"d\"); give the recipient's public key only (the sidecar encrypts, it never decrypts)"
            .into(),
    )
}

/// aws-lc-rs refuses RSA keys under 2048 bits without saying why: say it first.
fn check_rsa_size(bits: usize) -> Result<(), KeyError> {
    if bits < 2048 {
        return Err(KeyError::RsaTooSmall { bits });
    }
    Ok(())
}

/// The modulus size of an RSA SubjectPublicKeyInfo.
fn spki_rsa_bits(spki: &[u8]) -> Option<usize> {
    let info = der::read_subject_public_key_info(spki)?;
    if info.algorithm != der::RSA_ENCRYPTION {
        return None;
    }
    let (der::SEQUENCE, body, _) = der::element(info.key)? else { return None };
    let (der::INTEGER, modulus, _) = der::element(body)? else { return None };
    Some(modulus.iter().skip_while(|b| **b == 0).count() * 8)
}

fn rsa(key: Option<PublicEncryptingKey>) -> Result<RecipientKey, KeyError> {
    let key = key.ok_or_else(|| KeyError::Malformed {
        expected: "an RSA public key",
        reason: "not an RSA key this program can read".into(),
    })?;
    let bits = key.key_size_bits();
    if bits < 2048 {
        return Err(KeyError::RsaTooSmall { bits });
    }
    let key = OaepPublicEncryptingKey::new(key)
        .map_err(|_| KeyError::Malformed { expected: "an RSA public key", reason: "unusable for OAEP".into() })?;
    Ok(RecipientKey::Rsa(key))
}

/// Checks the point is on the curve (an agreement with a throwaway key) before accepting it.
fn ecdh(curve: EcdhCurve, public: Vec<u8>) -> Result<RecipientKey, KeyError> {
    let probe = aws_lc_rs::agreement::PrivateKey::generate(curve.agreement())
        .map_err(|_| KeyError::Malformed { expected: "an ECDH public key", reason: "key generation failed".into() })?;
    aws_lc_rs::agreement::agree(
        &probe,
        aws_lc_rs::agreement::UnparsedPublicKey::new(curve.agreement(), &public),
        (),
        |_| Ok(()),
    )
    .map_err(|()| KeyError::Malformed {
        expected: "a public key on its curve",
        reason: format!("not a valid {} public key", curve.name()),
    })?;
    Ok(RecipientKey::Ecdh { curve, public })
}

/// The SubjectPublicKeyInfo in PEM text: a `PUBLIC KEY` block or a certificate's key.
fn public_pem(material: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mut found_private = false;
    for section in <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(material) {
        let Ok((kind, der)) = section else { break };
        match kind {
            SectionKind::PublicKey => return Ok(der),
            SectionKind::Certificate => {
                let (_, cert) = x509_parser::parse_x509_certificate(&der)
                    .map_err(|e| KeyError::Malformed { expected: "an X.509 certificate", reason: e.to_string() })?;
                return Ok(cert.tbs_certificate.subject_pki.raw.to_vec());
            }
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => found_private = true,
            _ => {}
        }
    }
    if found_private {
        return Err(KeyError::Unusable(
            "this is a private key; give the recipient's public key (`openssl pkey -in KEY -pubout`); the sidecar encrypts, it never decrypts".into(),
        ));
    }
    if memchr::memmem::find(material, b"BEGIN RSA PUBLIC KEY").is_some() {
        return Err(KeyError::Malformed {
            expected: "a PEM public key (\"BEGIN PUBLIC KEY\")",
            reason: "this is PKCS#1; convert it with `openssl rsa -RSAPublicKey_in -in KEY -pubout`".into(),
        });
    }
    Err(KeyError::Malformed {
        expected: "a PEM public key (\"BEGIN PUBLIC KEY\") or certificate",
        reason: "no such block found".into(),
    })
}
