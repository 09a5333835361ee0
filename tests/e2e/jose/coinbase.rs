//! Coinbase CDP: an ES256 (or EdDSA) JWT per request with `uri` = `"METHOD host/path"`, a
//! random header `nonce` and a unique `jti`, expiring two minutes after signing; verified with
//! the public key as Coinbase would.

use std::collections::HashSet;

use crate::support::client::get;
use crate::support::config::{config, route, toml_str};
use crate::support::jwt::{algorithm, decoding_key, parts, validation, verify};
use crate::support::keys::keys;
use crate::support::sidecar::start;
use crate::support::upstream::Upstream;

fn coinbase_token(name: &str, alg: &str, key_type: &str, pem: &str) -> String {
    format!(
        "[tokens.{name}]\nalgorithm = \"{alg}\"\nkey_type = \"{key_type}\"\nkey = {key}\nkid = \"organizations/org/apiKeys/key-1\"\n\
         ttl = \"2m\"\nper_request = true\nauto_claims = [\"nbf\", \"exp\", \"jti\"]\n\
         claims = {{ iss = \"cdp\", sub = \"organizations/org/apiKeys/key-1\" }}\n\n\
         [tokens.{name}.request_claims]\nuri = \"uri_coinbase\"\n\n[tokens.{name}.request_header]\nnonce = \"nonce\"\n\n",
        key = toml_str(pem)
    )
}

#[tokio::test]
async fn every_request_gets_its_own_uri_nonce_and_jti() {
    let k = keys();
    let upstream = Upstream::start().await;
    let text = config(
        "",
        &format!(
            "{}{}{}",
            coinbase_token("cb_es256", "ES256", "EcPem", &k.ec256.pkcs8_pem),
            coinbase_token("cb_eddsa", "EdDSA", "EdPem", &k.ed.pkcs8_pem),
            route(upstream.port(), &["cb_es256", "cb_eddsa"], ""),
        ),
    );
    let sidecar = start(&text).await;
    let paths = [
        "/api/v3/brokerage/accounts",
        "/api/v3/brokerage/orders/historical/batch?limit=5",
        "/api/v3/brokerage/accounts",
    ];
    for (token, _) in [("cb_es256", ()), ("cb_eddsa", ())] {
        for path in paths {
            let auth = format!("Bearer {{/{token}}}");
            get(sidecar.proxy_addr, &upstream.url(path), &[("authorization", &auth)]).await.assert_upstream_ok();
        }
    }
    let host = format!("127.0.0.1:{}", upstream.port());
    let mut nonces = HashSet::new();
    let mut jtis = HashSet::new();
    for (i, r) in upstream.requests().iter().enumerate() {
        let (alg, public) = if i < paths.len() { ("ES256", &k.ec256.public_pem) } else { ("EdDSA", &k.ed.public_pem) };
        let token = r.token();
        let claims = verify(token, &decoding_key(algorithm(alg), public), &validation(algorithm(alg), None));
        let (header, _) = parts(token);
        assert_eq!(header["alg"], alg);
        assert_eq!(header["kid"], "organizations/org/apiKeys/key-1");
        let expected_uri = format!("GET {host}{}", r.path());
        assert_eq!(claims["uri"], expected_uri.as_str(), "uri is METHOD host/path, without the query");
        assert_eq!(claims["exp"].as_u64().unwrap() - claims["nbf"].as_u64().unwrap(), 120, "two minutes");
        let nonce = header["nonce"].as_str().expect("header nonce").to_string();
        assert_eq!(nonce.len(), 32, "16 random bytes in hex: {nonce}");
        assert!(nonces.insert(nonce), "a nonce is never reused");
        assert!(jtis.insert(claims["jti"].as_str().expect("jti").to_string()), "a jti is never reused");
    }
    assert_eq!(nonces.len(), 2 * paths.len());
    sidecar.shutdown().await;
}
