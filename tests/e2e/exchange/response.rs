//! Reading the token endpoint's answer: the lifetime from `expires_in` (a number or a numeric
//! string), `expiry_from = "jwt"`, `default_ttl` (Salesforce gives none), `max_ttl`; an answer
//! with no lifetime or the wrong `token_type` fails; a short lifetime is honoured as given.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use crate::exchange::{assert_lifetime, expires_at, get_with, oauth2, status, wait_error, wait_status, PROMPT};
use crate::support::config::{config, route};
use crate::support::idp::{access_token, Idp, Reply};
use crate::support::sidecar::Running;
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_in_as_a_number_and_as_a_numeric_string() {
    let idp = Idp::start().await;
    idp.answer_with(|seen| match seen.path() {
        "/number" => Reply::ok(json!({ "access_token": "tok-number", "token_type": "Bearer", "expires_in": 600 })),
        _ => Reply::ok(json!({ "access_token": "tok-string", "token_type": "bearer", "expires_in": "900" })),
    });
    let upstream = Upstream::start().await;
    let cc = "grant = \"client_credentials\"\nresponse.token_type = \"Bearer\"\n";
    let toml = config(
        "",
        &format!(
            "{}{}{}",
            oauth2("number", &idp, "/number", cc),
            oauth2("string", &idp, "/string", cc),
            route(upstream.port(), &["number", "string"], "")
        ),
    );
    let before = SystemTime::now();
    let run = Running::start(&toml).await;
    let after = SystemTime::now();
    let number = wait_status(run.admin(), "number", PROMPT, |s| s["current"] == true).await;
    let string = wait_status(run.admin(), "string", PROMPT, |s| s["current"] == true).await;
    assert_lifetime(&number, before, after, 600);
    assert_lifetime(&string, before, after, 900);
    get_with(run.proxy(), &upstream.url("/"), "string").await.assert_upstream_ok();
    assert_eq!(upstream.last().and_then(|r| r.bearer().map(str::to_string)).as_deref(), Some("tok-string"));
    get_with(run.proxy(), &upstream.url("/"), "number").await.assert_upstream_ok();
    assert_eq!(upstream.last().and_then(|r| r.bearer().map(str::to_string)).as_deref(), Some("tok-number"));
}

/// The access token is itself a JWT (not verifiable by the sidecar): its `exp` is the lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_from_the_issued_jwt() {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs() + 1234;
    let issued = jsonwebtoken::encode(
        &Header::default(),
        &json!({ "sub": "svc", "exp": exp }),
        &EncodingKey::from_secret(b"the IdP's own key, unknown to the sidecar"),
    )
    .expect("sign the IdP's token");
    let idp = Idp::start().await;
    let token = issued.clone();
    idp.answer_with(move |_| Reply::ok(json!({ "access_token": token, "token_type": "Bearer" })));
    let upstream = Upstream::start().await;
    let api = oauth2("api", &idp, "/token", "grant = \"client_credentials\"\nresponse.expiry_from = \"jwt\"\n");
    let run = Running::start(&config("", &format!("{api}{}", route(upstream.port(), &["api"], "")))).await;
    let entry = wait_status(run.admin(), "api", PROMPT, |s| s["current"] == true).await;
    assert_eq!(expires_at(&entry), exp, "expires_at is the issued JWT's exp: {entry}");
    get_with(run.proxy(), &upstream.url("/"), "api").await.assert_upstream_ok();
    assert_eq!(upstream.single().bearer(), Some(issued.as_str()));
}

/// Salesforce's JWT bearer answer has no `expires_in`; `default_ttl` supplies the lifetime,
/// and `max_ttl` clamps a lifetime that is too long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_ttl_when_the_answer_has_none_and_max_ttl_clamps() {
    let idp = Idp::start().await;
    idp.answer_with(|seen| match seen.path() {
        "/salesforce" => Reply::ok(json!({
            "access_token": "00Dxx0000001gPL!AR8AQJXg5oj8jXSgxJfA0lBog.39AsX.LVpxezPwuX5VAIrrbbHMuol7GQxnMeYMN7cj8EoWr78nBbq",
            "scope": "web api",
            "instance_url": "https://yourInstance.salesforce.com",
            "id": "https://login.salesforce.com/id/00Dxx0000001gPLEAY/005xx000001SwiUAAS",
            "token_type": "Bearer",
        })),
        _ => Reply::token("long-lived", 86_400),
    });
    let toml = config(
        "",
        &format!(
            "{}{}",
            oauth2("sf", &idp, "/salesforce", "grant = \"client_credentials\"\nresponse.default_ttl = \"2h\"\n"),
            oauth2(
                "clamped",
                &idp,
                "/long",
                "grant = \"client_credentials\"\nresponse.default_ttl = \"5m\"\nresponse.max_ttl = \"1h\"\n"
            ),
        ),
    );
    let before = SystemTime::now();
    let run = Running::start(&toml).await;
    let after = SystemTime::now();
    let sf = wait_status(run.admin(), "sf", PROMPT, |s| s["current"] == true).await;
    assert_lifetime(&sf, before, after, 7200);
    let clamped = wait_status(run.admin(), "clamped", PROMPT, |s| s["current"] == true).await;
    assert_lifetime(&clamped, before, after, 3600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_without_a_lifetime_fails_the_exchange() {
    let idp = Idp::start().await;
    idp.answer_with(|_| Reply::ok(json!({ "access_token": "no-lifetime", "token_type": "Bearer" })));
    let upstream = Upstream::start().await;
    let api = oauth2("api", &idp, "/token", "grant = \"client_credentials\"\n");
    let run = Running::start(&config("", &format!("{api}{}", route(upstream.port(), &["api"], "")))).await;
    assert_eq!(wait_error(run.admin(), "api").await, "token endpoint gave no lifetime (set response.default_ttl)");
    let entry = status(run.admin(), "api").await;
    assert_eq!(entry["current"], false, "{entry}");
    get_with(run.proxy(), &upstream.url("/"), "api").await.assert_error(503, "token_unavailable");
    upstream.assert_nothing_received("a token without a lifetime is not served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_type_mismatch_fails_the_exchange() {
    let idp = Idp::start().await;
    idp.answer_with(|_| Reply::ok(json!({ "access_token": "a-mac-token", "token_type": "mac", "expires_in": 3600 })));
    let upstream = Upstream::start().await;
    let api = oauth2("api", &idp, "/token", "grant = \"client_credentials\"\nresponse.token_type = \"Bearer\"\n");
    let run = Running::start(&config("", &format!("{api}{}", route(upstream.port(), &["api"], "")))).await;
    let error = wait_error(run.admin(), "api").await;
    assert!(!error.contains("a-mac-token"), "last_error shows the token: {error}");
    assert_eq!(status(run.admin(), "api").await["current"], false);
    get_with(run.proxy(), &upstream.url("/"), "api").await.assert_error(503, "token_unavailable");
    upstream.assert_nothing_received("a token of the wrong type is not served");
}

/// `expires_in = 3`: the sidecar exchanges again before those 3 s are up (a fifth of the
/// lifetime ahead), and requests get the new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lifetime_is_honoured() {
    let idp = Idp::start().await;
    idp.answer_with(|seen| Reply::token(&access_token(seen.n), 3));
    let upstream = Upstream::start().await;
    let api = oauth2("api", &idp, "/token", "grant = \"client_credentials\"\n");
    let before = SystemTime::now();
    let run = Running::start(&config("", &format!("{api}{}", route(upstream.port(), &["api"], "")))).await;
    let first = idp.wait_for(1, PROMPT).await;
    let entry = wait_status(run.admin(), "api", PROMPT, |s| s["current"] == true).await;
    assert_lifetime(&entry, before, SystemTime::now(), 3);
    let second = idp.wait_for(2, PROMPT).await;
    let gap = second.at.duration_since(first.at);
    assert!(gap < Duration::from_secs(3), "the second exchange came {gap:?} after the first, after expiry");
    assert!(gap >= Duration::from_millis(1500), "the second exchange came only {gap:?} after the first");
    let served = wait_until(PROMPT, async || {
        get_with(run.proxy(), &upstream.url("/"), "api").await.assert_upstream_ok();
        upstream.last().and_then(|r| r.bearer().map(str::to_string)).is_some_and(|b| b != access_token(1))
    })
    .await;
    assert!(served, "requests never got a token after the first");
}
