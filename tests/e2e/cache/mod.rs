//! The function-result cache (issue 14), end to end: a real sidecar (the binary where metrics
//! or memory are asserted, in process elsewhere), a scripted origin that counts what reaches
//! it, and real clients (curl, Python requests, hyper).
//!
//! Every ttl here is short and real; waits are polls with a deadline, never guesses.

mod basics;
mod budget;
mod coalescing;
mod https;
mod isolation;
mod purge;
mod semantics;
mod stale;
mod tokens;

use std::net::SocketAddr;

use crate::support::client::{admin_get, Reply};

/// A plain-HTTP route named `name` to `127.0.0.1:port` binding `tokens`, with `keys` (plain
/// route keys such as `redact_responses = true`) and a `[routes.cache]` table holding `cache`.
pub fn cached_route(name: &str, port: u16, tokens: &[&str], keys: &str, cache: &str) -> String {
    let tokens: Vec<String> = tokens.iter().map(|t| format!("{t:?}")).collect();
    format!(
        "\n[[routes]]\nname = \"{name}\"\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {port}\ntokens = [{}]\n{keys}\n\
         [routes.cache]\n{cache}\n\n",
        tokens.join(", ")
    )
}

/// The `x-token-sidecar-cache` header of a reply (`""` when absent).
pub fn cache_state(reply: &Reply) -> &str {
    reply.headers.get("x-token-sidecar-cache").and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Asserts status 200, `body` and the cache state of a reply.
#[track_caller]
pub fn assert_reply(reply: &Reply, body: &str, state: &str) {
    assert_eq!(reply.status, 200, "body: {}", reply.text());
    assert_eq!((reply.text().as_str(), cache_state(reply)), (body, state), "(body, x-token-sidecar-cache)");
}

/// `GET /cache` on the admin listener.
pub async fn cache_report(admin: SocketAddr) -> serde_json::Value {
    let reply = admin_get(admin, "/cache").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// Entries held for route `name`, from `GET /cache`.
pub async fn entries_of(admin: SocketAddr, name: &str) -> u64 {
    let report = cache_report(admin).await;
    let routes = report["routes"].as_array().expect("routes");
    let route = routes.iter().find(|r| r["route"] == name).unwrap_or_else(|| panic!("no route {name} in {report}"));
    route["entries"].as_u64().expect("entries")
}
