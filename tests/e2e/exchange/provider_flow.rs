//! A provider as strict as the real ones, end to end: the token endpoint speaks HTTPS with its
//! own CA (trusted through `extra_ca_file`, refused without it), verifies each assertion the
//! way Google, Salesforce or Okta do (signature, `aud` = the token URL, a lifetime of at most
//! five minutes, a `jti` never seen before), and issues short-lived tokens; the API behind the
//! route accepts only live tokens that endpoint issued. Under steady traffic across several
//! token lifetimes no request is rejected: the sidecar exchanges ahead of expiry.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::exchange::{assertion_jwt, get_with, oauth2, wait_error, PROMPT};
use crate::support::ca::TestCa;
use crate::support::config::{config, route, toml_str, UPSTREAM_CA_FILE};
use crate::support::idp::{Idp, Reply, Seen};
use crate::support::jwt::{decode, decoding_key, validation};
use crate::support::keys::demo_key;
use crate::support::sidecar::Running;

/// How long each issued token lives: long enough that a refresh a fifth of it ahead is
/// comfortably early on a loaded machine, short enough that a test sees several.
const LIFETIME: Duration = Duration::from_secs(5);

/// Tokens the endpoint issued, with the moment each stops being accepted.
type Issued = Arc<Mutex<HashMap<String, Instant>>>;

/// Why the endpoint refuses `seen`, checked as a strict provider checks a JWT-bearer request.
fn refusal(seen: &Seen, token_url: &str, jtis: &Mutex<HashSet<String>>) -> Option<String> {
    if seen.field("grant_type") != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return Some("unsupported grant_type".into());
    }
    let assertion = seen.field("assertion")?;
    let key = decoding_key(Algorithm::RS256, &demo_key("demo-rsa.pub.pem"));
    let claims = match decode(assertion, &key, &validation(Algorithm::RS256, Some(token_url))) {
        Ok(claims) => claims,
        Err(e) => return Some(format!("assertion rejected: {e}")),
    };
    let (Some(iat), Some(exp)) = (claims["iat"].as_u64(), claims["exp"].as_u64()) else {
        return Some("iat and exp are required".into());
    };
    if exp.saturating_sub(iat) > 300 {
        return Some("the assertion lives longer than five minutes".into());
    }
    let Some(jti) = claims["jti"].as_str() else { return Some("jti is required".into()) };
    if !jtis.lock().unwrap().insert(jti.to_string()) {
        return Some(format!("jti {jti} was already used"));
    }
    None
}

/// The strict token endpoint over TLS, issuing `live-N` tokens for [`LIFETIME`].
async fn strict_idp(ca: &TestCa, issued: &Issued) -> Idp {
    let idp = Idp::start_tls(ca).await;
    let token_url = idp.url("/token");
    let jtis = Mutex::new(HashSet::new());
    let issued = Arc::clone(issued);
    idp.answer_with(move |seen| match refusal(seen, &token_url, &jtis) {
        Some(why) => Reply::oauth_error(400, "invalid_grant", &why),
        None => {
            let token = format!("live-{}", seen.n);
            issued.lock().unwrap().insert(token.clone(), Instant::now() + LIFETIME);
            Reply::ok(json!({ "access_token": token, "token_type": "Bearer", "expires_in": LIFETIME.as_secs() }))
        }
    });
    idp
}

/// An API accepting only live tokens of `issued`: 200, or 401 naming the problem.
async fn strict_api(issued: &Issued) -> Idp {
    let api = Idp::start().await;
    let issued = Arc::clone(issued);
    api.answer_with(move |seen| {
        let live = seen
            .bearer()
            .and_then(|t| issued.lock().unwrap().get(t).copied())
            .is_some_and(|until| Instant::now() < until);
        if live {
            Reply::ok(json!({ "ok": true }))
        } else {
            Reply::json(401, json!({ "error": "invalid_token", "token": seen.bearer() }))
        }
    });
    api
}

fn tokens(idp: &Idp, api: &Idp, extra_ca: bool) -> String {
    let proxy = if extra_ca { format!("extra_ca_file = {}", toml_str(UPSTREAM_CA_FILE)) } else { String::new() };
    config(
        &proxy,
        &format!(
            "{sa}{api_token}{route}",
            sa = assertion_jwt("sa", &idp.url("/token")),
            api_token = oauth2("api", idp, "/token", "grant = \"jwt_bearer\"\nassertion = \"sa\"\n"),
            // Every rejection must reach the test, not be replayed away.
            route = route(api.port(), &["api"], "retry_on_401 = false"),
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_traffic_across_token_lifetimes_is_never_rejected() {
    let ca = TestCa::new();
    let issued: Issued = Arc::default();
    let idp = strict_idp(&ca, &issued).await;
    let api = strict_api(&issued).await;
    let run = Running::start_with(&tokens(&idp, &api, true), Some(&ca), "info").await;
    if !idp.reaches(1, PROMPT).await {
        panic!("no exchange; /tokens: {}", crate::exchange::status(run.admin(), "api").await);
    }

    // Requests one after another until the sidecar has exchanged twice more on its own.
    let deadline = Instant::now() + 4 * LIFETIME;
    let mut sent = 0;
    while idp.count() < 3 {
        assert!(Instant::now() < deadline, "only {} exchanges in {:?}", idp.count(), 4 * LIFETIME);
        let reply = get_with(run.proxy(), &api.url("/v1/me"), "api").await;
        assert_eq!(reply.status, 200, "request {sent} was rejected: {}", reply.text());
        sent += 1;
    }
    let refused: Vec<_> = idp.requests().into_iter().filter(|s| s.field("assertion").is_none()).collect();
    assert!(refused.is_empty(), "exchanges without an assertion: {refused:?}");
    let bearers: HashSet<String> = api.requests().iter().filter_map(|r| r.bearer().map(str::to_string)).collect();
    assert!(bearers.len() >= 2, "traffic moved to the renewed token: {bearers:?} over {sent} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_with_a_private_ca_needs_extra_ca_file() {
    let ca = TestCa::new();
    let issued: Issued = Arc::default();
    let idp = strict_idp(&ca, &issued).await;
    let api = strict_api(&issued).await;
    let run = Running::start(&tokens(&idp, &api, false)).await;
    let error = wait_error(run.admin(), "api").await;
    assert!(
        error.to_ascii_lowercase().contains("certificate"),
        "an endpoint whose certificate is not trusted is reported as such: {error}"
    );
    assert_eq!(idp.count(), 0, "no request reached an endpoint whose certificate was not verified");
    get_with(run.proxy(), &api.url("/v1/me"), "api").await.assert_error(503, "token_unavailable");
    assert_eq!(api.count(), 0);
}
