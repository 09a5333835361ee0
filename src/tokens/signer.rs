//! Signing keys, parsed once and kept ready: a JWT's signature is one call here.
//!
//! Every algorithm signs with aws-lc-rs directly (jsonwebtoken re-parses its key on every
//! signature and has no ES512). A key is parsed when the config loads, so a token signed on
//! the request path (`per_request`, DPoP proofs) costs only the signature itself.

use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaEncoding, RsaKeyPair, RsaPublicKeyComponents, RSA_PKCS1_SHA256,
    RSA_PKCS1_SHA384, RSA_PKCS1_SHA512, RSA_PSS_SHA256, RSA_PSS_SHA384, RSA_PSS_SHA512,
};
use serde_json::{Map, Value};

use super::algorithm::{algorithm_curve, Algorithm};
use super::MintError;

/// A key ready to sign with one algorithm. Its `Debug` shows only the algorithm.
pub struct Signer {
    algorithm: Algorithm,
    key: Key,
}

enum Key {
    // Boxed: an HMAC key holds its inner and outer states (over a kilobyte).
    Hmac(Box<hmac::Key>),
    Rsa(RsaKeyPair, &'static dyn RsaEncoding),
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

impl Signer {
    /// An HMAC key for HS256/384/512.
    pub fn hmac(algorithm: Algorithm, secret: &[u8]) -> Signer {
        let hash = match algorithm {
            Algorithm::HS384 => hmac::HMAC_SHA384,
            Algorithm::HS512 => hmac::HMAC_SHA512,
            _ => hmac::HMAC_SHA256,
        };
        Signer { algorithm, key: Key::Hmac(Box::new(hmac::Key::new(hash, secret))) }
    }

    /// An RSA key for RS* (PKCS#1 v1.5) or PS* (PSS, salt as long as the hash).
    pub fn rsa(algorithm: Algorithm, pair: RsaKeyPair) -> Signer {
        let encoding: &'static dyn RsaEncoding = match algorithm {
            Algorithm::RS384 => &RSA_PKCS1_SHA384,
            Algorithm::RS512 => &RSA_PKCS1_SHA512,
            Algorithm::PS256 => &RSA_PSS_SHA256,
            Algorithm::PS384 => &RSA_PSS_SHA384,
            Algorithm::PS512 => &RSA_PSS_SHA512,
            _ => &RSA_PKCS1_SHA256,
        };
        Signer { algorithm, key: Key::Rsa(pair, encoding) }
    }

    /// An EC key already bound to the curve and hash of `algorithm` (fixed-size `r || s`
    /// signatures, as JWS wants).
    pub fn ecdsa(algorithm: Algorithm, pair: EcdsaKeyPair) -> Signer {
        Signer { algorithm, key: Key::Ecdsa(pair) }
    }

    pub fn ed25519(pair: Ed25519KeyPair) -> Signer {
        Signer { algorithm: Algorithm::EdDSA, key: Key::Ed25519(pair) }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The JWS signature of `message` (the `header.payload` signing input).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, MintError> {
        let failed = |what: &str| MintError::Sign(format!("the crypto library could not {what}"));
        match &self.key {
            Key::Hmac(key) => Ok(hmac::sign(key, message).as_ref().to_vec()),
            Key::Rsa(pair, encoding) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(*encoding, &SystemRandom::new(), message, &mut signature)
                    .map_err(|_| failed("make an RSA signature"))?;
                Ok(signature)
            }
            Key::Ecdsa(pair) => Ok(pair
                .sign(&SystemRandom::new(), message)
                .map_err(|_| failed("make an ECDSA signature"))?
                .as_ref()
                .to_vec()),
            Key::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
        }
    }

    /// The public key as JWK members (`kty` and the key's own parameters, RFC 7518 §6),
    /// for asymmetric keys. `kid`, `alg` and `use` are the caller's to add.
    pub fn public_jwk(&self) -> Option<Map<String, Value>> {
        let mut jwk = Map::new();
        let b64 = |bytes: &[u8]| Value::String(super::base64url(bytes));
        match &self.key {
            Key::Hmac(_) => return None,
            Key::Rsa(pair, _) => {
                let parts = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
                jwk.insert("kty".into(), "RSA".into());
                jwk.insert("n".into(), b64(&parts.n));
                jwk.insert("e".into(), b64(&parts.e));
            }
            Key::Ecdsa(pair) => {
                let curve = algorithm_curve(self.algorithm)?;
                let point = pair.public_key().as_ref();
                let n = curve.coordinate_len();
                if point.len() != 1 + 2 * n || point[0] != 4 {
                    return None;
                }
                jwk.insert("kty".into(), "EC".into());
                jwk.insert("crv".into(), curve.name().into());
                jwk.insert("x".into(), b64(&point[1..=n]));
                jwk.insert("y".into(), b64(&point[1 + n..]));
            }
            Key::Ed25519(pair) => {
                jwk.insert("kty".into(), "OKP".into());
                jwk.insert("crv".into(), "Ed25519".into());
                jwk.insert("x".into(), b64(pair.public_key().as_ref()));
            }
        }
        Some(jwk)
    }
}
