//! `/.well-known/jwks.json` verifies what the sidecar mints: every asymmetric token's key is
//! there under its `kid`, and HMAC secrets are not.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode_header, DecodingKey};

use crate::support::client::{admin_get, get};
use crate::support::config::ConfigDir;
use crate::support::jwt::{decode, validation};
use crate::support::sidecar::start_file;
use crate::support::upstream::Upstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks() {
    let upstream = Upstream::start().await;
    let dir = ConfigDir::with_demo_keys();
    let token = |name: &str, alg: &str, key_type: &str, key: &str| {
        format!(
            "[tokens.{name}]\nalgorithm = \"{alg}\"\nkey_type = \"{key_type}\"\nkey_file = \"keys/{key}\"\n\
             kid = \"kid-{name}\"\nttl = \"10m\"\n\n[tokens.{name}.claims]\nsub = \"{name}\"\n\n"
        )
    };
    let names = ["jwks_rs", "jwks_ps", "jwks_es", "jwks_ed"];
    let path = dir.write_config(&format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n{}{}{}{}{}\
         [[routes]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {}\ntokens = {:?}\n",
        token("jwks_rs", "RS256", "RsaPem", "demo-rsa.key.pem"),
        token("jwks_ps", "PS256", "RsaPem", "demo-rsa.key.pem"),
        token("jwks_es", "ES256", "EcPem", "demo-ec.key.pem"),
        token("jwks_ed", "EdDSA", "EdPem", "demo-ed.key.pem"),
        token("jwks_hs", "HS256", "Base64Secret", "demo-hs.secret.b64"),
        upstream.port(),
        ["jwks_rs", "jwks_ps", "jwks_es", "jwks_ed", "jwks_hs"],
    ));
    let sidecar = start_file(&path).await;

    let reply = admin_get(sidecar.admin_addr, "/.well-known/jwks.json").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers.get("content-type").unwrap(), "application/json");
    let set: JwkSet =
        serde_json::from_slice(&reply.body).unwrap_or_else(|e| panic!("not a JWK set ({e}): {}", reply.text()));
    let kids: Vec<_> = set.keys.iter().map(|k| k.common.key_id.clone().unwrap_or_default()).collect();
    assert_eq!(set.keys.len(), 4, "exactly the four asymmetric keys: {kids:?}");
    assert!(set.find("kid-jwks_hs").is_none(), "an HMAC secret must never be published: {}", reply.text());
    assert!(!reply.text().contains("\"oct\""), "no symmetric key in the JWKS: {}", reply.text());

    for name in names {
        let placeholder = format!("{{/{name}}}");
        let r = get(sidecar.proxy_addr, &upstream.url("/jwks"), &[("x-token", &placeholder)]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let token = upstream.last().unwrap().header("x-token").unwrap().to_string();
        let header = decode_header(&token).unwrap();
        let kid = header.kid.clone().unwrap_or_else(|| panic!("{name}: token has no kid"));
        assert_eq!(kid, format!("kid-{name}"));
        let jwk = set.find(&kid).unwrap_or_else(|| panic!("{name}: kid {kid} not in the JWKS"));
        let key = DecodingKey::from_jwk(jwk).unwrap_or_else(|e| panic!("{name}: unusable JWK: {e}"));
        let claims = decode(&token, &key, &validation(header.alg, None))
            .unwrap_or_else(|e| panic!("{name} ({:?}) does not verify: {e}", header.alg));
        assert_eq!(claims["sub"], name);
    }
    sidecar.shutdown().await;
}
