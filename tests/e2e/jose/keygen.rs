//! `token-sidecar keygen` for encryption: `--alg RSA-OAEP-256` and `--alg ECDH-ES` (on each
//! curve) write a recipient key pair whose printed `[encrypt]` table works as is; the tokens
//! decrypt with the private key written for the recipient. And `--alg ES512` writes a P-521
//! signing key.

use std::os::unix::fs::PermissionsExt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::check::{assert_all_ok, joserfc};
use crate::support::client::{stderr, stdout};
use crate::support::config::{mint, ConfigDir};
use crate::support::keys::openssl;
use crate::support::sidecar::run_cli;

const SIGNING_SECRET: &str = "a signing secret that is long enough";

#[test]
fn keygen_recipient_keys_encrypt_tokens_their_private_half_decrypts() {
    let dir = ConfigDir::empty();
    let out = dir.path("keys");
    let cases: [(&str, &[&str]); 5] = [
        ("RSA-OAEP-256", &[]),
        ("RSA-OAEP", &["--bits", "3072"]),
        ("ECDH-ES", &[]),
        ("ECDH-ES", &["--crv", "X25519"]),
        ("ECDH-ES+A256KW", &["--crv", "P-384"]),
    ];
    let mut jobs = Vec::new();
    let mut names = Vec::new();
    for (i, (alg, extra)) in cases.iter().enumerate() {
        let name = format!("r{i}");
        let mut args =
            vec!["keygen", "--alg", alg, "--out", out.to_str().expect("utf-8"), "--name", &name, "--kid", "rcpt"];
        args.extend_from_slice(extra);
        let run = run_cli(dir.root(), &args);
        assert_eq!(run.status.code(), Some(0), "keygen {alg}: {}", stderr(&run));
        let snippet = stdout(&run);
        let private = out.join(format!("{name}.key.pem"));
        assert_eq!(std::fs::metadata(&private).expect("key").permissions().mode() & 0o777, 0o600);
        let jwk: Value =
            serde_json::from_slice(&std::fs::read(out.join(format!("{name}.jwk.json"))).expect("jwk")).expect("JSON");
        assert_eq!(
            (jwk["use"].as_str(), jwk["alg"].as_str(), jwk["kid"].as_str()),
            (Some("enc"), Some(*alg), Some("rcpt"))
        );
        assert!(jwk.get("d").is_none(), "the JWK file is public: {jwk}");
        // openssl reads the private key and derives the public key that was written.
        let public = std::fs::read_to_string(out.join(format!("{name}.pub.pem"))).expect("public");
        assert_eq!(
            String::from_utf8(openssl(&["pkey", "-pubout"], &std::fs::read(&private).expect("key"))).expect("PEM"),
            public
        );

        let text = format!(
            "[tokens.{name}]\nalgorithm = \"HS256\"\nkey_type = \"Secret\"\nkey = \"{SIGNING_SECRET}\"\nttl = \"5m\"\n\n{snippet}"
        );
        let config = dir.config(&text);
        let token = mint(&config, &name);
        jobs.push(json!({
            "kind": "jwe", "token": token, "alg": alg, "enc": "A256GCM",
            "key": {"pem": std::fs::read_to_string(&private).expect("key")},
            "sig_alg": "HS256", "sig_key": {"oct": URL_SAFE_NO_PAD.encode(SIGNING_SECRET)},
        }));
        names.push(format!("{alg} {extra:?}"));
    }
    assert_all_ok(&joserfc(jobs), &names);
}

#[test]
fn keygen_es512_writes_a_p521_key_and_refuses_curves_for_signing_keys() {
    let dir = ConfigDir::empty();
    let out = dir.path("keys");
    let out_arg = out.to_str().expect("utf-8");
    let run = run_cli(dir.root(), &["keygen", "--alg", "ES512", "--out", out_arg, "--name", "s", "--kid", "p521"]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let jwk: Value = serde_json::from_slice(&std::fs::read(out.join("s.jwk.json")).expect("jwk")).expect("JSON");
    assert_eq!(
        (jwk["crv"].as_str(), jwk["alg"].as_str(), jwk["use"].as_str()),
        (Some("P-521"), Some("ES512"), Some("sig"))
    );
    let text = openssl(&["pkey", "-text", "-noout"], &std::fs::read(out.join("s.key.pem")).expect("key"));
    assert!(String::from_utf8_lossy(&text).contains("P-521"), "openssl sees a P-521 key");
    let config = dir.config(&stdout(&run));
    assert_eq!(crate::support::jwt::parts(&mint(&config, "s")).0["alg"], "ES512");

    for (args, message) in [
        (vec!["--alg", "ES256", "--crv", "X25519"], "--crv applies to ECDH-ES keys only"),
        (vec!["--alg", "ECDH-ES", "--crv", "P-999"], "unknown curve \"P-999\""),
        (vec!["--alg", "dir"], "dir uses a shared key exactly as long as the content key"),
        (vec!["--alg", "RSA-OAEP", "--bits", "1024"], "--bits applies to RS*/PS*/RSA-OAEP* keys only"),
    ] {
        let empty = dir.path("nothing");
        let mut full = vec!["keygen", "--out", empty.to_str().expect("utf-8"), "--name", "k"];
        full.extend(args.iter().copied());
        let run = run_cli(dir.root(), &full);
        assert_eq!(run.status.code(), Some(1), "{args:?}");
        assert!(stderr(&run).contains(message), "{args:?}: {}", stderr(&run));
        assert!(!empty.exists(), "nothing is written for {args:?}");
    }
}
