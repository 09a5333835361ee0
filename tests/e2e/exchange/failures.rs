//! A token endpoint that is down or refuses: the sidecar starts anyway and recovers when the
//! endpoint does; errors are reported in `/tokens` (without secrets); oversized answers are
//! refused; the last good token is served until it expires, then 503.

use std::time::Duration;

use serde_json::json;

use crate::exchange::{get_with, oauth2, readyz, status, wait_error, wait_status, PROMPT};
use crate::support::client::admin_get;
use crate::support::config::{config, route};
use crate::support::idp::{access_token, Idp, Reply};
use crate::support::metrics::scrape;
use crate::support::sidecar::Running;
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

const CC: &str = "grant = \"client_credentials\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idp_down_at_start_does_not_stop_the_sidecar_and_it_recovers() {
    let idp = Idp::start_down().await;
    let upstream = Upstream::start().await;
    let toml = config("", &format!("{}{}", oauth2("api", &idp, "/token", CC), route(upstream.port(), &["api"], "")));
    let run = Running::start(&toml).await;

    assert_eq!(admin_get(run.admin(), "/healthz").await.status, 200);
    assert_eq!(readyz(run.admin()).await, 503, "not ready without the exchanged token");
    let error = wait_error(run.admin(), "api").await;
    assert!(error.starts_with("token endpoint unreachable: "), "last_error: {error}");
    let entry = status(run.admin(), "api").await;
    assert_eq!(entry["current"], false, "{entry}");
    get_with(run.proxy(), &upstream.url("/"), "api").await.assert_error(503, "token_unavailable");
    upstream.assert_nothing_received("a request needing the missing token");

    idp.up();
    // Retries back off 1 s, 2 s, 4 s ...: the next one is at most a few seconds away.
    let ready = wait_until(Duration::from_secs(20), async || readyz(run.admin()).await == 200).await;
    assert!(ready, "the sidecar did not recover once the IdP answered; /tokens: {}", status(run.admin(), "api").await);
    get_with(run.proxy(), &upstream.url("/"), "api").await.assert_upstream_ok();
    assert_eq!(upstream.single().bearer(), Some(access_token(1).as_str()));
    let entry = status(run.admin(), "api").await;
    assert!(entry["last_error"].is_null(), "a success clears last_error: {entry}");
    let metrics = scrape(run.admin()).await;
    assert!(metrics.count("token_refreshes_total", &[("token", "api"), ("result", "error")]) >= 1.0);
    assert_eq!(metrics.count("token_refreshes_total", &[("token", "api"), ("result", "ok")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_errors_are_reported_with_their_description() {
    let idp = Idp::start().await;
    idp.answer_with(|seen| match seen.path() {
        "/invalid_grant" => Reply::oauth_error(400, "invalid_grant", "Invalid JWT Signature."),
        "/unavailable" => Reply::raw(503, "text/html", "<html>maintenance</html>"),
        _ => Reply::ok(json!({ "token": "in-the-wrong-field", "expires_in": 3600 })),
    });
    let toml = config(
        "",
        &format!(
            "{}{}{}",
            oauth2("grant", &idp, "/invalid_grant", CC),
            oauth2("down", &idp, "/unavailable", CC),
            oauth2("field", &idp, "/no_field", CC),
        ),
    );
    let run = Running::start(&toml).await;
    assert_eq!(
        wait_error(run.admin(), "grant").await,
        "token endpoint answered 400: invalid_grant: Invalid JWT Signature."
    );
    assert_eq!(wait_error(run.admin(), "down").await, "token endpoint answered 503");
    assert_eq!(wait_error(run.admin(), "field").await, "token endpoint answer has no /access_token");
    let field = status(run.admin(), "field").await;
    assert!(!field.to_string().contains("in-the-wrong-field"), "/tokens shows the answer: {field}");
    assert_eq!(readyz(run.admin()).await, 503);
    let metrics = scrape(run.admin()).await;
    for token in ["grant", "down", "field"] {
        assert!(
            metrics.count("token_refreshes_total", &[("token", token), ("result", "error")]) >= 1.0,
            "no failed exchange counted for {token}"
        );
    }
}

/// An answer over 1 MiB is refused (an endpoint cannot make the sidecar buffer without limit);
/// one just under is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_one_mib_fails() {
    let answer = |size: usize| {
        let mut body = json!({ "access_token": "big", "token_type": "Bearer", "expires_in": 3600, "padding": "" });
        let overhead = body.to_string().len();
        body["padding"] = json!("x".repeat(size - overhead));
        let text = body.to_string();
        assert_eq!(text.len(), size);
        Reply::raw(200, "application/json", text)
    };
    let (over, under) = (answer((1 << 20) + 1024), answer(1000 * 1000));
    let idp = Idp::start().await;
    idp.answer_with(move |seen| if seen.path() == "/over" { over.clone() } else { under.clone() });
    let toml = config("", &format!("{}{}", oauth2("over", &idp, "/over", CC), oauth2("under", &idp, "/under", CC)));
    let run = Running::start(&toml).await;
    let error = wait_error(run.admin(), "over").await;
    assert!(!error.contains("xxxxxxxx"), "last_error shows the answer: {error}");
    assert_eq!(status(run.admin(), "over").await["current"], false);
    wait_status(run.admin(), "under", PROMPT, |s| s["current"] == true).await;
    let log = run.sidecar.log_text();
    assert!(!log.contains("xxxxxxxx"), "the log shows the answer body");
}

/// After one good exchange the endpoint fails: the token is still served until it expires,
/// then requests get 503. `refresh_before = "3s"` of a 5 s lifetime: the refresh comes 2 s in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_good_token_is_served_until_it_expires() {
    let idp = Idp::start().await;
    idp.push(Reply::token(&access_token(1), 5));
    idp.answer_with(|_| Reply::oauth_error(500, "server_error", "down for maintenance"));
    let upstream = Upstream::start().await;
    let api = oauth2("api", &idp, "/token", "grant = \"client_credentials\"\nrefresh_before = \"3s\"\n");
    let toml = config("", &format!("{api}{}", route(upstream.port(), &["api"], "")));
    let run = Running::start(&toml).await;
    let first = idp.wait_for(1, PROMPT).await;
    get_with(run.proxy(), &upstream.url("/"), "api").await.assert_upstream_ok();
    assert_eq!(upstream.single().bearer(), Some(access_token(1).as_str()));

    let second = idp.wait_for(2, PROMPT).await;
    let gap = second.at.duration_since(first.at);
    assert!(
        (Duration::from_millis(1500)..Duration::from_millis(3500)).contains(&gap),
        "refresh_before = 3s of a 5 s lifetime: the refresh came {gap:?} after the first exchange"
    );
    let failing = wait_status(run.admin(), "api", PROMPT, |s| s["last_error"].is_string()).await;
    assert_eq!(failing["current"], true, "the good token is current until it expires: {failing}");
    assert_eq!(failing["last_error"], "token endpoint answered 500: server_error: down for maintenance");
    get_with(run.proxy(), &upstream.url("/"), "api").await.assert_upstream_ok();
    assert_eq!(upstream.last().and_then(|r| r.bearer().map(str::to_string)), Some(access_token(1)));

    wait_status(run.admin(), "api", PROMPT, |s| s["current"] == false).await;
    let count = upstream.count();
    get_with(run.proxy(), &upstream.url("/"), "api").await.assert_error(503, "token_unavailable");
    assert_eq!(upstream.count(), count, "an expired token is not sent");
    assert_eq!(readyz(run.admin()).await, 503);
}
