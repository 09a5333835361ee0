//! Token exchange (`kind = "oauth2"`): the sidecar trades an assertion or client credentials at
//! a token endpoint (the mock IdP of `support::idp`) for an access token, and the agent's
//! `{/NAME}` placeholders get that access token. Each module covers one thing a user relies on:
//! what reaches the token endpoint, how the answer is read, what happens when the endpoint
//! fails or the upstream rejects the token, the admin refresh, reloads, and secrecy.

mod admin_refresh;
mod client_auth;
mod config_errors;
mod custom;
mod expose;
mod failures;
mod grants;
mod leaks;
mod provider_flow;
mod reload;
mod response;
mod retry_401;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::support::client::{admin_get, get, post, Reply};
use crate::support::config::toml_str;
use crate::support::idp::Idp;
use crate::support::jwt::unix_secs;
use crate::support::keys::demo_key_path;
use crate::support::wait::wait_until;

/// How long a test waits for something that should happen promptly (an exchange, a reload).
pub const PROMPT: Duration = Duration::from_secs(10);

/// `[tokens.NAME]` with `kind = "oauth2"` exchanging at `path` of `idp`; `body` adds keys and
/// sub-tables (`[tokens.NAME.response]` ...).
pub fn oauth2(name: &str, idp: &Idp, path: &str, body: &str) -> String {
    format!("\n[tokens.{name}]\nkind = \"oauth2\"\ntoken_url = {}\n{body}\n\n", toml_str(&idp.url(path)))
}

/// `[tokens.NAME]` with `kind = "secret"` holding `value` inline.
pub fn secret(name: &str, value: &str) -> String {
    format!("\n[tokens.{name}]\nkind = \"secret\"\nkey = {}\n\n", toml_str(value))
}

/// An RS256 JWT `name` signed with the demo key (kid `demo-rsa-2026`), claims `iss =
/// "e2e-tests"`, `sub = NAME` and `aud`, with `iat`, `exp` and a random `jti` on every signing
/// (so no two assertions are alike).
pub fn assertion_jwt(name: &str, aud: &str) -> String {
    format!(
        "\n[tokens.{name}]\nkind = \"jwt\"\nalgorithm = \"RS256\"\nkey_type = \"RsaPem\"\nkey_file = {key}\n\
         kid = \"demo-rsa-2026\"\nttl = \"5m\"\nauto_claims = [\"iat\", \"exp\", \"jti\"]\n\
         claims = {{ iss = \"e2e-tests\", sub = \"{name}\", aud = {aud} }}\n\n",
        key = toml_str(&demo_key_path("demo-rsa.key.pem").to_string_lossy()),
        aud = toml_str(aud),
    )
}

/// The `/tokens` entry of token `name`.
pub async fn status(admin: SocketAddr, name: &str) -> Value {
    let reply = admin_get(admin, "/tokens").await;
    assert_eq!(reply.status, 200, "/tokens: {}", reply.text());
    let all = reply.json();
    all["tokens"]
        .as_array()
        .and_then(|tokens| tokens.iter().find(|t| t["name"] == name).cloned())
        .unwrap_or_else(|| panic!("/tokens has no entry {name:?}: {all}"))
}

/// Waits until token `name`'s `/tokens` entry satisfies `pred` and returns it; panics with the
/// last entry seen after `deadline`.
pub async fn wait_status(admin: SocketAddr, name: &str, deadline: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let held = wait_until(deadline, async || {
        last = status(admin, name).await;
        pred(&last)
    })
    .await;
    assert!(held, "token {name:?} did not reach the expected state within {deadline:?}; /tokens entry: {last}");
    last
}

/// The `last_error` of token `name` once there is one.
pub async fn wait_error(admin: SocketAddr, name: &str) -> String {
    let entry = wait_status(admin, name, PROMPT, |s| s["last_error"].is_string()).await;
    entry["last_error"].as_str().unwrap_or_default().to_string()
}

/// `/readyz` status code.
pub async fn readyz(admin: SocketAddr) -> u16 {
    admin_get(admin, "/readyz").await.status.as_u16()
}

/// `POST /tokens/NAME/refresh` on the admin listener.
pub async fn admin_refresh(admin: SocketAddr, name: &str) -> Reply {
    post(admin, &format!("/tokens/{name}/refresh"), &[("host", &admin.to_string())], "").await
}

/// GET `url` through the proxy with `Authorization: Bearer {/NAME}`.
pub async fn get_with(proxy: SocketAddr, url: &str, name: &str) -> Reply {
    get(proxy, url, &[("authorization", &format!("Bearer {{/{name}}}"))]).await
}

/// `expires_at` of a `/tokens` entry, in unix seconds.
pub fn expires_at(entry: &Value) -> u64 {
    entry["expires_at"].as_u64().unwrap_or_else(|| panic!("no numeric expires_at: {entry}"))
}

/// Asserts `expires_at` is `lifetime` after some moment in `[from, to]` (whole seconds, so one
/// second of rounding either way).
pub fn assert_lifetime(entry: &Value, from: SystemTime, to: SystemTime, lifetime: u64) {
    let at = expires_at(entry) as f64;
    let (low, high) = (unix_secs(from).floor() + lifetime as f64 - 1.0, unix_secs(to).ceil() + lifetime as f64 + 1.0);
    assert!(
        (low..=high).contains(&at),
        "expires_at {at} is not {lifetime} s after the exchange (expected within [{low}, {high}]): {entry}"
    );
}
