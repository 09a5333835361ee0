//! Keys that cannot be used: each is a config error that names the token's key path, with a
//! message that says what is wrong, checked both through the config and through
//! `load_encoding_key` directly.

use token_sidecar::config::Diagnostic;
use token_sidecar::tokens::algorithm::parse_algorithm;
use token_sidecar::tokens::algorithm::{compatible_key_types, KeyType, ALGORITHMS};
use token_sidecar::tokens::keys::{load_signing_key, KeyError};

use crate::support::config::{render, single, toml_str, ConfigDir};
use crate::support::keys::{hmac_secret_b64, hmac_secret_b64url, keys};

fn config(alg: &str, key_type: &str, key_line: &str) -> String {
    format!("[tokens.t]\nalgorithm = \"{alg}\"\nkey_type = \"{key_type}\"\n{key_line}\nttl = \"5m\"\n")
}

/// The one error for an inline key; it must sit at `tokens.t.key`, on the key's line.
fn rejected_inline(alg: &str, key_type: &str, material: &str) -> Diagnostic {
    let dir = ConfigDir::empty();
    let errors = dir.errors(&config(alg, key_type, &format!("key = {}", toml_str(material))));
    let e = single(&errors).clone();
    assert_eq!(e.key_path, "tokens.t.key", "{e}");
    assert_eq!((e.line, e.column), (4, 7), "the error points at the key value: {e}");
    assert_eq!(e.file, dir.path("sidecar.toml"));
    // Messages never echo key material.
    let compact: String = material.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
    if compact.len() >= 24 {
        for window in compact.as_bytes().windows(16).step_by(8) {
            let piece = std::str::from_utf8(window).expect("ASCII key");
            assert!(!e.message.contains(piece), "error message leaks key material: {e}");
        }
    }
    e
}

/// The error `load_signing_key` gives for this material.
fn load_error(alg: &str, key_type: &str, material: &str) -> KeyError {
    let kt = KeyType::parse(key_type).expect("key type");
    match load_signing_key(parse_algorithm(alg).expect("algorithm"), kt, material.as_bytes()) {
        Ok(_) => panic!("{alg}/{key_type} should reject this key"),
        Err(e) => e,
    }
}

/// Checks both paths: the variant from `load_signing_key`, and that the config error carries
/// exactly its message at the token's key path.
fn assert_rejected(alg: &str, key_type: &str, material: &str, expected: KeyError) {
    assert_eq!(load_error(alg, key_type, material), expected);
    assert_eq!(rejected_inline(alg, key_type, material).message, expected.to_string());
}

#[test]
fn compatible_key_types_follow_the_algorithm_family() {
    for (name, alg) in ALGORITHMS {
        let expected: &[&str] = match name {
            "HS256" | "HS384" | "HS512" => &["Secret", "Base64Secret", "UrlSafeBase64Secret", "Jwk"],
            "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => {
                &["RsaPem", "RsaDer", "GoogleServiceAccountJson", "Jwk"]
            }
            "ES256" | "ES384" | "ES512" => &["EcPem", "EcDer", "Jwk"],
            "EdDSA" => &["EdPem", "EdDer", "Jwk"],
            other => panic!("unexpected algorithm {other}"),
        };
        let got: Vec<&str> = compatible_key_types(alg).map(KeyType::name).collect();
        assert_eq!(got, expected, "{name}");
    }
    assert_eq!(ALGORITHMS.len(), 13);
}

#[test]
fn every_incompatible_pair_is_a_key_type_error() {
    let dir = ConfigDir::empty();
    let mut checked = 0;
    for (name, alg) in ALGORITHMS {
        let fits: Vec<&str> = compatible_key_types(alg).map(KeyType::name).collect();
        for kt in KeyType::ALL {
            if fits.contains(&kt.name()) {
                continue;
            }
            let errors = dir.errors(&config(name, kt.name(), "key = \"x\""));
            let e = single(&errors);
            assert_eq!(e.key_path, "tokens.t.key_type", "{name}/{}: {e}", kt.name());
            assert_eq!((e.line, e.column), (3, 12), "{e}");
            assert_eq!(
                e.message,
                format!("key type {} cannot sign {name} (use one of {})", kt.name(), fits.join(", ")),
                "{name}/{}",
                kt.name()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 13 * 11 - 48, "all incompatible pairs were tried");
}

#[test]
fn empty_secret() {
    assert_rejected("HS256", "Secret", "", KeyError::Empty);
    assert_rejected("HS256", "Secret", "  \n\t ", KeyError::Empty);
    assert_rejected("HS384", "Base64Secret", "", KeyError::Empty);
    assert_rejected("RS256", "RsaPem", "\n", KeyError::Empty);
    assert_eq!(KeyError::Empty.to_string(), "the key is empty");

    // An empty key file (or one with only a newline) too, reported at key_file.
    let dir = ConfigDir::empty();
    dir.write("empty.secret", "\n");
    let errors = dir.errors(&config("HS256", "Secret", "key_file = \"empty.secret\""));
    let e = single(&errors);
    assert_eq!(e.key_path, "tokens.t.key_file");
    assert_eq!(e.message, "the key is empty");
}

#[test]
fn bad_base64() {
    let is_bad = |e: KeyError, encoding: &str| match e {
        KeyError::BadEncoding { encoding: got, .. } => got == encoding,
        _ => false,
    };
    for (key_type, material, encoding) in [
        ("Base64Secret", "not base64!", "base64"),
        // URL-safe text given as standard base64, and the other way round.
        ("Base64Secret", hmac_secret_b64url().as_str(), "base64"),
        ("UrlSafeBase64Secret", hmac_secret_b64().as_str(), "URL-safe base64"),
    ] {
        let e = load_error("HS256", key_type, material);
        assert!(is_bad(e.clone(), encoding), "{key_type}: {e:?}");
        let d = rejected_inline("HS256", key_type, material);
        assert!(d.message.starts_with(&format!("the key is not valid {encoding}: ")), "{d}");
    }
    for (alg, key_type) in [("RS256", "RsaDer"), ("ES256", "EcDer"), ("EdDSA", "EdDer")] {
        let e = load_error(alg, key_type, "MIIB*not*base64");
        assert!(is_bad(e, "base64 DER"), "{key_type}");
        let d = rejected_inline(alg, key_type, "MIIB*not*base64");
        assert!(d.message.starts_with("the key is not valid base64 DER: "), "{d}");
    }
}

#[test]
fn pem_given_for_der_type() {
    let k = keys();
    for (alg, key_type, pem, pem_type) in [
        ("RS256", "RsaDer", &k.rsa.pkcs8_pem, "RsaPem"),
        ("PS512", "RsaDer", k.rsa.traditional_pem.as_ref().expect("PKCS#1"), "RsaPem"),
        ("ES256", "EcDer", &k.ec256.pkcs8_pem, "EcPem"),
        ("EdDSA", "EdDer", &k.ed.pkcs8_pem, "EdPem"),
    ] {
        assert_rejected(
            alg,
            key_type,
            pem,
            KeyError::PemGivenForDer { key_type: KeyType::parse(key_type).expect("kt").name(), pem_type },
        );
    }
    assert_eq!(
        KeyError::PemGivenForDer { key_type: "RsaDer", pem_type: "RsaPem" }.to_string(),
        "the key looks like PEM text, but key_type RsaDer expects base64 DER; use key_type = \"RsaPem\""
    );
}

#[test]
fn not_pem_for_pem_type() {
    let k = keys();
    for (alg, key_type, der, der_type) in [
        ("RS256", "RsaPem", &k.rsa.pkcs8_der_b64, "RsaDer"),
        ("ES384", "EcPem", &k.ec384.pkcs8_der_b64, "EcDer"),
        ("EdDSA", "EdPem", &k.ed.pkcs8_der_b64, "EdDer"),
    ] {
        assert_rejected(alg, key_type, der, KeyError::NotPem { der_type });
    }
    assert_eq!(
        KeyError::NotPem { der_type: "EcDer" }.to_string(),
        "no PEM block found; expected text starting with \"-----BEGIN PRIVATE KEY-----\" (for base64 DER use key_type = \"EcDer\")"
    );
}

#[test]
fn encrypted_pkcs8_pem() {
    let k = keys();
    assert!(k.rsa_encrypted_pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    assert_rejected("RS256", "RsaPem", &k.rsa_encrypted_pem, KeyError::Encrypted);
    assert!(KeyError::Encrypted.to_string().contains("openssl pkcs8 -in KEY -out PLAIN.pem"));
}

#[test]
fn public_key_or_certificate_instead_of_private_key() {
    let k = keys();
    for (alg, key_type, public) in [
        ("RS256", "RsaPem", &k.rsa.public_pem),
        ("ES256", "EcPem", &k.ec256.public_pem),
        ("ES384", "EcPem", &k.ec384.public_pem),
        ("EdDSA", "EdPem", &k.ed.public_pem),
    ] {
        assert_rejected(alg, key_type, public, KeyError::NotPrivate("public key"));
    }
    assert_eq!(
        KeyError::NotPrivate("public key").to_string(),
        "the PEM file holds only a public key; the sidecar needs the private key to sign"
    );
    assert_rejected("RS256", "RsaPem", &k.rsa_cert_pem, KeyError::NotPrivate("certificate"));
}

#[test]
fn key_of_the_wrong_family() {
    let k = keys();
    let rsa_expected = "an RSA private key (PKCS#1 or PKCS#8)";
    let ec_expected = "an EC private key (SEC1 or PKCS#8)";
    let ed_expected = "an Ed25519 private key (PKCS#8)";
    for (alg, key_type, material, found, expected) in [
        ("ES256", "EcPem", &k.rsa.pkcs8_pem, "an RSA key", ec_expected),
        ("ES256", "EcPem", k.rsa.traditional_pem.as_ref().expect("PKCS#1"), "an RSA key", ec_expected),
        ("ES384", "EcDer", &k.rsa.pkcs8_der_b64, "an RSA key", ec_expected),
        ("RS256", "RsaPem", &k.ec256.pkcs8_pem, "an EC key", rsa_expected),
        ("PS256", "RsaPem", k.ec256.traditional_pem.as_ref().expect("SEC1"), "an EC key", rsa_expected),
        ("ES256", "EcPem", &k.ed.pkcs8_pem, "an Ed25519 key", ec_expected),
        ("EdDSA", "EdPem", &k.ec256.pkcs8_pem, "an EC key", ed_expected),
        ("EdDSA", "EdDer", &k.rsa.pkcs8_der_b64, "an RSA key", ed_expected),
    ] {
        let key_type = KeyType::parse(key_type).expect("kt").name();
        assert_rejected(alg, key_type, material, KeyError::WrongFamily { found, key_type, expected });
    }
    assert_eq!(
        KeyError::WrongFamily { found: "an RSA key", key_type: "EcPem", expected: ec_expected }.to_string(),
        "this is an RSA key, but key_type EcPem needs an EC private key (SEC1 or PKCS#8)"
    );
}

#[test]
fn ec_key_on_the_wrong_curve_suggests_the_matching_algorithm() {
    let k = keys();
    let p384_for_es256 =
        KeyError::WrongCurve { algorithm: "ES256", expected: "P-256", found: "P-384", suggest: "ES384" };
    assert_rejected("ES256", "EcPem", k.ec384.traditional_pem.as_ref().expect("SEC1"), p384_for_es256.clone());
    assert_rejected("ES256", "EcPem", &k.ec384.pkcs8_pem, p384_for_es256.clone());
    assert_rejected("ES256", "EcDer", &k.ec384.pkcs8_der_b64, p384_for_es256.clone());
    assert_eq!(p384_for_es256.to_string(), "ES256 needs a P-256 key, but this is a P-384 key (use ES384)");

    let p256_for_es384 =
        KeyError::WrongCurve { algorithm: "ES384", expected: "P-384", found: "P-256", suggest: "ES256" };
    assert_rejected("ES384", "EcPem", &k.ec256.pkcs8_pem, p256_for_es384.clone());
    assert_rejected("ES384", "EcDer", k.ec256.traditional_der_b64.as_ref().expect("SEC1 DER"), p256_for_es384);
}

#[test]
fn rsa_1024_key_is_rejected() {
    // Whatever the message, a 1024-bit key must never be accepted for signing.
    let k = keys();
    let e = rejected_inline("RS256", "RsaPem", &k.rsa1024_pem);
    assert!(!e.message.is_empty());
    let _ = load_error("PS256", "RsaPem", &k.rsa1024_pem);
}

#[test]
fn rsa_1024_key_says_it_is_too_small() {
    let k = keys();
    assert_rejected("RS256", "RsaPem", &k.rsa1024_pem, KeyError::RsaTooSmall { bits: 1024 });
    assert_eq!(
        KeyError::RsaTooSmall { bits: 1024 }.to_string(),
        "the RSA key has 1024 bits; at least 2048 are required"
    );
}

#[test]
fn pem_block_with_garbage_inside() {
    let garbage = "-----BEGIN PRIVATE KEY-----\nAAECAwQFBgcICQ==\n-----END PRIVATE KEY-----\n";
    let expected = KeyError::Malformed {
        expected: "an RSA private key (PKCS#1 or PKCS#8)",
        reason: "not a private key this program can read".into(),
    };
    assert_rejected("RS256", "RsaPem", garbage, expected);
    assert!(matches!(load_error("ES256", "EcDer", "AAECAwQFBgcICQ=="), KeyError::Malformed { .. }));
}

#[test]
fn missing_key_file() {
    let dir = ConfigDir::empty();
    let errors = dir.errors(&config("RS256", "RsaPem", "key_file = \"keys/missing.pem\""));
    let e = single(&errors);
    assert_eq!(e.key_path, "tokens.t.key_file");
    assert_eq!((e.line, e.column), (4, 12));
    let path = dir.path("keys/missing.pem");
    assert_eq!(e.message, format!("cannot read {}: No such file or directory (os error 2)", path.display()));
}

#[test]
fn unset_or_empty_key_env() {
    std::env::remove_var("TSIT_KEYERR_UNSET");
    std::env::set_var("TSIT_KEYERR_EMPTY", "");
    let dir = ConfigDir::empty();
    for var in ["TSIT_KEYERR_UNSET", "TSIT_KEYERR_EMPTY"] {
        let errors = dir.errors(&config("HS256", "Secret", &format!("key_env = \"{var}\"")));
        let e = single(&errors);
        assert_eq!(e.key_path, "tokens.t.key_env");
        assert_eq!((e.line, e.column), (4, 11));
        assert_eq!(e.message, format!("environment variable {var} is not set or empty"));
    }
}

#[test]
fn more_than_one_key_source() {
    std::env::set_var("TSIT_KEYERR_TWO", "secret");
    let dir = ConfigDir::empty();
    dir.write("s.txt", "secret");
    for lines in [
        "key = \"a\"\nkey_file = \"s.txt\"",
        "key_file = \"s.txt\"\nkey_env = \"TSIT_KEYERR_TWO\"",
        "key = \"a\"\nkey_env = \"TSIT_KEYERR_TWO\"",
        "key = \"a\"\nkey_file = \"s.txt\"\nkey_env = \"TSIT_KEYERR_TWO\"",
    ] {
        let errors = dir.errors(&config("HS256", "Secret", lines));
        let e = single(&errors);
        assert_eq!(e.key_path, "tokens.t", "{lines}");
        assert_eq!(e.message, "more than one of key, key_file, key_env is set; keep exactly one");
    }
}

#[test]
fn no_key_source() {
    let dir = ConfigDir::empty();
    let errors = dir.errors(&config("ES256", "EcPem", ""));
    let e = single(&errors);
    assert_eq!(e.key_path, "tokens.t");
    assert_eq!(e.message, "no key given: set one of key_file, key_env or key (inline, for demos only)");
}

#[test]
fn key_errors_point_at_the_field_the_key_came_from() {
    let k = keys();
    let dir = ConfigDir::empty();

    dir.write("enc.pem", &k.rsa_encrypted_pem);
    let errors = dir.errors(&config("RS256", "RsaPem", "key_file = \"enc.pem\""));
    let e = single(&errors);
    assert_eq!((e.key_path.as_str(), e.line, e.column), ("tokens.t.key_file", 4, 12));
    assert_eq!(e.message, KeyError::Encrypted.to_string());

    std::env::set_var("TSIT_KEYERR_P384", k.ec384.pkcs8_der_b64.as_str());
    let errors = dir.errors(&config("ES256", "EcDer", "key_env = \"TSIT_KEYERR_P384\""));
    let e = single(&errors);
    assert_eq!((e.key_path.as_str(), e.line, e.column), ("tokens.t.key_env", 4, 11));
    assert_eq!(e.message, "ES256 needs a P-256 key, but this is a P-384 key (use ES384)");

    // Two bad tokens: both reported, each under its own name.
    let text = format!(
        "{}\n{}",
        config("RS256", "RsaPem", "key = \"not a key\""),
        config("EdDSA", "EdPem", &format!("key = {}", toml_str(&k.ed.public_pem))).replace("tokens.t]", "tokens.u]")
    );
    let errors = dir.errors(&text);
    assert_eq!(errors.len(), 2, "{}", render(&errors));
    assert_eq!(errors[0].key_path, "tokens.t.key");
    assert_eq!(errors[0].message, KeyError::NotPem { der_type: "RsaDer" }.to_string());
    assert_eq!(errors[1].key_path, "tokens.u.key");
    assert_eq!(errors[1].message, KeyError::NotPrivate("public key").to_string());
}
