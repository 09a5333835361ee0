//! `grant = "custom"`: a token endpoint that is not an OAuth 2.0 form post, described by
//! `[tokens.NAME.request]` (method, header templates, a JSON or text body template) and
//! `[tokens.NAME.response]` (where the token and its expiry are). GitHub App installation
//! tokens are the model.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::exchange::{expires_at, get_with, oauth2, secret, status, PROMPT};
use crate::support::config::{config, route, rs256_token};
use crate::support::idp::{Idp, Reply};
use crate::support::jwt::verify_demo_at;
use crate::support::sidecar::Running;
use crate::support::upstream::Upstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_app_installation_token() {
    let idp = Idp::start().await;
    let expiry = SystemTime::now() + Duration::from_secs(3600);
    let expiry_text = humantime::format_rfc3339_seconds(expiry).to_string();
    idp.answer_with(move |seen| {
        Reply::json(201, json!({ "token": format!("ghs_installation{}", seen.n), "expires_at": expiry_text }))
    });
    let upstream = Upstream::start().await;
    let gh = oauth2(
        "gh",
        &idp,
        "/app/installations/42/access_tokens",
        "grant = \"custom\"\n\n\
         [tokens.gh.request]\nheaders = { Authorization = \"Bearer {/gh_app_jwt}\", Accept = \"application/vnd.github+json\", \
         X-GitHub-Api-Version = \"2022-11-28\" }\n\n\
         [tokens.gh.response]\ntoken = \"/token\"\nexpires_at = \"/expires_at\"\n",
    );
    let toml = config("", &format!("{}{gh}{}", rs256_token("gh_app_jwt", "9m"), route(upstream.port(), &["gh"], "")));
    let run = Running::start(&toml).await;

    let seen = idp.wait_for(1, PROMPT).await;
    assert_eq!(seen.method, "POST", "method defaults to POST");
    assert_eq!(seen.uri, "/app/installations/42/access_tokens");
    assert_eq!(seen.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(seen.header("x-github-api-version"), Some("2022-11-28"));
    let app_jwt = seen.bearer().unwrap_or_else(|| panic!("no Bearer app JWT: {:?}", seen.headers));
    let claims = verify_demo_at(app_jwt, seen.arrived);
    assert_eq!(claims["sub"], "gh_app_jwt", "{claims}");
    assert!(seen.body.is_empty(), "no body template: {:?}", seen.body_text());

    get_with(run.proxy(), &upstream.url("/repos/o/r/issues"), "gh").await.assert_upstream_ok();
    assert_eq!(upstream.single().header("authorization"), Some("Bearer ghs_installation1"));
    let entry = status(run.admin(), "gh").await;
    let want = expiry.duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    assert_eq!(expires_at(&entry), want, "expires_at comes from the answer's RFC 3339 expires_at: {entry}");
    assert_eq!(entry["kind"], "oauth2");
    assert_eq!(entry["current"], true, "{entry}");
}

/// `json`: every string in the TOML value is a template (`{/secret}`, `{/jwt}`, `${ENV}`), the
/// other types are kept, and Content-Type is application/json. The method is configurable.
/// `expires_at` given as epoch seconds in a numeric string.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_body_template() {
    std::env::set_var("E2E_EXCHANGE_TENANT", "tenant-7");
    let idp = Idp::start().await;
    let epoch = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs() + 1800;
    idp.answer_with(move |_| Reply::ok(json!({ "data": { "jwt": "session-token-1", "exp": epoch.to_string() } })));
    let upstream = Upstream::start().await;
    let api = oauth2(
        "api",
        &idp,
        "/v2/session",
        "grant = \"custom\"\n\n\
         [tokens.api.request]\nmethod = \"PUT\"\n\
         json = { api_key = \"{/api_key}\", tenant = \"${E2E_EXCHANGE_TENANT}\", scopes = [\"read\", \"key:{/api_key}\"], \
         ttl = 1800, remember = true, proof = { assertion = \"{/proof}\" } }\n\n\
         [tokens.api.response]\ntoken = \"/data/jwt\"\nexpires_at = \"/data/exp\"\n",
    );
    let toml = config(
        "",
        &format!(
            "{}{}{api}{}",
            secret("api_key", "ak_live_123"),
            rs256_token("proof", "1m"),
            route(upstream.port(), &["api"], "")
        ),
    );
    let run = Running::start(&toml).await;
    let seen = idp.wait_for(1, PROMPT).await;
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.header("content-type"), Some("application/json"));
    let body = seen.json.clone().unwrap_or_else(|| panic!("the body is not JSON: {}", seen.body_text()));
    let proof = body["proof"]["assertion"].as_str().unwrap_or_else(|| panic!("no proof.assertion: {body}"));
    assert_eq!(verify_demo_at(proof, seen.arrived)["sub"], "proof");
    assert_eq!(
        body,
        json!({ "api_key": "ak_live_123", "tenant": "tenant-7", "scopes": ["read", "key:ak_live_123"], "ttl": 1800,
                "remember": true, "proof": { "assertion": proof } })
    );
    get_with(run.proxy(), &upstream.url("/"), "api").await.assert_upstream_ok();
    assert_eq!(upstream.single().bearer(), Some("session-token-1"));
    assert_eq!(expires_at(&status(run.admin(), "api").await), epoch, "expires_at as epoch seconds in a string");
}

/// `body`: a text template, sent as a form unless the headers name another Content-Type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_template() {
    let idp = Idp::start().await;
    let upstream = Upstream::start().await;
    let form = oauth2(
        "form_tok",
        &idp,
        "/form",
        "grant = \"custom\"\n\n\
         [tokens.form_tok.request]\nbody = \"grant_type=password&username=svc&password={/pw}\"\n",
    );
    let text = oauth2(
        "text_tok",
        &idp,
        "/text",
        "grant = \"custom\"\n\n\
         [tokens.text_tok.request]\nheaders = { Content-Type = \"text/plain; charset=utf-8\" }\nbody = \"key {/pw}\"\n",
    );
    let toml = config(
        "",
        &format!("{}{form}{text}{}", secret("pw", "hunter2"), route(upstream.port(), &["form_tok", "text_tok"], "")),
    );
    let run = Running::start(&toml).await;
    idp.wait_for(2, PROMPT).await;
    let by_path = |path: &str| {
        idp.requests().into_iter().find(|s| s.path() == path).unwrap_or_else(|| panic!("no request to {path}"))
    };
    let form_seen = by_path("/form");
    assert_eq!(form_seen.method, "POST");
    assert_eq!(form_seen.header("content-type"), Some("application/x-www-form-urlencoded"));
    assert_eq!(form_seen.body_text(), "grant_type=password&username=svc&password=hunter2");
    let text_seen = by_path("/text");
    assert_eq!(text_seen.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(text_seen.body_text(), "key hunter2");

    for name in ["form_tok", "text_tok"] {
        let reply = get_with(run.proxy(), &upstream.url("/"), name).await;
        reply.assert_upstream_ok();
        let bearer = upstream.last().and_then(|r| r.bearer().map(str::to_string));
        assert!(bearer.as_deref().is_some_and(|b| b.starts_with("idp-access-")), "{name}: {bearer:?}");
    }
}
