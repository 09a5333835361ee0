//! `grant = "jwt_bearer"` (RFC 7523): the sidecar signs an assertion with a configured JWT
//! token, posts it to the token endpoint, and the agent's `Bearer {/NAME}` becomes the access
//! token the endpoint issued. Every exchange signs a fresh assertion.

use crate::exchange::{assertion_jwt, get_with, oauth2, status, PROMPT};
use crate::support::config::{config, route};
use crate::support::idp::{access_token, Idp, Reply};
use crate::support::jwt::verify_demo_at;
use crate::support::sidecar::Running;
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_bearer_posts_a_signed_assertion_and_the_upstream_gets_the_issued_token() {
    let idp = Idp::start().await;
    let upstream = Upstream::start().await;
    let toml = config(
        "",
        &format!(
            "{sa}{api}{route}",
            sa = assertion_jwt("sa", "https://oauth2.example/token"),
            api = oauth2(
                "api",
                &idp,
                "/oauth2/token",
                "grant = \"jwt_bearer\"\nassertion = \"sa\"\nscope = [\"read\", \"write:all\"]\n\n\
                 [tokens.api.form]\naudience = \"https://api.example/v1\"\nsubject_token_type = \"a b&c=d\"\n",
            ),
            route = route(upstream.port(), &["api"], ""),
        ),
    );
    let run = Running::start(&toml).await;
    let first = idp.wait_for(1, PROMPT).await;

    assert_eq!(first.method, "POST");
    assert_eq!(first.path(), "/oauth2/token");
    assert_eq!(first.header("content-type"), Some("application/x-www-form-urlencoded"), "{:?}", first.headers);
    assert_eq!(first.header("accept"), Some("application/json"), "{:?}", first.headers);
    assert!(first.header("authorization").is_none(), "no client authentication was configured: {:?}", first.headers);
    let names: Vec<&str> = first.form_pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["grant_type", "assertion", "scope", "audience", "subject_token_type"],
        "form fields (in the documented order): {}",
        first.body_text()
    );
    assert_eq!(first.must("grant_type"), JWT_BEARER);
    assert_eq!(first.must("scope"), "read write:all", "an array scope is joined with single spaces");
    assert_eq!(first.must("audience"), "https://api.example/v1");
    assert_eq!(first.must("subject_token_type"), "a b&c=d", "a [form] value is form-encoded: {}", first.body_text());
    let claims = verify_demo_at(first.must("assertion"), first.arrived);
    assert_eq!(claims["iss"], "e2e-tests", "{claims}");
    assert_eq!(claims["sub"], "sa", "{claims}");
    assert_eq!(claims["aud"], "https://oauth2.example/token", "{claims}");

    let reply = get_with(run.proxy(), &upstream.url("/v1/me"), "api").await;
    reply.assert_upstream_ok();
    assert_eq!(upstream.single().header("authorization"), Some(format!("Bearer {}", access_token(1)).as_str()));
    let entry = status(run.admin(), "api").await;
    assert_eq!(entry["kind"], "oauth2", "{entry}");
    assert_eq!(entry["token_url_host"], "127.0.0.1", "{entry}");
    assert_eq!(entry["current"], true, "{entry}");
    assert!(entry["last_error"].is_null(), "{entry}");
}

/// Two exchanges (the first token lives 2 s, so the second follows on its own) carry two
/// different assertions, each valid when it arrived, and the upstream gets the new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exchange_signs_a_fresh_assertion() {
    let idp = Idp::start().await;
    idp.push(Reply::token(&access_token(1), 2));
    let upstream = Upstream::start().await;
    let toml = config(
        "",
        &format!(
            "{sa}{api}{route}",
            sa = assertion_jwt("sa", "https://oauth2.example/token"),
            api = oauth2("api", &idp, "/token", "grant = \"jwt_bearer\"\nassertion = \"sa\"\n"),
            route = route(upstream.port(), &["api"], ""),
        ),
    );
    let run = Running::start(&toml).await;
    let second = idp.wait_for(2, PROMPT).await;
    let first = idp.nth(1);
    let (a1, a2) = (first.must("assertion"), second.must("assertion"));
    assert_ne!(a1, a2, "the second exchange reused the first assertion");
    let (c1, c2) = (verify_demo_at(a1, first.arrived), verify_demo_at(a2, second.arrived));
    assert_ne!(c1["jti"], c2["jti"], "both assertions have the same jti");
    assert!(c2["iat"].as_u64() >= c1["iat"].as_u64(), "the second assertion is older: {c1} {c2}");
    assert!(first.field("scope").is_none(), "no scope was configured: {}", first.body_text());

    let served = wait_until(PROMPT, async || {
        get_with(run.proxy(), &upstream.url("/"), "api").await.assert_upstream_ok();
        upstream.last().and_then(|r| r.bearer().map(str::to_string)) == Some(access_token(2))
    })
    .await;
    assert!(served, "the upstream never got the second access token: {:?}", upstream.last().map(|r| r.headers));
}
