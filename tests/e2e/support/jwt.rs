//! JWT checks independent of the sidecar: [`decode`] is the one verifier (signature with the
//! public key, algorithm, `exp` without leeway, and whatever else the [`Validation`] asks);
//! the rest are conveniences around it and the demo keys in `examples/keys`.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::keys::demo_key;

/// Decodes `token` with `key` under `validation` and returns its claims.
pub fn decode(token: &str, key: &DecodingKey, validation: &Validation) -> Result<Value, String> {
    jsonwebtoken::decode::<Value>(token, key, validation).map(|d| d.claims).map_err(|e| format!("{e:?}"))
}

/// Like [`decode`], panicking if the token does not verify.
pub fn verify(token: &str, key: &DecodingKey, validation: &Validation) -> Value {
    decode(token, key, validation).unwrap_or_else(|e| panic!("token does not verify: {e}\n{token}"))
}

/// A validation of the algorithm, the signature, `exp` (required, no leeway) and `aud` when
/// given (otherwise the audience is not checked).
pub fn validation(alg: Algorithm, aud: Option<&str>) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = 0;
    match aud {
        Some(aud) => v.set_audience(&[aud]),
        None => v.validate_aud = false,
    }
    v
}

/// The public key of an asymmetric key pair as a verification key.
pub fn decoding_key(alg: Algorithm, public_pem: &str) -> DecodingKey {
    let pem = public_pem.as_bytes();
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
        _ => DecodingKey::from_rsa_pem(pem),
    }
    .expect("public key PEM")
}

/// jsonwebtoken's algorithm of that name (the verifier's; ES512 has none there).
pub fn algorithm(name: &str) -> Algorithm {
    name.parse().unwrap_or_else(|_| panic!("jsonwebtoken has no algorithm {name}"))
}

/// The demo RSA public key (`examples/keys/demo-rsa.pub.pem`).
fn demo_rsa_key() -> &'static DecodingKey {
    static KEY: OnceLock<DecodingKey> = OnceLock::new();
    KEY.get_or_init(|| decoding_key(Algorithm::RS256, &demo_key("demo-rsa.pub.pem")))
}

fn demo_validation(validate_exp: bool) -> Validation {
    let mut v = validation(Algorithm::RS256, None);
    v.validate_exp = validate_exp;
    v.set_required_spec_claims(&["exp", "iat"]);
    v
}

/// Verifies an RS256 token signed with the demo RSA key, `exp` checked against now, and
/// returns its claims.
pub fn verify_demo(token: &str) -> Value {
    verify(token, demo_rsa_key(), &demo_validation(true))
}

/// The claims of a token signed with the demo RSA key, whether or not it has expired.
pub fn signed_claims(token: &str) -> Value {
    verify(token, demo_rsa_key(), &demo_validation(false))
}

/// Like [`verify_demo`], but checks `exp` strictly against `at` (when the upstream received
/// the token) instead of now, so tokens recorded earlier can be checked afterwards: `at` is
/// before `exp` (to the sub-second, not rounded down to whole seconds) and not before `iat`'s
/// second.
pub fn verify_demo_at(token: &str, at: SystemTime) -> Value {
    let claims = signed_claims(token);
    let exp = claims["exp"].as_f64().unwrap_or_else(|| panic!("no numeric exp in {claims}"));
    let iat = claims["iat"].as_f64().unwrap_or_else(|| panic!("no numeric iat in {claims}"));
    let at = unix_secs(at);
    assert!(at < exp, "token already expired when the upstream received it (exp {exp}, received {at:.3})");
    assert!(iat <= at.floor() + 1.0, "token issued in the future (iat {iat}, received {at:.3})");
    claims
}

pub fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs_f64()
}

/// The header and claims of a JWT as raw JSON, without checking the signature.
pub fn parts(token: &str) -> (Value, Value) {
    let segments: Vec<&str> = token.split('.').collect();
    assert_eq!(segments.len(), 3, "a JWS compact token has three segments: {token}");
    let json = |s: &str| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).expect("base64url segment")).expect("JSON segment")
    };
    (json(segments[0]), json(segments[1]))
}

/// The claims of a JWT, without checking the signature.
pub fn claims(token: &str) -> Value {
    parts(token).1
}

/// Every JWT-shaped string (`eyJ...` in three non-empty base64url segments) in `text`, in
/// order of appearance (memchr's memmem: fast even on the hundreds of megabytes of a trace log
/// in a debug build).
pub fn find_jwts(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let is_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let mut out = Vec::new();
    for start in memchr::memmem::find_iter(bytes, b"eyJ") {
        if start > 0 && is_char(bytes[start - 1]) {
            continue;
        }
        let end = bytes[start..].iter().position(|&b| !is_char(b)).map_or(bytes.len(), |n| start + n);
        let word = &text[start..end];
        if word.split('.').count() == 3 && word.split('.').all(|s| !s.is_empty()) {
            out.push(word.to_string());
        }
    }
    out
}

/// Asserts that `text` holds nothing that looks like a JWT (they all start with `eyJ`).
pub fn assert_no_jwt(text: &str, what: &str) {
    assert!(!text.contains("eyJ"), "{what} contains something like a JWT: {text}");
}
