//! `key_type = "Jwk"`: a private JWK of every type signs, and joserfc verifies the tokens
//! with the public key. The JWKs are converted from openssl keys by joserfc, so neither the
//! keys nor their JWK form come from the sidecar.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::check::{assert_all_ok, jose_keys, joserfc, to_jwk};
use crate::support::config::{mint, toml_str, ConfigDir};
use crate::support::jwt::parts;
use crate::support::keys::{keys, HMAC_SECRET};

#[test]
fn a_private_jwk_of_every_type_signs_and_names_its_kid() {
    let k = keys();
    let j = jose_keys();
    let with_kid = |mut jwk: Value, kid: &str| {
        jwk["kid"] = kid.into();
        jwk
    };
    let oct = json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode(HMAC_SECRET), "kid": "oct-1"});
    // (token, algorithm, private JWK, verification key for joserfc)
    let cases: Vec<(&str, &str, Value, Value)> = vec![
        ("rsa_rs256", "RS256", with_kid(to_jwk(&k.rsa.pkcs8_pem, true), "rsa-1"), json!({"pem": k.rsa.public_pem})),
        ("rsa_ps384", "PS384", with_kid(to_jwk(&k.rsa.pkcs8_pem, true), "rsa-2"), json!({"pem": k.rsa.public_pem})),
        ("ec_p256", "ES256", with_kid(to_jwk(&k.ec256.pkcs8_pem, true), "ec-256"), json!({"pem": k.ec256.public_pem})),
        ("ec_p384", "ES384", with_kid(to_jwk(&k.ec384.pkcs8_pem, true), "ec-384"), json!({"pem": k.ec384.public_pem})),
        ("ec_p521", "ES512", with_kid(to_jwk(&j.ec521_pkcs8, true), "ec-521"), json!({"pem": j.ec521_public})),
        ("okp_ed25519", "EdDSA", with_kid(to_jwk(&k.ed.pkcs8_pem, true), "ed-1"), json!({"pem": k.ed.public_pem})),
        ("oct_hs256", "HS256", oct.clone(), json!({"oct": URL_SAFE_NO_PAD.encode(HMAC_SECRET)})),
        ("oct_hs512", "HS512", oct, json!({"oct": URL_SAFE_NO_PAD.encode(HMAC_SECRET)})),
    ];
    let dir = ConfigDir::empty();
    let mut text = String::new();
    for (name, alg, jwk, _) in &cases {
        assert!(jwk.get("d").is_some() || jwk.get("k").is_some(), "{name}: a private JWK: {jwk}");
        dir.write(&format!("{name}.jwk.json"), jwk.to_string());
        text.push_str(&format!(
            "[tokens.{name}]\nalgorithm = \"{alg}\"\nkey_type = \"Jwk\"\nkey_file = {}\nttl = \"5m\"\n\n",
            toml_str(&format!("{name}.jwk.json"))
        ));
    }
    let config = dir.config(&text);
    let mut jobs = Vec::new();
    let mut names = Vec::new();
    for (name, alg, jwk, public) in &cases {
        let token = mint(&config, name);
        let (header, _) = parts(&token);
        assert_eq!(header["alg"], *alg, "{name}");
        assert_eq!(header["kid"], jwk["kid"], "{name}: the JWK's kid is the token's default kid");
        jobs.push(json!({"kind": "jws", "token": token, "alg": alg, "key": public}));
        names.push(name.to_string());
    }
    assert_all_ok(&joserfc(jobs), &names);
}

/// A JWK that cannot sign what the token asks is refused at `check`, at the key's line.
#[test]
fn a_jwk_for_another_algorithm_or_without_its_private_part_is_refused() {
    let k = keys();
    let dir = ConfigDir::empty();
    let cases = [
        ("ES256", to_jwk(&k.ec384.pkcs8_pem, true), "ES256 needs a P-256 key, but this is a P-384 key (use ES384)"),
        ("RS256", to_jwk(&k.rsa.public_pem, false), "is a public key (no \"d\")"),
        ("EdDSA", to_jwk(&k.ec256.pkcs8_pem, true), "EdDSA needs a \"OKP\" key"),
        ("RS256", to_jwk(&k.rsa1024_pem, true), "at least 2048 are required"),
    ];
    for (alg, jwk, expected) in cases {
        let errors = dir.errors(&format!(
            "[tokens.t]\nalgorithm = \"{alg}\"\nkey_type = \"Jwk\"\nkey = {}\nttl = \"5m\"\n",
            toml_str(&jwk.to_string())
        ));
        assert_eq!(errors.len(), 1, "{alg}: {errors:?}");
        assert_eq!(errors[0].key_path, "tokens.t.key");
        assert!(errors[0].message.contains(expected), "{alg}: expected {expected:?} in {}", errors[0]);
        if let Some(d) = jwk["d"].as_str() {
            assert!(!errors[0].message.contains(d), "the message quotes the private key");
        }
    }
}
