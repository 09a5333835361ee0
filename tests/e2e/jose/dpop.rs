//! DPoP (RFC 9449): an oauth2 token bound to a `kind = "dpop"` key. A scripted token endpoint
//! and resource server check every proof as a real one does (signature with the key in the
//! proof's header, `typ`, `htm`, `htu`, `iat`, `ath`, unique `jti`) and ask for a nonce the
//! first time; the sidecar retries with it, at the token endpoint and at the resource.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{jwk::Jwk, DecodingKey, Validation};
use serde_json::{json, Value};

use crate::support::client::{get, post, request, send};
use crate::support::config::{config, toml_str, ConfigDir};
use crate::support::idp::{Idp, Reply, Seen};
use crate::support::jwt::parts;
use crate::support::keys::keys;
use crate::support::sidecar::start;

const ACCESS_TOKEN: &str = "dpop-bound-access-token";

/// What the server side remembers: the proofs' `jti`s, the public key's thumbprint, and a
/// log of each check's outcome.
#[derive(Default)]
struct Server {
    jtis: HashSet<String>,
    keys: HashSet<String>,
    log: Vec<String>,
}

/// Checks a DPoP proof as RFC 9449 §4.3 says; `Err` names what is wrong.
fn check_proof(
    seen: &Seen,
    htu: &str,
    access_token: Option<&str>,
    nonce: Option<&str>,
    server: &mut Server,
) -> Result<(), String> {
    let proof = seen.header("dpop").ok_or("no DPoP header")?;
    let (header, claims) = parts(proof);
    if header["typ"] != "dpop+jwt" {
        return Err(format!("typ {}", header["typ"]));
    }
    let jwk: Jwk = serde_json::from_value(header["jwk"].clone()).map_err(|e| format!("jwk: {e}"))?;
    if header["jwk"].get("d").is_some() {
        return Err("private key in the proof".into());
    }
    let alg = header["alg"].as_str().ok_or("no alg")?.parse().map_err(|_| "alg")?;
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("key: {e}"))?;
    jsonwebtoken::decode::<Value>(proof, &key, &validation).map_err(|e| format!("signature: {e}"))?;
    if claims["htm"] != seen.method.as_str() {
        return Err(format!("htm {} for {}", claims["htm"], seen.method));
    }
    if claims["htu"] != htu {
        return Err(format!("htu {} for {htu}", claims["htu"]));
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let iat = claims["iat"].as_u64().ok_or("no iat")?;
    if iat > now + 5 || iat + 60 < now {
        return Err(format!("iat {iat} is not recent ({now})"));
    }
    let expected_ath = access_token
        .map(|t| URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, t.as_bytes())));
    if claims.get("ath").and_then(Value::as_str) != expected_ath.as_deref() {
        return Err(format!("ath {} (expected {expected_ath:?})", claims["ath"]));
    }
    let jti = claims["jti"].as_str().ok_or("no jti")?.to_string();
    if !server.jtis.insert(jti.clone()) {
        return Err(format!("jti {jti} replayed"));
    }
    server.keys.insert(header["jwk"].to_string());
    if claims.get("nonce").and_then(Value::as_str) != nonce {
        return Err("use_dpop_nonce".into());
    }
    Ok(())
}

#[tokio::test]
async fn dpop_proofs_at_the_token_endpoint_and_the_resource_with_nonce_retries() {
    let idp = Idp::start().await;
    let token_url = idp.url("/oauth2/v1/token");
    let server = Arc::new(Mutex::new(Server::default()));
    let state = Arc::clone(&server);
    let port = idp.port();
    idp.answer_with(move |seen| {
        let mut s = state.lock().unwrap();
        let origin = format!("http://127.0.0.1:{port}");
        if seen.path() == "/oauth2/v1/token" {
            match check_proof(seen, &format!("{origin}/oauth2/v1/token"), None, Some("as-nonce-1"), &mut s) {
                Ok(()) => {
                    s.log.push("token: ok".into());
                    Reply::ok(json!({"access_token": ACCESS_TOKEN, "token_type": "DPoP", "expires_in": 3600}))
                }
                Err(e) if e == "use_dpop_nonce" => {
                    s.log.push("token: nonce asked".into());
                    Reply::oauth_error(400, "use_dpop_nonce", "Authorization server requires nonce in DPoP proof")
                        .with_header("dpop-nonce", "as-nonce-1")
                }
                Err(e) => {
                    s.log.push(format!("token: {e}"));
                    Reply::oauth_error(400, "invalid_dpop_proof", &e)
                }
            }
        } else {
            if seen.header("authorization") != Some(&format!("DPoP {ACCESS_TOKEN}")) {
                s.log.push(format!("resource: authorization {:?}", seen.header("authorization")));
                return Reply::status(401);
            }
            let htu = format!("{origin}{}", seen.path());
            match check_proof(seen, &htu, Some(ACCESS_TOKEN), Some("rs-nonce-7"), &mut s) {
                Ok(()) => {
                    s.log.push(format!("resource {} {}: ok", seen.method, seen.path()));
                    Reply::ok(json!({"ok": true}))
                }
                Err(e) if e == "use_dpop_nonce" => {
                    s.log.push("resource: nonce asked".into());
                    Reply::status(401)
                        .with_header("www-authenticate", "DPoP error=\"use_dpop_nonce\", error_description=\"Resource server requires nonce in DPoP proof\"")
                        .with_header("dpop-nonce", "rs-nonce-7")
                }
                Err(e) => {
                    s.log.push(format!("resource: {e}"));
                    Reply::status(401).with_header("www-authenticate", "DPoP error=\"invalid_dpop_proof\"")
                }
            }
        }
    });
    let text = config(
        "",
        &format!(
            "[tokens.okta_dpop]\nkind = \"dpop\"\nalgorithm = \"ES256\"\nkey_type = \"EcPem\"\nkey = {key}\n\n\
             [tokens.okta]\nkind = \"oauth2\"\ntoken_url = \"{token_url}\"\ngrant = \"client_credentials\"\n\
             client_id = \"0oa-service-app\"\ndpop = \"okta_dpop\"\nscope = \"okta.users.read\"\n\
             response = {{ token_type = \"DPoP\" }}\n\n\
             [[routes]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {port}\npath_prefix = \"/api\"\ntokens = [\"okta\"]\n\
             [routes.set_headers]\nAuthorization = \"DPoP {{/okta}}\"\n",
            key = toml_str(&keys().ec256.pkcs8_pem),
        ),
    );
    let sidecar = start(&text).await;
    let first = get(sidecar.proxy_addr, &idp.url("/api/v1/users?limit=2"), &[]).await;
    assert_eq!(first.status, 200, "{}; server log: {:?}", first.text(), server.lock().unwrap().log);
    let second = post(sidecar.proxy_addr, &idp.url("/api/v1/groups"), &[], r#"{"name":"g"}"#).await;
    assert_eq!(second.status, 200, "{}; server log: {:?}", second.text(), server.lock().unwrap().log);
    // A new exchange uses the authorization server's nonce, kept apart from the resource
    // server's although both are at one origin (as at Okta).
    let admin = sidecar.admin_addr.to_string();
    let refreshed = send(sidecar.admin_addr, request("POST", "/tokens/okta/refresh", &[("host", &admin)], "")).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
    {
        let s = server.lock().unwrap();
        assert_eq!(
            s.log,
            [
                "token: nonce asked",
                "token: ok",
                "resource: nonce asked",
                "resource GET /api/v1/users: ok",
                "resource POST /api/v1/groups: ok",
                "token: ok",
            ],
            "the second resource request and the second exchange carry their kept nonces at once"
        );
        assert_eq!(s.keys.len(), 1, "every proof carries the same public key");
        assert_eq!(s.jtis.len(), 6, "every proof has its own jti");
    }
    // The resource retry sent the body again.
    let groups = idp.requests().into_iter().filter(|r| r.path() == "/api/v1/groups").collect::<Vec<_>>();
    assert_eq!(groups.last().map(|r| r.body_text()), Some(r#"{"name":"g"}"#.to_string()));
    sidecar.shutdown().await;
}

#[test]
fn a_dpop_key_is_never_bound_or_symmetric() {
    let dir = ConfigDir::empty();
    let key = format!(
        "[tokens.k]\nkind = \"dpop\"\nalgorithm = \"ES256\"\nkey_type = \"EcPem\"\nkey = {}\n",
        toml_str(&keys().ec256.pkcs8_pem)
    );
    let errors = dir.errors(&format!("{key}\n[[routes]]\nhost = \"api.example.com\"\ntokens = [\"k\"]\n"));
    assert!(
        errors.iter().any(|e| e.key_path == "routes[0].tokens" && e.message.contains("never written into a request")),
        "{errors:?}"
    );
    let errors = dir.errors("[tokens.k]\nkind = \"dpop\"\nalgorithm = \"HS256\"\nkey_type = \"Secret\"\nkey = \"s\"\n");
    assert!(errors.iter().any(|e| e.message.contains("asymmetric key")), "{errors:?}");
    let errors = dir.errors(&format!("{key}ttl = \"5m\"\n"));
    assert_eq!(errors[0].key_path, "tokens.k.ttl");
    let errors = dir.errors("[tokens.o]\nkind = \"oauth2\"\ntoken_url = \"https://idp.example/t\"\ngrant = \"client_credentials\"\ndpop = \"missing\"\n");
    assert!(errors.iter().any(|e| e.key_path == "tokens.o.dpop"), "{errors:?}");
}
