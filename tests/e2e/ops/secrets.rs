//! Invariant 2: no key material and no token value is ever logged, exposed on the admin
//! endpoints, or put in an error body. Everything a user can see after some traffic (admin
//! endpoints, error responses, the binary's whole debug log) is searched for every token the
//! upstreams received and for the private key bytes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use token_sidecar::config::Config;
use token_sidecar::server::Sidecar;
use token_sidecar::store::Mint;

use crate::support::client::{admin_get, get, Client};
use crate::support::config::ConfigDir;
use crate::support::jwt::find_jwts;
use crate::support::keys::demo_key;
use crate::support::logs::LogCapture;
use crate::support::sidecar::{FailAfterFirst, SidecarProcess};
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

/// Strings that must never be shown: the body lines of each private key PEM (those that are
/// not also part of the public key), and the HMAC secret in the encodings it could leak in.
fn key_needles() -> Vec<String> {
    let mut needles = Vec::new();
    for (private, public) in [
        ("demo-rsa.key.pem", ["demo-rsa.pub.pem", "demo-rsa.jwk.json"]),
        ("demo-ec.key.pem", ["demo-ec.pub.pem", "demo-ec.jwk.json"]),
        ("demo-ed.key.pem", ["demo-ed.pub.pem", "demo-ed.jwk.json"]),
    ] {
        let public: String = public.iter().map(|p| demo_key(p)).collect();
        for line in demo_key(private).lines() {
            let line = line.trim();
            if line.len() >= 16 && !line.starts_with("-----") && !public.contains(line) {
                needles.push(line.to_string());
            }
        }
    }
    let hs = demo_key("demo-hs.secret.b64").trim().to_string();
    let raw = STANDARD.decode(&hs).expect("base64 secret");
    needles.push(URL_SAFE_NO_PAD.encode(&raw));
    needles.push(raw.iter().map(|b| format!("{b:02x}")).collect());
    needles.push(hs);
    assert!(needles.len() > 10, "too few key needles: {needles:?}");
    needles
}

/// Each token, and its signature alone.
fn token_needles(tokens: &[String]) -> Vec<String> {
    tokens.iter().flat_map(|t| [t.clone(), t.rsplit('.').next().unwrap().to_string()]).collect()
}

fn assert_no_leak(what: &str, haystack: &str, needles: &[String]) {
    for n in needles {
        assert!(!haystack.contains(n.as_str()), "{what} contains secret material {n:?}:\n{haystack}");
    }
}

fn config_text(a: u16, b: u16, dead: u16) -> String {
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
connect_timeout = "2s"

[admin]
listen = "127.0.0.1:0"

[tokens.rs_api]
algorithm = "RS256"
key_type = "RsaPem"
key_file = "keys/demo-rsa.key.pem"
kid = "secrets-rs"
ttl = "10m"

[tokens.es_api]
algorithm = "ES256"
key_type = "EcPem"
key_file = "keys/demo-ec.key.pem"
kid = "secrets-es"
ttl = "10m"

[tokens.ed_api]
algorithm = "EdDSA"
key_type = "EdPem"
key_file = "keys/demo-ed.key.pem"
kid = "secrets-ed"
ttl = "10m"

[tokens.hs_api]
algorithm = "HS256"
key_type = "Base64Secret"
key_file = "keys/demo-hs.secret.b64"
kid = "secrets-hs"
ttl = "10m"
auto_claims = ["iat", "exp", "jti"]

[tokens.other_api]
algorithm = "RS256"
key_type = "RsaPem"
key_file = "keys/demo-rsa.key.pem"
kid = "secrets-other"
ttl = "10m"

[[routes]]
name = "secrets-a"
scheme = "http"
host = "127.0.0.1"
port = {a}
tokens = ["rs_api", "es_api", "ed_api", "hs_api"]

[[routes]]
name = "secrets-b"
scheme = "http"
host = "127.0.0.1"
port = {b}
tokens = ["other_api"]

[[routes]]
name = "secrets-dead"
scheme = "http"
host = "127.0.0.1"
port = {dead}
tokens = ["rs_api"]
"#
    )
}

/// Checks the `/tokens` document has the documented fields and no values.
fn check_tokens_doc(doc: &serde_json::Value, names: &[&str]) {
    let tokens = doc["tokens"].as_array().expect("tokens array");
    for name in names {
        let t = tokens.iter().find(|t| t["name"] == *name).unwrap_or_else(|| panic!("{name} missing in {doc}"));
        for field in ["name", "kind", "algorithm", "kid", "issued_at", "expires_at", "last_refresh_result"] {
            assert!(t.get(field).is_some(), "/tokens entry {name} has no {field}: {t}");
        }
        assert_eq!(t["kind"], "jwt");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_leak() {
    let a = Upstream::start().await;
    let b = Upstream::start().await;
    // An address nothing listens on: a port bound, then released (it cannot be otherwise).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind");
    let dir = ConfigDir::with_demo_keys();
    let path = dir.write_config(&config_text(a.port(), b.port(), dead.port()));
    let sidecar = SidecarProcess::start(&path, "debug").await;
    let mut seen_by_user: Vec<(String, String)> = Vec::new();

    // Traffic that succeeds: tokens in headers, the request target and a body.
    let mut c = Client::new(sidecar.proxy);
    let ok = [
        c.get(&a.url("/h"), &[("authorization", "Bearer {/rs_api}"), ("x-es", "{/es_api}"), ("x-ed", "{/ed_api}")])
            .await,
        c.get(&a.url("/q?access_token={/hs_api}"), &[]).await,
        c.send("POST", &a.url("/b"), &[("content-type", "application/json")], r#"{"t":"{/hs_api}","e":"{/ed_api}"}"#)
            .await,
        c.get(&b.url("/other"), &[("authorization", "Bearer {/other_api}")]).await,
    ];
    for r in ok {
        let r = r.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let post = a.requests().into_iter().find(|s| s.method == "POST").expect("the POST reached the upstream");
    assert_eq!(find_jwts(&String::from_utf8_lossy(&post.body())).len(), 2, "both body placeholders were filled");
    // Errors the sidecar answers itself.
    let errors = [
        ("403", c.get(&a.url("/h"), &[("authorization", "Bearer {/other_api}")]).await.unwrap()),
        ("502", c.get(&format!("http://{dead}/x"), &[("authorization", "Bearer {/rs_api}")]).await.unwrap()),
        ("400", c.get(&a.url("/a/../b?t={/rs_api}"), &[("authorization", "Bearer {/rs_api}")]).await.unwrap()),
    ];
    assert_eq!(errors[0].1.sidecar_error(), Some("placeholder_not_allowed"));
    assert_eq!(errors[1].1.sidecar_error(), Some("upstream_unreachable"));
    assert_eq!(errors[2].1.sidecar_error(), Some("path_not_normalised"));
    for (what, r) in &errors {
        assert_eq!(r.status.as_str(), *what, "{}", r.text());
        seen_by_user.push((format!("{what} error response"), format!("{:?}\n{}", r.headers, r.text())));
    }

    let tokens_doc = admin_get(sidecar.admin, "/tokens").await;
    check_tokens_doc(&tokens_doc.json(), &["rs_api", "es_api", "ed_api", "hs_api", "other_api"]);
    seen_by_user.push(("/tokens".into(), tokens_doc.text()));
    seen_by_user.push(("/metrics".into(), admin_get(sidecar.admin, "/metrics").await.text()));
    let jwks = admin_get(sidecar.admin, "/.well-known/jwks.json").await;
    for key in jwks.json()["keys"].as_array().expect("keys") {
        for private in ["d", "p", "q", "dp", "dq", "qi", "k", "oth"] {
            assert!(key.get(private).is_none(), "the JWKS holds private member {private}: {key}");
        }
    }
    seen_by_user.push(("/.well-known/jwks.json".into(), jwks.text()));

    // The whole log, at debug, once the process is gone.
    let log = sidecar.stop();
    assert!(log.contains("\"request\""), "the debug log has no request lines:\n{log}");
    seen_by_user.push(("the debug log".into(), log));

    let mut tokens = a.jwts();
    tokens.extend(b.jwts());
    // rs, es, ed, hs and other: one each (nothing was refreshed in this short run).
    assert!(tokens.len() >= 5, "expected the upstreams to receive 5 tokens: {tokens:?}");
    let mut needles = key_needles();
    needles.extend(token_needles(&tokens));
    for (what, text) in &seen_by_user {
        assert_no_leak(what, text, &needles);
    }
}

/// The 503 of an expired token, and the in-process log around it, leak nothing either.
#[tokio::test(flavor = "current_thread")]
async fn secrets_never_leak_when_a_token_expires() {
    let log = LogCapture::default();
    let _guard = log.install();
    let upstream = Upstream::start().await;
    let dir = ConfigDir::with_demo_keys();
    let path = dir.write_config(&format!(
        r#"
[proxy]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[tokens.expiring_secret]
algorithm = "HS256"
key_type = "Base64Secret"
key_file = "keys/demo-hs.secret.b64"
ttl = "2s"

[[routes]]
scheme = "http"
host = "127.0.0.1"
port = {port}
tokens = ["expiring_secret"]
"#,
        port = upstream.port()
    ));
    let config = Config::load(&path).unwrap();
    let minter = FailAfterFirst::new(config.tokens["expiring_secret"].clone());
    let minters: HashMap<String, Arc<dyn Mint>> = HashMap::from([("expiring_secret".to_string(), minter as _)]);
    let sidecar = Sidecar::start_with(config, &minters).await.unwrap();

    let headers = [("authorization", "Bearer {/expiring_secret}")];
    let first = get(sidecar.proxy_addr, &upstream.url("/e"), &headers).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let mut unavailable = None;
    let expired = wait_until(Duration::from_secs(6), async || {
        let r = get(sidecar.proxy_addr, &upstream.url("/e"), &headers).await;
        let done = r.status == 503;
        unavailable = Some(r);
        done
    })
    .await;
    let unavailable = unavailable.unwrap();
    assert!(expired, "the expired token did not give 503: {} {}", unavailable.status, unavailable.text());
    assert_eq!(unavailable.sidecar_error(), Some("token_unavailable"));
    assert_eq!(unavailable.json()["error"], "token_unavailable");

    let tokens_doc = admin_get(sidecar.admin_addr, "/tokens").await;
    let entry = &tokens_doc.json()["tokens"][0];
    assert_eq!(entry["last_refresh_result"], "error", "{entry}");
    assert_eq!(entry["current"], false, "{entry}");
    let seen_by_user = [
        ("503 error response", format!("{:?}\n{}", unavailable.headers, unavailable.text())),
        ("/tokens", tokens_doc.text()),
        ("/metrics", admin_get(sidecar.admin_addr, "/metrics").await.text()),
        ("/.well-known/jwks.json", admin_get(sidecar.admin_addr, "/.well-known/jwks.json").await.text()),
        ("the in-process log", log.text()),
    ];
    assert!(seen_by_user[4].1.contains("token refresh failed"), "the log capture is empty:\n{}", seen_by_user[4].1);
    let tokens = upstream.jwts();
    assert_eq!(tokens.len(), 1, "one token was minted before minting broke: {tokens:?}");
    let mut needles = key_needles();
    needles.extend(token_needles(&tokens));
    for (what, text) in &seen_by_user {
        assert_no_leak(what, text, &needles);
    }
    sidecar.shutdown().await;
}
