//! Encrypted tokens: every key management `alg` (and curve) with every content `enc`, sent
//! through the proxy and then decrypted and verified by joserfc; and the config errors that
//! keep a wrong recipient key out.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};

use super::check::{assert_all_ok, jose_keys, joserfc, to_jwk};
use crate::support::client::get;
use crate::support::config::{config, route, toml_str, ConfigDir};
use crate::support::keys::keys;
use crate::support::sidecar::start;
use crate::support::upstream::Upstream;

const ENCS: [(&str, usize); 4] = [("A128GCM", 16), ("A256GCM", 32), ("A128CBC-HS256", 32), ("A256CBC-HS512", 64)];

/// One recipient: the `[encrypt]` key lines and the key joserfc decrypts with.
struct Recipient {
    alg: &'static str,
    label: &'static str,
    key_lines: String,
    decrypt_with: Value,
}

fn shared(alg: &'static str, label: &'static str, bytes: &[u8], form: &str) -> Recipient {
    let key_lines = match form {
        "b64url-inline" => format!("key_type = \"UrlSafeBase64Secret\"\nkey = \"{}\"\n", URL_SAFE_NO_PAD.encode(bytes)),
        "b64-inline" => format!("key_type = \"Base64Secret\"\nkey = \"{}\"\n", STANDARD.encode(bytes)),
        "jwk-inline" => {
            format!("key = {}\n", toml_str(&json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode(bytes)}).to_string()))
        }
        other => panic!("unknown form {other}"),
    };
    Recipient { alg, label, key_lines, decrypt_with: json!({"oct": URL_SAFE_NO_PAD.encode(bytes)}) }
}

fn public(alg: &'static str, label: &'static str, public: String, private_pem: &str) -> Recipient {
    Recipient {
        alg,
        label,
        key_lines: format!("key = {}\n", toml_str(&public)),
        decrypt_with: json!({"pem": private_pem}),
    }
}

fn recipients(enc_len: usize) -> Vec<Recipient> {
    let k = keys();
    let j = jose_keys();
    let jwk = |pem: &str| to_jwk(pem, false).to_string();
    vec![
        shared("A128KW", "A128KW/b64url", &[0x11; 16], "b64url-inline"),
        shared("A192KW", "A192KW/jwk", &[0x22; 24], "jwk-inline"),
        shared("A256KW", "A256KW/b64", &[0x33; 32], "b64-inline"),
        shared("dir", "dir/b64", &vec![0x44; enc_len], "b64-inline"),
        public("RSA-OAEP", "RSA-OAEP/certificate", k.rsa_cert_pem.clone(), &k.rsa.pkcs8_pem),
        public("RSA-OAEP-256", "RSA-OAEP-256/jwk", jwk(&k.rsa.public_pem), &k.rsa.pkcs8_pem),
        public("ECDH-ES", "ECDH-ES/P-256/pem", k.ec256.public_pem.clone(), &k.ec256.pkcs8_pem),
        public("ECDH-ES", "ECDH-ES/P-384/jwk", jwk(&k.ec384.public_pem), &k.ec384.pkcs8_pem),
        public("ECDH-ES", "ECDH-ES/X25519/pem", j.x25519_public.clone(), &j.x25519),
        public("ECDH-ES+A128KW", "ECDH-ES+A128KW/P-256/jwk", jwk(&k.ec256.public_pem), &k.ec256.pkcs8_pem),
        public("ECDH-ES+A128KW", "ECDH-ES+A128KW/P-384/pem", k.ec384.public_pem.clone(), &k.ec384.pkcs8_pem),
        public("ECDH-ES+A128KW", "ECDH-ES+A128KW/X25519/jwk", jwk(&j.x25519_public), &j.x25519),
        public("ECDH-ES+A256KW", "ECDH-ES+A256KW/P-256/pem", k.ec256.public_pem.clone(), &k.ec256.pkcs8_pem),
        public("ECDH-ES+A256KW", "ECDH-ES+A256KW/P-384/pem", k.ec384.public_pem.clone(), &k.ec384.pkcs8_pem),
        public("ECDH-ES+A256KW", "ECDH-ES+A256KW/X25519/pem", j.x25519_public.clone(), &j.x25519),
    ]
}

/// An ES256-signed token `name` encrypted for `r` with `enc`.
fn encrypted_token(name: &str, r: &Recipient, enc: &str) -> String {
    format!(
        "[tokens.{name}]\nalgorithm = \"ES256\"\nkey_type = \"EcPem\"\nkey = {key}\nkid = \"signer-1\"\nttl = \"10m\"\n\
         claims = {{ iss = \"jose-e2e\", sub = \"{name}\" }}\n\n[tokens.{name}.encrypt]\nalg = \"{alg}\"\nenc = \"{enc}\"\n\
         kid = \"recipient-1\"\n{lines}\n",
        key = toml_str(&keys().ec256.pkcs8_pem),
        alg = r.alg,
        lines = r.key_lines,
    )
}

/// 60 tokens, one per (alg, curve, key form) and enc, written into request headers through
/// the proxy; joserfc decrypts every one with the recipient's private key and verifies the
/// nested ES256 JWS.
#[tokio::test]
async fn every_alg_and_enc_decrypts_and_verifies_in_joserfc() {
    let upstream = Upstream::start().await;
    let mut tokens = String::new();
    let mut cases = Vec::new();
    for (e, (enc, len)) in ENCS.iter().enumerate() {
        for (i, r) in recipients(*len).into_iter().enumerate() {
            let name = format!("t{e}_{i}");
            tokens.push_str(&encrypted_token(&name, &r, enc));
            cases.push((name, r, *enc));
        }
    }
    let names: Vec<&str> = cases.iter().map(|(n, _, _)| n.as_str()).collect();
    let sidecar = start(&config("", &format!("{tokens}{}", route(upstream.port(), &names, "")))).await;
    // One request per enc, each carrying fifteen tokens in headers.
    for e in 0..ENCS.len() {
        let headers: Vec<(String, String)> = cases
            .iter()
            .filter(|(n, _, _)| n.starts_with(&format!("t{e}_")))
            .map(|(n, _, _)| (format!("x-{n}"), format!("{{/{n}}}")))
            .collect();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        get(sidecar.proxy_addr, &upstream.url(&format!("/enc{e}")), &headers).await.assert_upstream_ok();
    }
    let received = upstream.requests();
    let mut jobs = Vec::new();
    let mut labels = Vec::new();
    for (name, r, enc) in &cases {
        let e: usize = name[1..2].parse().expect("enc index");
        let token =
            received[e].header(&format!("x-{name}")).unwrap_or_else(|| panic!("{name} not received")).to_string();
        assert_eq!(token.split('.').count(), 5, "{name}: a compact JWE has five parts: {token}");
        jobs.push(json!({
            "kind": "jwe", "token": token, "alg": r.alg, "enc": enc, "key": r.decrypt_with,
            "sig_alg": "ES256", "sig_key": {"pem": keys().ec256.public_pem},
        }));
        labels.push(format!("{} with {enc} ({name})", r.label));
    }
    let results = joserfc(jobs);
    assert_all_ok(&results, &labels);
    for ((name, r, enc), result) in cases.iter().zip(&results) {
        let header = &result["header"];
        assert_eq!((header["alg"].as_str(), header["enc"].as_str()), (Some(r.alg), Some(*enc)), "{name}");
        assert_eq!(header["cty"], "JWT", "{name}: a nested JWT says so");
        assert_eq!(header["kid"], "recipient-1", "{name}");
        assert_eq!(header.get("epk").is_some(), r.alg.starts_with("ECDH-ES"), "{name}: epk only for ECDH-ES");
        assert_eq!(result["inner_header"]["kid"], "signer-1", "{name}");
        assert_eq!(result["claims"]["sub"], name.as_str());
        assert!(result["claims"]["exp"].as_u64().is_some(), "{name}");
    }
    sidecar.shutdown().await;
}

/// A recipient key in a file is watched like a signing key: a rotated file is a reload, and
/// the token's definition (so its cell) changes with the key.
#[test]
fn a_recipient_key_file_is_watched_and_part_of_the_token() {
    let dir = ConfigDir::empty();
    let k = keys();
    dir.write("partner.pub.pem", &k.ec256.public_pem);
    let text = "[tokens.t]\nalgorithm = \"HS256\"\nkey_type = \"Secret\"\nkey = \"signing secret, long enough\"\nttl = \"5m\"\n\n\
                [tokens.t.encrypt]\nalg = \"ECDH-ES\"\nenc = \"A128GCM\"\nkey_file = \"partner.pub.pem\"\n";
    let before = dir.config(text);
    assert!(before.watched_files.contains(&dir.path("partner.pub.pem")), "{:?}", before.watched_files);
    dir.write("partner.pub.pem", &k.ec384.public_pem);
    let after = dir.config(text);
    assert!(!before.tokens["t"].same_definition(&after.tokens["t"]), "a new recipient key is a new definition");
}

/// A wrong recipient key is a config error at `check`, at the key's line, with the reason
/// and never the key.
#[test]
fn wrong_recipient_keys_are_config_errors() {
    let dir = ConfigDir::empty();
    let k = keys();
    let cases: Vec<(&str, &str, String, &str)> = vec![
        (
            "A128KW",
            "A128GCM",
            "key_type = \"Base64Secret\"\nkey = \"AAAAAAAAAAAAAAAAAAAAAAAA\"".into(),
            "A128KW needs exactly 16 bytes (128 bits), this key has 18",
        ),
        (
            "dir",
            "A256CBC-HS512",
            format!("key_type = \"Base64Secret\"\nkey = \"{}\"", STANDARD.encode([1u8; 32])),
            "dir with A256CBC-HS512 needs exactly 64 bytes",
        ),
        (
            "RSA-OAEP-256",
            "A256GCM",
            format!("key = {}", toml_str(&k.rsa.pkcs8_pem)),
            "this is a private key; give the recipient's public key",
        ),
        ("ECDH-ES", "A256GCM", format!("key = {}", toml_str(&k.rsa.public_pem)), "an RSA public key"),
        ("RSA-OAEP", "A256GCM", format!("key = {}", toml_str(&k.ec256.public_pem)), "an RSA public key"),
        (
            "ECDH-ES",
            "A128GCM",
            format!("key = {}", toml_str(&to_jwk(&k.ec256.pkcs8_pem, true).to_string())),
            "holds a private key",
        ),
        (
            "RSA-OAEP",
            "A128GCM",
            format!("key = {}", toml_str(&to_jwk(&k.rsa1024_pem, false).to_string())),
            "at least 2048 are required",
        ),
        (
            "A256KW",
            "A128GCM",
            "key = \"c2VjcmV0\"".into(),
            "set key_type to Secret, Base64Secret or UrlSafeBase64Secret",
        ),
        ("A999KW", "A128GCM", "key = \"x\"".into(), "unknown key management algorithm \"A999KW\""),
        ("A128KW", "A999GCM", "key = \"x\"".into(), "unknown content encryption \"A999GCM\""),
    ];
    for (alg, enc, key_lines, expected) in cases {
        let text = format!(
            "[tokens.t]\nalgorithm = \"HS256\"\nkey_type = \"Secret\"\nkey = \"signing secret, long enough to sign\"\nttl = \"5m\"\n\n\
             [tokens.t.encrypt]\nalg = \"{alg}\"\nenc = \"{enc}\"\n{key_lines}\n"
        );
        let errors = dir.errors(&text);
        assert_eq!(errors.len(), 1, "{alg}/{enc}: {errors:?}");
        let e = &errors[0];
        assert!(e.key_path.starts_with("tokens.t.encrypt."), "{alg}/{enc}: {e}");
        assert!(e.message.contains(expected), "{alg}/{enc}: expected {expected:?} in: {e}");
        for secret in ["PRIVATE KEY-----\nMII", "AAAAAAAAAAAAAAAAAAAAAAAA"] {
            assert!(!e.message.contains(secret), "{alg}/{enc}: the message quotes the key: {e}");
        }
    }
}
