//! `token-sidecar keygen` writes keys that the printed config snippet can use at once, whose
//! tokens verify with the written public PEM and JWK; and `sign` prints a verifiable token.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::DecodingKey;
use serde_json::Value;

use crate::support::client::{command, stderr, stdout};
use crate::support::config::{mint, ConfigDir};
use crate::support::jwt::{algorithm, decoding_key, parts, validation, verify};
use crate::support::keys::{demo_key, demo_key_path, openssl, repo_root};
use crate::support::sidecar::run_cli;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

fn snapshot(files: &[&Path]) -> Vec<(Vec<u8>, std::time::SystemTime)> {
    files
        .iter()
        .map(|f| (std::fs::read(f).expect("read"), std::fs::metadata(f).expect("metadata").modified().expect("mtime")))
        .collect()
}

/// Runs keygen for `alg`, builds the printed snippet as a config, mints and verifies; then
/// checks that a second run refuses to overwrite anything.
fn keygen_round_trip(alg_name: &str, bits: Option<&str>) {
    let dir = ConfigDir::empty();
    let out_dir = dir.path("keys");
    let out_arg = out_dir.to_str().expect("utf-8 path");
    let mut args = vec!["keygen", "--alg", alg_name, "--out", out_arg, "--name", "k", "--kid", "kid1"];
    if let Some(bits) = bits {
        args.extend(["--bits", bits]);
    }
    let out = run_cli(dir.root(), &args);
    assert_eq!(out.status.code(), Some(0), "keygen {alg_name}: {}", stderr(&out));
    let snippet = stdout(&out);
    let alg = algorithm(alg_name);
    let hmac = alg_name.starts_with("HS");

    // The snippet is a complete [tokens.k] table that names the new key.
    let table: toml::Table = toml::from_str(&snippet).expect("the snippet is TOML");
    let token = &table["tokens"]["k"];
    assert_eq!(token["algorithm"].as_str(), Some(alg_name), "{snippet}");
    assert_eq!(token["kid"].as_str(), Some("kid1"), "{snippet}");
    let private = out_dir.join(if hmac { "k.secret.b64" } else { "k.key.pem" });
    assert_eq!(Path::new(token["key_file"].as_str().expect("key_file")), private, "{snippet}");
    let expected_type = match alg_name {
        "HS256" => "Base64Secret",
        "ES256" | "ES384" => "EcPem",
        "EdDSA" => "EdPem",
        _ => "RsaPem",
    };
    assert_eq!(token["key_type"].as_str(), Some(expected_type), "{snippet}");
    for f in if hmac { vec!["k.secret.b64"] } else { vec!["k.key.pem", "k.pub.pem", "k.jwk.json"] } {
        let path = out_dir.join(f);
        assert!(stderr(&out).contains(&format!("wrote {}", path.display())), "{}", stderr(&out));
    }

    // Private material is 0600 from the start.
    assert_eq!(mode(&private), 0o600, "{}", private.display());

    // Mint through the printed config, verify independently.
    let config = dir.config(&snippet);
    let jwt = mint(&config, "k");
    let (header, _) = parts(&jwt);
    assert_eq!(header["kid"], "kid1");
    assert_eq!(header["alg"], alg_name);

    if hmac {
        let secret = STANDARD.decode(std::fs::read_to_string(&private).expect("secret").trim()).expect("base64");
        assert_eq!(secret.len(), 32, "HS256 gets a 256-bit secret");
        verify(&jwt, &DecodingKey::from_secret(&secret), &validation(alg, None));
        assert!(!out_dir.join("k.jwk.json").exists(), "a secret is not published as a JWK");
    } else {
        let public_path = out_dir.join("k.pub.pem");
        let public_pem = std::fs::read_to_string(&public_path).expect("public PEM");
        verify(&jwt, &decoding_key(alg, &public_pem), &validation(alg, None));

        // openssl reads the private key, and derives exactly the public key that was written.
        let private_pem = std::fs::read(&private).expect("private PEM");
        assert_eq!(String::from_utf8(openssl(&["pkey", "-pubout"], &private_pem)).expect("PEM"), public_pem);

        let jwk_text = std::fs::read_to_string(out_dir.join("k.jwk.json")).expect("JWK file");
        let jwk_json: Value = serde_json::from_str(&jwk_text).expect("JWK JSON");
        assert_eq!(jwk_json["kid"], "kid1");
        assert_eq!(jwk_json["use"], "sig");
        assert_eq!(jwk_json["alg"], alg_name);
        assert!(jwk_json.get("d").is_none(), "the JWK file holds no private key: {jwk_text}");
        let jwk: Jwk = serde_json::from_str(&jwk_text).expect("JWK");
        verify(&jwt, &DecodingKey::from_jwk(&jwk).expect("decoding key from JWK"), &validation(alg, None));
        if let Some(n) = jwk_json["n"].as_str() {
            let bits: usize = bits.map_or(2048, |b| b.parse().expect("bits"));
            assert_eq!(URL_SAFE_NO_PAD.decode(n).expect("base64url n").len() * 8, bits, "RSA modulus size");
        }
        assert_eq!(mode(&public_path) & 0o600, 0o600);
    }

    // A second run into the same folder fails and touches nothing.
    let written: Vec<_> = std::fs::read_dir(&out_dir).expect("out dir").map(|e| e.expect("entry").path()).collect();
    let paths: Vec<&Path> = written.iter().map(|p| p.as_path()).collect();
    let before = snapshot(&paths);
    let again = run_cli(dir.root(), &args);
    assert_eq!(again.status.code(), Some(1), "keygen must not overwrite: {}", stdout(&again));
    assert!(stderr(&again).contains("already exists; refusing to overwrite a key"), "{}", stderr(&again));
    assert_eq!(stdout(&again), "");
    assert_eq!(snapshot(&paths), before, "existing key files are unchanged");
    assert_eq!(std::fs::read_dir(&out_dir).expect("out dir").count(), written.len(), "no new files");
    assert_eq!(mode(&private), 0o600);
}

#[test]
fn keygen_rs256() {
    keygen_round_trip("RS256", None);
}

#[test]
fn keygen_rs256_3072_bits() {
    keygen_round_trip("RS256", Some("3072"));
}

#[test]
fn keygen_es256() {
    keygen_round_trip("ES256", None);
}

#[test]
fn keygen_es384() {
    keygen_round_trip("ES384", None);
}

#[test]
fn keygen_eddsa() {
    keygen_round_trip("EdDSA", None);
}

#[test]
fn keygen_hs256() {
    keygen_round_trip("HS256", None);
}

#[test]
fn keygen_rejects_bad_arguments_without_writing() {
    let dir = ConfigDir::empty();
    let out_dir = dir.path("keys");
    let out_arg = out_dir.to_str().expect("utf-8 path");
    for (args, message) in [
        (
            vec!["--alg", "RS256", "--bits", "1024"],
            "--bits applies to RS*/PS*/RSA-OAEP* keys only, and must be 2048, 3072 or 4096",
        ),
        (
            vec!["--alg", "ES256", "--bits", "2048"],
            "--bits applies to RS*/PS*/RSA-OAEP* keys only, and must be 2048, 3072 or 4096",
        ),
        (vec!["--alg", "RS999"], "unknown algorithm \"RS999\" (expected one of HS256, "),
    ] {
        let mut full = vec!["keygen", "--out", out_arg, "--name", "k"];
        full.extend(args.iter().copied());
        let out = run_cli(dir.root(), &full);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).starts_with(message), "{args:?}: {}", stderr(&out));
        assert!(!out_dir.exists(), "nothing is written for {args:?}");
    }
}

#[test]
fn sign_prints_a_token_for_the_shipped_config() {
    let out = run_cli(repo_root(), &["sign", "demo_api_jwt", "--config", "sidecar.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = stdout(&out);
    let token = printed.strip_suffix('\n').expect("one line");
    assert!(!token.contains('\n'));

    let public_pem = demo_key("demo-rsa.pub.pem");
    let alg = algorithm("RS256");
    let mut v = validation(alg, Some("echo.demo"));
    v.set_issuer(&["token-sidecar-demo"]);
    v.sub = Some("agent-function".into());
    let claims = verify(token, &decoding_key(alg, &public_pem), &v);
    assert_eq!(claims["scope"], "read write");
    assert_eq!(claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat"), 15 * 60);
    let (header, _) = parts(token);
    assert_eq!(header["kid"], "demo-rsa-2026");

    let out = run_cli(repo_root(), &["sign", "nope", "--config", "sidecar.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "no token named \"nope\" in sidecar.toml (defined: crm_jwt, demo_api_jwt)\n");
    assert_eq!(stdout(&out), "");
}

/// Token names may contain `.` (they are written as `{/acme.v2}`), so the snippet's table
/// header must quote the name: `[tokens."acme.v2"]`, not `[tokens.acme.v2]`.
#[test]
fn keygen_snippet_works_for_a_dotted_token_name() {
    let dir = ConfigDir::empty();
    let out_dir = dir.path("keys");
    let out = run_cli(
        dir.root(),
        &["keygen", "--alg", "ES256", "--out", out_dir.to_str().expect("utf-8"), "--name", "acme.v2"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let config = dir.config(&stdout(&out));
    assert!(config.tokens.contains_key("acme.v2"), "{:?}", config.tokens.keys().collect::<Vec<_>>());
}

/// The snippet must be valid TOML whatever the folder or kid: `"` and `\` need escaping.
#[test]
fn keygen_snippet_escapes_paths_and_kid() {
    let dir = ConfigDir::empty();
    let out_dir = dir.path("my \"keys\"\\2026");
    let out = run_cli(
        dir.root(),
        &["keygen", "--alg", "EdDSA", "--out", out_dir.to_str().expect("utf-8"), "--name", "k", "--kid", "k\"1"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let config = dir.config(&stdout(&out));
    assert_eq!(config.tokens["k"].kid(), Some("k\"1"));
    assert_eq!(config.tokens["k"].key_file(), Some(out_dir.join("k.key.pem").as_path()));
}

/// The printed token verifies with a tool that shares no code with the sidecar: the
/// `openssl` command checks the RS256 signature over `header.payload` with the demo public key.
#[test]
fn sign_output_verifies_with_openssl() {
    let out = run_cli(repo_root(), &["sign", "demo_api_jwt", "--config", "sidecar.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let token = stdout(&out).trim().to_string();
    let (signing_input, signature) = token.rsplit_once('.').expect("three parts");
    let dir = ConfigDir::empty();
    let input_path = dir.root().join("input");
    let sig_path = dir.root().join("sig");
    std::fs::write(&input_path, signing_input).unwrap();
    std::fs::write(&sig_path, URL_SAFE_NO_PAD.decode(signature).expect("base64url signature")).unwrap();
    let public = demo_key_path("demo-rsa.pub.pem");
    let openssl_verify = || {
        command("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&public)
            .arg("-signature")
            .arg(&sig_path)
            .arg(&input_path)
            .output()
            .expect("openssl runs")
    };
    let verified = openssl_verify();
    assert!(verified.status.success(), "openssl: {}", String::from_utf8_lossy(&verified.stdout));
    assert_eq!(String::from_utf8_lossy(&verified.stdout).trim(), "Verified OK");
    // A flipped signature byte must fail, or the check proves nothing.
    let mut bad = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bad[0] ^= 1;
    std::fs::write(&sig_path, bad).unwrap();
    assert!(!openssl_verify().status.success());
}
