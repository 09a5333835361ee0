//! `POST /tokens/NAME/refresh` on the admin listener: exchange now (after rotating a client
//! secret at the IdP, say), with the result as JSON; a failure is a 502 that keeps the last
//! good token serving; unknown names are 404 and other methods 405.

use serde_json::json;

use crate::exchange::{admin_refresh, expires_at, get_with, oauth2, status, PROMPT};
use crate::support::client::{admin_get, request, send};
use crate::support::config::{config, route};
use crate::support::idp::{access_token, Idp, Reply};
use crate::support::sidecar::Running;
use crate::support::upstream::Upstream;

const CC: &str = "grant = \"client_credentials\"\n";

async fn started(idp: &Idp, upstream: &Upstream) -> Running {
    let toml = config("", &format!("{}{}", oauth2("api", idp, "/token", CC), route(upstream.port(), &["api"], "")));
    let run = Running::start(&toml).await;
    idp.wait_for(1, PROMPT).await;
    run
}

async fn bearer_served(run: &Running, upstream: &Upstream) -> Option<String> {
    get_with(run.proxy(), &upstream.url("/"), "api").await.assert_upstream_ok();
    upstream.last().and_then(|r| r.bearer().map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_exchanges_now_and_answers_with_the_new_expiry() {
    let idp = Idp::start().await;
    let upstream = Upstream::start().await;
    let run = started(&idp, &upstream).await;
    assert_eq!(bearer_served(&run, &upstream).await, Some(access_token(1)));

    idp.push(Reply::token(&access_token(2), 7200));
    let reply = admin_refresh(run.admin(), "api").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{:?}",
        reply.headers
    );
    let body = reply.json();
    assert_eq!(idp.count(), 2, "the refresh exchanged once, before answering");
    let entry = status(run.admin(), "api").await;
    assert_eq!(body, json!({ "token": "api", "result": "ok", "expires_at": expires_at(&entry) }));
    assert!(!reply.text().contains(&access_token(2)), "the answer shows the token");
    assert_eq!(bearer_served(&run, &upstream).await, Some(access_token(2)), "requests get the new token at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refresh_is_a_502_and_the_last_good_token_keeps_serving() {
    let idp = Idp::start().await;
    let upstream = Upstream::start().await;
    let run = started(&idp, &upstream).await;

    idp.push(Reply::oauth_error(400, "invalid_client", "client secret was rotated"));
    let reply = admin_refresh(run.admin(), "api").await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({ "error": "refresh_failed", "message": "token endpoint answered 400: invalid_client: client secret was rotated" })
    );
    assert_eq!(idp.count(), 2);
    let entry = status(run.admin(), "api").await;
    assert_eq!(entry["current"], true, "{entry}");
    assert_eq!(entry["last_error"], "token endpoint answered 400: invalid_client: client secret was rotated");
    assert_eq!(bearer_served(&run, &upstream).await, Some(access_token(1)));

    // The endpoint unreachable: the same 502, with the connection problem.
    idp.down().await;
    let reply = admin_refresh(run.admin(), "api").await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["error"], "refresh_failed", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("token endpoint unreachable: "), "{body}");
    assert_eq!(bearer_served(&run, &upstream).await, Some(access_token(1)));

    // Back up: the next refresh succeeds and clears the error.
    idp.up();
    let reply = admin_refresh(run.admin(), "api").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(status(run.admin(), "api").await["last_error"].is_null());
    let last = idp.last().expect("the refresh reached the IdP");
    assert_eq!(bearer_served(&run, &upstream).await, Some(access_token(last.n)), "the refreshed token is served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tokens_are_404_and_other_methods_405() {
    let idp = Idp::start().await;
    let upstream = Upstream::start().await;
    let run = started(&idp, &upstream).await;

    let unknown = admin_refresh(run.admin(), "nope").await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    assert_eq!(unknown.json()["error"], "unknown_token", "{}", unknown.text());

    let get = admin_get(run.admin(), "/tokens/api/refresh").await;
    assert_eq!(get.status, 405, "{}", get.text());
    let admin = run.admin().to_string();
    for method in ["PUT", "DELETE"] {
        let reply = send(run.admin(), request(method, "/tokens/api/refresh", &[("host", &admin)], "")).await;
        assert_eq!(reply.status, 405, "{method}: {}", reply.text());
    }
    assert_eq!(idp.count(), 1, "none of these exchanged");
}
