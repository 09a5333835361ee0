//! ES512 (P-521): tokens signed with keys in every form (SEC1 and PKCS#8, PEM and DER, a
//! JWK) verify with the openssl CLI, and the admin JWKS publishes the key as `crv: "P-521"`.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::json;

use super::check::{jose_keys, joserfc, to_jwk};
use crate::support::client::{admin_get, get};
use crate::support::config::{config, route, toml_str, ConfigDir};
use crate::support::jwt::parts;
use crate::support::keys::openssl;
use crate::support::sidecar::start_config;
use crate::support::upstream::Upstream;

/// A JWS `r || s` signature (66 bytes each for P-521) as the DER `ECDSA-Sig-Value` openssl
/// reads.
fn der_signature(raw: &[u8]) -> Vec<u8> {
    let integer = |half: &[u8]| {
        let trimmed: Vec<u8> = half.iter().copied().skip_while(|b| *b == 0).collect();
        let mut body = if trimmed.first().is_none_or(|b| b & 0x80 != 0) { vec![0] } else { Vec::new() };
        body.extend(trimmed);
        let mut out = vec![0x02, body.len() as u8];
        out.extend(body);
        out
    };
    let (r, s) = raw.split_at(raw.len() / 2);
    let body = [integer(r), integer(s)].concat();
    let mut out = vec![0x30];
    if body.len() >= 0x80 {
        out.push(0x81);
    }
    out.push(body.len() as u8);
    out.extend(body);
    out
}

/// `openssl dgst -sha512 -verify PUBLIC -signature SIG` over the signing input.
fn openssl_verifies(token: &str, public_pem: &str) -> bool {
    let dir = tempfile::tempdir().expect("temp dir");
    let (input, signature) = token.rsplit_once('.').expect("three parts");
    let raw = URL_SAFE_NO_PAD.decode(signature).expect("base64url signature");
    assert_eq!(raw.len(), 132, "an ES512 signature is r || s, 66 bytes each");
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("pub.pem"), public_pem).expect("write");
    std::fs::write(path("sig.der"), der_signature(&raw)).expect("write");
    std::fs::write(path("data"), input).expect("write");
    let out = crate::support::client::command("openssl")
        .args(["dgst", "-sha512", "-verify"])
        .arg(path("pub.pem"))
        .arg("-signature")
        .arg(path("sig.der"))
        .arg(path("data"))
        .output()
        .expect("openssl");
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK")
}

#[tokio::test]
async fn es512_tokens_from_every_key_form_verify_with_openssl_and_are_published_as_p521() {
    let j = jose_keys();
    let sec1_der = STANDARD.encode(openssl(&["ec", "-outform", "DER"], j.ec521_sec1.as_bytes()));
    let pkcs8_der = STANDARD.encode(openssl(&["pkey", "-outform", "DER"], j.ec521_sec1.as_bytes()));
    let jwk = to_jwk(&j.ec521_pkcs8, true).to_string();
    let dir = ConfigDir::empty();
    dir.write("ec521.pem", &j.ec521_sec1);
    std::env::set_var("JOSE_E2E_ES512_SEC1_DER", &sec1_der);
    let forms = [
        ("sec1_pem_file", "EcPem", "key_file = \"ec521.pem\"".to_string()),
        ("pkcs8_pem_inline", "EcPem", format!("key = {}", toml_str(&j.ec521_pkcs8))),
        ("sec1_der_env", "EcDer", "key_env = \"JOSE_E2E_ES512_SEC1_DER\"".to_string()),
        ("pkcs8_der_inline", "EcDer", format!("key = \"{pkcs8_der}\"")),
        ("jwk_inline", "Jwk", format!("key = {}", toml_str(&jwk))),
    ];
    let upstream = Upstream::start().await;
    let mut text = String::new();
    for (name, key_type, key_line) in &forms {
        text.push_str(&format!(
            "[tokens.{name}]\nalgorithm = \"ES512\"\nkey_type = \"{key_type}\"\n{key_line}\nkid = \"p521-{name}\"\nttl = \"10m\"\n\
             claims = {{ sub = \"{name}\" }}\n\n"
        ));
    }
    let names: Vec<&str> = forms.iter().map(|(n, _, _)| *n).collect();
    let config = dir.config(&config("", &format!("{text}{}", route(upstream.port(), &names, ""))));
    let sidecar = start_config(config).await;
    let headers: Vec<(String, String)> = names.iter().map(|n| (format!("x-{n}"), format!("{{/{n}}}"))).collect();
    let headers: Vec<(&str, &str)> = headers.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    get(sidecar.proxy_addr, &upstream.url("/es512"), &headers).await.assert_upstream_ok();
    let received = upstream.single();

    let jwks = admin_get(sidecar.admin_addr, "/.well-known/jwks.json").await.json();
    let mut jobs = Vec::new();
    for name in &names {
        let token = received.header(&format!("x-{name}")).expect("token received");
        let (header, claims) = parts(token);
        assert_eq!(header["alg"], "ES512", "{name}");
        assert_eq!(claims["sub"], *name);
        assert!(openssl_verifies(token, &j.ec521_public), "{name}: openssl does not verify the ES512 signature");
        let mut tampered = token.to_string();
        tampered.replace_range(tampered.len() - 3.., "AAA");
        assert!(!openssl_verifies(&tampered, &j.ec521_public), "{name}: the check must be able to fail");

        let kid = format!("p521-{name}");
        let jwk = jwks["keys"].as_array().expect("keys").iter().find(|k| k["kid"] == kid.as_str()).cloned();
        let jwk = jwk.unwrap_or_else(|| panic!("{name}: no JWK with kid {kid} in {jwks}"));
        assert_eq!((jwk["kty"].as_str(), jwk["crv"].as_str()), (Some("EC"), Some("P-521")), "{jwk}");
        assert_eq!((jwk["alg"].as_str(), jwk["use"].as_str()), (Some("ES512"), Some("sig")), "{jwk}");
        assert!(jwk.get("d").is_none(), "the JWKS publishes no private key: {jwk}");
        jobs.push(json!({"kind": "jws", "token": token, "alg": "ES512", "key": {"jwk": jwk}}));
    }
    // The published JWK verifies the tokens in an independent implementation too.
    for (result, name) in joserfc(jobs).iter().zip(&names) {
        assert_eq!(result["ok"], true, "{name}: {result}");
    }
    sidecar.shutdown().await;
}
