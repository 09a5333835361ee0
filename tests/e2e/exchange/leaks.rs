//! What an exchange handles must stay out of the log (at trace, every library target on), out
//! of `/tokens` and out of `/metrics`: client secrets (and their Basic encoding), assertions,
//! access and refresh tokens, and the endpoint's answer bodies, whatever the outcome
//! (success, OAuth error, a 401 and re-exchange).

use serde_json::json;

use crate::exchange::{assertion_jwt, get_with, oauth2, secret, wait_error, PROMPT};
use crate::support::client::admin_get;
use crate::support::config::{config, route, rs256_token};
use crate::support::idp::{basic_header, Idp, Reply};
use crate::support::jwt::find_jwts;
use crate::support::logs::{contains, line_with, log_leaks};
use crate::support::sidecar::Running;

/// Every sensitive value in this test contains it.
const MARK: &str = "SECRET";
const CLIENT_SECRET: &str = "cs-SECRET-7f3a9b1c";
/// A field of every good answer: answer bodies are not logged either.
const ANSWER_MARK: &str = "answer-body-4e7d1a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_secrets_stay_out_of_the_log_and_the_admin_port() {
    let id_token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": "svc", "exp": 4_000_000_000_u64 }),
        &jsonwebtoken::EncodingKey::from_secret(b"idp key"),
    )
    .expect("id_token");
    let idp = Idp::start().await;
    let id = id_token.clone();
    idp.answer_with(move |seen| match seen.path() {
        "/bad" => Reply::oauth_error(400, "invalid_grant", "assertion rejected"),
        "/gh" => {
            Reply::json(201, json!({ "token": format!("ghs-{MARK}-{}", seen.n), "expires_at": "2099-01-01T00:00:00Z" }))
        }
        path => Reply::ok(json!({
            "access_token": format!("at-{MARK}{path}-{}", seen.n),
            "refresh_token": format!("rt-{MARK}-{}", seen.n),
            "id_token": id,
            "token_type": "Bearer",
            "expires_in": 3600,
            "note": ANSWER_MARK,
        })),
    });
    // The API rejects the first token of `cc` once, so a re-exchange and a replay happen.
    let api = Idp::start().await;
    let rejected = std::sync::Mutex::new(None::<String>);
    api.answer_with(move |seen| {
        let bearer = seen.bearer().unwrap_or_default().to_string();
        let mut rejected = rejected.lock().unwrap();
        if bearer.starts_with("at-SECRET/cc-") && rejected.get_or_insert_with(|| bearer.clone()) == &bearer {
            Reply::status(401)
        } else {
            Reply::raw(200, "text/plain", "api ok")
        }
    });
    let tokens = format!(
        "{sa}{ca}{gh_jwt}{cs}{jwt}{cc}{pk}{bad}{gh}",
        sa = assertion_jwt("sa", "https://idp.example/token"),
        ca = assertion_jwt("ca", "https://idp.example/token"),
        gh_jwt = rs256_token("gh_jwt", "5m"),
        cs = secret("cs", CLIENT_SECRET),
        jwt = oauth2("jwt", &idp, "/jwt", "grant = \"jwt_bearer\"\nassertion = \"sa\""),
        cc = oauth2("cc", &idp, "/cc", "grant = \"client_credentials\"\nclient_id = \"svc\"\nclient_secret = \"cs\""),
        pk =
            oauth2("pk", &idp, "/pk", "grant = \"client_credentials\"\nclient_id = \"svc\"\nclient_assertion = \"ca\""),
        bad = oauth2("bad", &idp, "/bad", "grant = \"jwt_bearer\"\nassertion = \"sa\""),
        gh = oauth2(
            "gh",
            &idp,
            "/gh",
            "grant = \"custom\"\nrequest.headers = { Authorization = \"Bearer {/gh_jwt}\" }\n\
             request.json = { key = \"{/cs}\" }\nresponse.token = \"/token\"\nresponse.expires_at = \"/expires_at\"",
        ),
    );
    let toml = config("", &format!("{tokens}{}", route(api.port(), &["jwt", "cc", "pk", "bad", "gh"], "")));
    let run = Running::start_with(&toml, None, "trace").await;
    assert!(idp.reaches(5, PROMPT).await, "not every token was exchanged: {:?}", idp.requests().len());
    wait_error(run.admin(), "bad").await;
    for name in ["jwt", "cc", "pk", "gh"] {
        let reply = get_with(run.proxy(), &api.url("/v1/thing"), name).await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
    }
    get_with(run.proxy(), &api.url("/v1/thing"), "bad").await.assert_error(503, "token_unavailable");
    let cc_seen: Vec<String> =
        api.requests().iter().filter_map(|s| s.bearer().filter(|b| b.contains("/cc-")).map(str::to_string)).collect();
    assert_eq!(cc_seen.len(), 2, "cc's request was rejected once and replayed: {cc_seen:?}");
    assert_ne!(cc_seen[0], cc_seen[1], "the replay carries a new token");

    let tokens_page = admin_get(run.admin(), "/tokens").await.text();
    let metrics = admin_get(run.admin(), "/metrics").await.text();
    let log = run.sidecar.log_text();
    let basic = basic_header("svc", CLIENT_SECRET);
    let basic_credential = basic.trim_start_matches("Basic ");
    let mut leaks = log_leaks(&log, &run.key_files());
    for (what, text) in [("the log", &log), ("/tokens", &tokens_page), ("/metrics", &metrics)] {
        for needle in [MARK, basic_credential, ANSWER_MARK] {
            if contains(text, needle) {
                leaks.push(format!("{what} contains {needle:?}: {}", line_with(text, needle)));
            }
        }
        if what != "the log" && !find_jwts(text).is_empty() {
            leaks.push(format!("{what} contains a JWT: {text}"));
        }
    }
    // Everything the endpoint received (assertions, client assertions, the app JWT) too.
    for seen in idp.requests() {
        for jwt in find_jwts(&format!("{:?} {}", seen.headers, seen.body_text())) {
            if contains(&log, &jwt) {
                leaks.push(format!("a JWT sent to the IdP is in the log: {}", line_with(&log, &jwt)));
            }
        }
    }
    assert!(leaks.is_empty(), "leaks:\n{}", leaks.join("\n"));
}
