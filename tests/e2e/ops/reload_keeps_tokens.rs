//! A reload keeps serving the very same token (same `jti`, same `iat`: not re-signed) for every
//! token whose definition did not change, and signs a new one for a token that did change.

use std::time::Duration;

use serde_json::Value;

use crate::support::client::get;
use crate::support::config::{write_by_rename, ConfigDir};
use crate::support::jwt::claims;
use crate::support::sidecar::SidecarProcess;
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

fn config_text(upstream: u16, rev: u32, extra_route: bool) -> String {
    let mut text = format!(
        r#"
[proxy]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[tokens.kept_api]
algorithm = "RS256"
key_type = "RsaPem"
key_file = "keys/demo-rsa.key.pem"
ttl = "10m"
auto_claims = ["iat", "exp", "jti"]

[tokens.changed_api]
algorithm = "ES256"
key_type = "EcPem"
key_file = "keys/demo-ec.key.pem"
ttl = "10m"
auto_claims = ["iat", "exp", "jti"]

[tokens.changed_api.claims]
rev = {rev}

[[routes]]
scheme = "http"
host = "127.0.0.1"
port = {upstream}
tokens = ["kept_api", "changed_api"]
"#
    );
    if extra_route {
        text.push_str(
            r#"
[[routes]]
scheme = "http"
host = "unrelated.example"
tokens = ["kept_api"]
"#,
        );
    }
    text
}

/// The two tokens the upstream receives now: (kept_api, changed_api).
async fn tokens_served(sidecar: &SidecarProcess, upstream: &Upstream) -> (String, String) {
    let headers = [("x-kept", "{/kept_api}"), ("x-changed", "{/changed_api}")];
    let reply = get(sidecar.proxy, &upstream.url("/tokens"), &headers).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = upstream.last().expect("the request reached the upstream");
    let header = |name: &str| seen.header(name).expect("a token header").to_string();
    (header("x-kept"), header("x-changed"))
}

/// What tells one signing from another: `jti` (random per token) and `iat`.
fn signing(token: &str) -> (Value, Value) {
    let claims = claims(token);
    assert!(claims["jti"].is_string() && claims["iat"].is_number(), "no jti or iat in {claims}");
    (claims["jti"].clone(), claims["iat"].clone())
}

/// Asserts `now` is the very token `before` was: same signing, same bytes.
fn assert_same(now: &str, before: &str, what: &str) {
    assert_eq!(signing(now), signing(before), "{what}: signed anew (jti, iat)");
    assert_eq!(now, before, "{what}: a different token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_unchanged_tokens() {
    let upstream = Upstream::start().await;
    let dir = ConfigDir::with_demo_keys();
    let path = dir.write_config(&config_text(upstream.port(), 1, false));
    let sidecar = SidecarProcess::start(&path, "info").await;
    let (kept, changed) = tokens_served(&sidecar, &upstream).await;

    // 1. Only the routes change: both tokens stay exactly as they were.
    let reloads = sidecar.count_log("configuration reloaded");
    write_by_rename(&path, config_text(upstream.port(), 1, true).as_bytes());
    sidecar.hup().await;
    let applied =
        wait_until(Duration::from_secs(5), async || sidecar.count_log("configuration reloaded") > reloads).await;
    assert!(applied, "the route change was not applied; log:\n{}", sidecar.log_text());
    let (kept_after_routes, changed_after_routes) = tokens_served(&sidecar, &upstream).await;
    assert_same(&kept_after_routes, &kept, "kept_api after a reload that changed only a route");
    assert_same(&changed_after_routes, &changed, "changed_api after a reload that changed only a route");

    // 2. changed_api's claims change: it gets a new token; kept_api still the same one.
    write_by_rename(&path, config_text(upstream.port(), 2, true).as_bytes());
    sidecar.hup().await;
    let mut served = (String::new(), String::new());
    let applied = wait_until(Duration::from_secs(5), async || {
        served = tokens_served(&sidecar, &upstream).await;
        claims(&served.1)["rev"] == 2
    })
    .await;
    assert!(applied, "changed_api's new claims were not applied; log:\n{}", sidecar.log_text());
    let (kept_now, changed_now) = served;
    assert_same(&kept_now, &kept, "kept_api after a reload that changed only changed_api");
    assert_ne!(signing(&changed_now).0, signing(&changed).0, "changed_api must be signed anew");
}
