//! An upstream's 401 to a shared token: the sidecar that got it deletes the shared entry (if
//! it still holds that token) before it exchanges, so no sidecar picks the revoked token up
//! from Redis, even when that renewal exchange fails; sidecars that still carry the revoked
//! token move to the fleet's new one without exchanging.

use std::time::Duration;

use crate::fleet::{api_token, call_api, token_status, Fleet};
use crate::support::config::{config, route};
use crate::support::idp::{access_token, Idp, Reply, Seen};
use crate::support::sidecar::Running;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_renewal_invalidates_the_shared_entry_for_the_fleet() {
    let fleet = Fleet::start().await;
    let idp = Idp::start().await;
    // The API revoked the first token early.
    let api = Idp::start().await;
    let revoked = access_token(1);
    api.answer_with(move |seen: &Seen| match seen.bearer() {
        Some(t) if t == revoked => Reply::raw(401, "application/json", r#"{"message":"revoked"}"#),
        _ => Reply::raw(200, "text/plain", "api ok"),
    });
    let toml = config("", &format!("{}{}{}", api_token(&idp, ""), route(api.port(), &["api"], ""), fleet.section("")));
    let a = Running::start(&toml).await;
    let b = Running::start(&toml).await;
    assert_eq!(idp.count(), 1, "both carry the first token");

    // A gets the 401; its renewal exchange fails (the IdP has a bad moment).
    idp.push(Reply::oauth_error(503, "temporarily_unavailable", "try later"));
    let reply = call_api(a.proxy(), &api).await;
    assert_eq!(reply.status, 401, "the renewal failed, so the client gets the 401: {}", reply.text());
    assert_eq!(idp.count(), 2, "one renewal attempt");

    // The revoked token is no longer offered by the fleet: a sidecar starting now exchanges.
    let c = Running::start(&toml).await;
    assert_eq!(idp.count(), 3);
    assert_eq!(token_status(c.admin(), "api").await["source"], "exchange");
    let reply = call_api(c.proxy(), &api).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(api.last().and_then(|s| s.bearer().map(str::to_string)), Some(access_token(3)), "not the revoked one");

    // B still carries the revoked token: its 401 finds the fleet's new token and takes it
    // without an exchange.
    let reply = call_api(b.proxy(), &api).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(api.last().and_then(|s| s.bearer().map(str::to_string)), Some(access_token(3)));
    assert!(!idp.reaches(4, Duration::from_millis(500)).await, "no exchange for B's 401");
    assert_eq!(token_status(b.admin(), "api").await["source"], "shared");
}
