//! `kind = "dpop"`: a key that proves possession of access tokens (RFC 9449).
//!
//! An oauth2 token with `dpop = "NAME"` gets a DPoP proof on its token request and on every
//! request it is written into: a JWT with `typ: "dpop+jwt"`, the public key as `jwk` in its
//! header, and claims `jti` (random), `htm` (the method), `htu` (the URL without query),
//! `iat`, `ath` (the access token's hash, on resource requests) and `nonce` when the server
//! gave one. Servers that want a nonce answer `use_dpop_nonce` with a `DPoP-Nonce` header; the
//! sidecar keeps the latest nonce per server (origin) and retries once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::{Map, Value};
use toml::Spanned;

use super::algorithm::{algorithm_name, compatible_key_types, parse_algorithm, Algorithm, KeyType};
use super::jwt::{json_object, random_jti, sign_compact};
use super::per_request::{check_fast, unix_seconds};
use super::signer::Signer;
use super::{base64url, key_source, keys, read_key, BuildContext, MintError};
use crate::config::raw::RawToken;
use crate::config::Collector;

/// Servers whose nonce is kept; past this the map is cleared (a nonce is only an
/// optimisation: a server without one asks again).
const MAX_ORIGINS: usize = 1024;
/// Longest nonce kept; RFC 9449 nonces are short opaque strings.
const MAX_NONCE: usize = 512;

/// A DPoP key, ready to sign proofs. Its `Debug` never shows the key.
pub struct DpopKey {
    pub algorithm: Algorithm,
    signer: Arc<Signer>,
    /// The proof header, `{"typ":"dpop+jwt","alg":...,"jwk":{...}}`, encoded once.
    header_segment: String,
    /// The latest nonce each server gave, by [`Server`] (an authorization server and a
    /// resource server at one origin, as Okta has, keep their own).
    nonces: Mutex<HashMap<Server, String>>,
}

/// A server that hands out DPoP nonces: the token endpoint's (RFC 9449 §8) or a resource
/// server's (§9), by origin (`scheme://host:port`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Server {
    Authorization(String),
    Resource(String),
}

impl Server {
    /// The authorization server of a token endpoint URL (`htu`).
    pub fn authorization(htu: &str) -> Server {
        Server::Authorization(origin_of(htu))
    }

    /// The resource server of a request URL (`htu`).
    pub fn resource(htu: &str) -> Server {
        Server::Resource(origin_of(htu))
    }
}

impl std::fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopKey").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

impl DpopKey {
    pub fn new(signer: Arc<Signer>) -> Option<DpopKey> {
        let jwk = signer.public_jwk()?;
        let algorithm = signer.algorithm();
        let header = json_object(&[
            ("typ", "dpop+jwt".into()),
            ("alg", algorithm_name(algorithm).into()),
            ("jwk", Value::Object(jwk)),
        ]);
        Some(DpopKey {
            algorithm,
            signer,
            header_segment: base64url(header.as_bytes()),
            nonces: Mutex::new(HashMap::new()),
        })
    }

    /// A proof for `method` on `htu` (the URL without query), with `ath` for a resource
    /// request (`access_token`) and the latest nonce of the server (the resource server, or
    /// the authorization server for a token request), if any.
    pub fn proof(
        &self,
        method: &str,
        htu: &str,
        access_token: Option<&[u8]>,
        now: SystemTime,
    ) -> Result<String, MintError> {
        let server = if access_token.is_some() { Server::resource(htu) } else { Server::authorization(htu) };
        let mut claims = Map::new();
        claims.insert("jti".into(), random_jti().into());
        claims.insert("htm".into(), method.to_ascii_uppercase().into());
        claims.insert("htu".into(), htu.into());
        claims.insert("iat".into(), unix_seconds(now)?.into());
        if let Some(token) = access_token {
            claims.insert("ath".into(), super::per_request::sha256_b64url(token).into());
        }
        if let Some(nonce) = self.nonce(&server) {
            claims.insert("nonce".into(), nonce.into());
        }
        let payload = serde_json::to_vec(&claims).map_err(|e| MintError::Sign(format!("claims: {e}")))?;
        sign_compact(&self.header_segment, &payload, &self.signer)
    }

    /// The nonce a server last gave.
    pub fn nonce(&self, server: &Server) -> Option<String> {
        self.nonces.lock().ok()?.get(server).cloned()
    }

    /// Keeps a `DPoP-Nonce` a server sent, if it is a valid nonce (RFC 9449 §8.1: 1*NQCHAR).
    /// Returns whether it was kept.
    pub fn remember_nonce(&self, server: Server, nonce: &[u8]) -> bool {
        let valid = !nonce.is_empty()
            && nonce.len() <= MAX_NONCE
            && nonce.iter().all(|&b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e));
        if !valid {
            return false;
        }
        let Ok(mut nonces) = self.nonces.lock() else { return false };
        if nonces.len() >= MAX_ORIGINS && !nonces.contains_key(&server) {
            nonces.clear();
        }
        nonces.insert(server, String::from_utf8_lossy(nonce).into_owned());
        true
    }
}

/// `scheme://host[:port]` of an `htu`, the key nonces are kept under.
pub fn origin_of(htu: &str) -> String {
    let after_scheme = htu.find("://").map_or(0, |i| i + 3);
    let end = htu[after_scheme..].find('/').map_or(htu.len(), |i| after_scheme + i);
    htu[..end].to_ascii_lowercase()
}

/// Whether an answer asks for a DPoP nonce (`error="use_dpop_nonce"`, RFC 9449 §8 and §9):
/// in a JSON body (token endpoint) or the `WWW-Authenticate` header (resource server).
pub fn asks_for_nonce(www_authenticate: Option<&[u8]>, body: Option<&[u8]>) -> bool {
    let in_header = www_authenticate.is_some_and(|h| memchr::memmem::find(h, b"use_dpop_nonce").is_some());
    let in_body = body
        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        .is_some_and(|v| v.get("error").and_then(Value::as_str) == Some("use_dpop_nonce"));
    in_header || in_body
}

/// `kind = "dpop"`: `algorithm`, `key_type` and the key; `allow_slow_signing` for RSA and the
/// larger curves (a proof is signed for every request).
/// Returns the key, the material read (for the token's fingerprint) and the key file (to watch).
pub fn build(
    ctx: &BuildContext<'_>,
    raw: &Spanned<RawToken>,
    c: &mut Collector<'_>,
) -> Option<(DpopKey, Vec<u8>, Option<std::path::PathBuf>)> {
    let before = c.len();
    let r = raw.get_ref();
    let at = |field: &str| format!("{}.{field}", ctx.key_path);
    for (field, span) in super::fields::not_taken_by(r, super::fields::Kinds::DPOP) {
        c.error(
            span,
            at(field),
            "does not apply to kind = \"dpop\" (a DPoP key: algorithm, key_type and key; the proof's claims are fixed by RFC 9449)",
        );
    }
    let algorithm = match &r.algorithm {
        None => {
            c.error(raw.span(), ctx.key_path, "missing `algorithm` (ES256 or EdDSA are usual for DPoP)");
            None
        }
        Some(a) => match parse_algorithm(a.get_ref()) {
            Some(alg) if super::algorithm::algorithm_family(alg) == super::algorithm::KeyFamily::Hmac => {
                c.error(
                    a.span(),
                    at("algorithm"),
                    "a DPoP proof is signed with an asymmetric key (RFC 9449 §4.2); use ES256, EdDSA, RS*, PS*",
                );
                None
            }
            Some(alg) => Some(alg),
            None => {
                c.error(a.span(), at("algorithm"), format!("unknown algorithm {:?}", a.get_ref()));
                None
            }
        },
    };
    check_fast(ctx, algorithm, r.allow_slow_signing.as_ref(), r.algorithm.as_ref().map(Spanned::span), c);
    let key_type = match &r.key_type {
        None => {
            c.error(raw.span(), ctx.key_path, "missing `key_type`");
            None
        }
        Some(k) => match KeyType::parse(k.get_ref()) {
            Some(kt) if algorithm.is_none_or(|alg| compatible_key_types(alg).any(|c| c == kt)) => Some(kt),
            _ => {
                c.error(k.span(), at("key_type"), format!("key type {:?} cannot sign this algorithm", k.get_ref()));
                None
            }
        },
    };
    let (material, key_file) = read_key(ctx, "", raw.span(), [&r.key, &r.key_file, &r.key_env], c);
    let (Some(alg), Some(kt), Some(material)) = (algorithm, key_type, material) else { return None };
    if c.len() != before {
        return None;
    }
    let (field, span) = key_source(raw);
    match keys::load_signing_key(alg, kt, &material) {
        Ok(signer) => DpopKey::new(Arc::new(signer)).map(|key| (key, material, key_file)),
        Err(e) => {
            c.error(span, at(field), e.to_string());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_nonce_rules() {
        assert_eq!(origin_of("https://AS.example:8443/token"), "https://as.example:8443");
        assert_eq!(origin_of("http://127.0.0.1:9000"), "http://127.0.0.1:9000");
        let pair = aws_lc_rs::signature::EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING)
            .expect("key");
        let key = DpopKey::new(Arc::new(Signer::ecdsa(Algorithm::ES256, pair))).expect("dpop key");
        let (authorization, resource) = (Server::authorization("https://a/token"), Server::resource("https://a/api"));
        assert!(key.remember_nonce(authorization.clone(), b"eyJ7S_zG.eyJH0-Z.HX4w-7v"));
        assert!(key.remember_nonce(resource.clone(), b"rs-1"));
        assert!(!key.remember_nonce(resource.clone(), b"has space"), "a space is not an NQCHAR");
        assert!(!key.remember_nonce(resource.clone(), &[b'n'; 600]), "too long");
        assert_eq!(key.nonce(&authorization).as_deref(), Some("eyJ7S_zG.eyJH0-Z.HX4w-7v"), "kept apart at one origin");
        assert_eq!(key.nonce(&resource).as_deref(), Some("rs-1"));
        assert!(asks_for_nonce(Some(b"DPoP error=\"use_dpop_nonce\", error_description=\"x\""), None));
        assert!(asks_for_nonce(None, Some(br#"{"error":"use_dpop_nonce"}"#)));
        assert!(!asks_for_nonce(Some(b"DPoP error=\"invalid_token\""), Some(br#"{"error":"invalid_grant"}"#)));
    }
}
