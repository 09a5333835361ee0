//! `substitute_in`: where in a request a route's tokens may be written. Every form (headers,
//! header:NAME, query, path, body, json:/pointer) is shown allowing its place and refusing the
//! others with 403 `placeholder_not_allowed_here`, nothing forwarded.

use bytes::Bytes;

use crate::support::client::{get, post, request, send, Reply};
use crate::support::config::{config, rs256_token};
use crate::support::jwt::{assert_no_jwt, find_jwts, verify_demo};
use crate::support::sidecar::Running;
use crate::support::upstream::Upstream;

/// One route per form, on one upstream, told apart by path prefix.
fn routes(upstream: &Upstream) -> String {
    let port = upstream.port();
    let route = |prefix: &str, extra: &str| {
        format!(
            "\n[[routes]]\nname = \"{prefix}\"\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             path_prefix = \"/{prefix}\"\ntokens = [\"tok\"]\n{extra}\n"
        )
    };
    [
        route("headers", "substitute_in = [\"headers\"]"),
        route("authz", "substitute_in = [\"header:Authorization\"]"),
        route("query", "substitute_in = [\"query\"]"),
        route("path", "substitute_in = [\"path\"]"),
        route("body", "substitute_in = [\"body\"]"),
        route("json", "substitute_in = [\"json:/token\", \"json:/nested/0/key\"]"),
        route("set", "substitute_in = [\"json:/token\"]\nset_headers = { Authorization = \"Bearer {/tok}\" }"),
        route(
            "alias",
            "placeholders = { auth_token = \"tok\" }\nsubstitute_in = { auth_token = [\"header:Authorization\"] }",
        ),
    ]
    .concat()
}

async fn start(upstream: &Upstream) -> Running {
    Running::start(&config(
        "max_buffered_body = \"4KiB\"",
        &format!("{}{}", rs256_token("tok", "10m"), routes(upstream)),
    ))
    .await
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// The one token the upstream received (verified), from the last request's headers, target
/// and body.
fn delivered(upstream: &Upstream) -> String {
    let seen = upstream.last().expect("the upstream got the request");
    let text = format!("{:?} {} {}", seen.headers, seen.uri, seen.body_text());
    let jwts = find_jwts(&text);
    assert!(!jwts.is_empty(), "no token reached the upstream: {text}");
    verify_demo(&jwts[0]);
    jwts[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_form_lets_the_token_into_its_place() {
    let upstream = Upstream::start().await;
    let run = start(&upstream).await;
    let p = run.proxy();
    let url = |path: &str| upstream.url(path);

    let allowed: Vec<(&str, Reply)> = vec![
        ("any header", get(p, &url("/headers"), &[("x-api-key", "{/tok}")]).await),
        ("the named header", get(p, &url("/authz"), &[("authorization", "Bearer {/tok}")]).await),
        ("the query", get(p, &url("/query?t={/tok}"), &[]).await),
        ("the query, percent-encoded", get(p, &url("/query?t=%7B%2Ftok%7D"), &[]).await),
        ("the path", get(p, &url("/path/{/tok}"), &[]).await),
        ("the body", post(p, &url("/body"), &[], "t={/tok}").await),
        ("a JSON pointer", post(p, &url("/json"), &[JSON], r#"{"token": "{/tok}", "n": 1}"#).await),
        ("a nested pointer", post(p, &url("/json"), &[JSON], r#"{"nested": [{"key": "k {/tok}"}]}"#).await),
        ("an alias in its header", get(p, &url("/alias"), &[("authorization", "Bearer {/auth_token}")]).await),
        ("the route's own header", post(p, &url("/set"), &[JSON], r#"{"token": "{/tok}"}"#).await),
        // Names that are no token of the route are text, wherever they are.
        ("an unknown name", post(p, &url("/headers"), &[], "{/not_a_token}").await),
    ];
    for (case, reply) in &allowed {
        assert_eq!(reply.status, 200, "{case}: {}", reply.text());
    }
    let seen = upstream.requests();
    assert_eq!(seen.len(), allowed.len());
    let jwt = |i: usize| {
        let r = &seen[i];
        find_jwts(&format!("{:?} {} {}", r.headers, r.uri, r.body_text())).len()
    };
    for (i, (case, _)) in allowed.iter().enumerate().take(9) {
        assert_eq!(jwt(i), 1, "{case}: exactly one token delivered");
    }
    assert_eq!(jwt(9), 2, "set_headers and the JSON pointer");
    assert_eq!(seen[10].body_text(), "{/not_a_token}");
    assert!(seen[6].body_text().starts_with("{\"token\": \"eyJ"), "{}", seen[6].body_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_anywhere_else_is_refused_and_nothing_is_forwarded() {
    let upstream = Upstream::start().await;
    let run = start(&upstream).await;
    let p = run.proxy();
    let url = |path: &str| upstream.url(path);

    let refused: Vec<(&str, Reply)> = vec![
        ("a body placeholder on a header-only route", post(p, &url("/headers"), &[], "{/tok}").await),
        ("the query of a header-only route", get(p, &url("/headers?t={/tok}"), &[]).await),
        ("an encoded query of a header-only route", get(p, &url("/headers?t=%7B%2Ftok%7D"), &[]).await),
        ("another header than the named one", get(p, &url("/authz"), &[("x-other", "{/tok}")]).await),
        ("the path of a query route", get(p, &url("/query/{/tok}"), &[]).await),
        ("a header of a query route", get(p, &url("/query"), &[("authorization", "Bearer {/tok}")]).await),
        ("the query of a path route", get(p, &url("/path?t={/tok}"), &[]).await),
        ("a header of a body route", post(p, &url("/body"), &[("x-t", "{/tok}")], "").await),
        (
            "a JSON string at no pointer",
            post(p, &url("/json"), &[JSON], r#"{"token": "{/tok}", "comment": "{/tok}"}"#).await,
        ),
        ("a JSON key", post(p, &url("/json"), &[JSON], r#"{"{/tok}": "x"}"#).await),
        ("a JSON body that is not labelled JSON", post(p, &url("/json"), &[], r#"{"token": "{/tok}"}"#).await),
        ("a body that is not JSON", post(p, &url("/json"), &[JSON], r#"{"token": "{/tok}""#).await),
        ("the token's own name beside its alias", get(p, &url("/alias"), &[("x-other", "{/tok}")]).await),
        ("an alias outside its header", get(p, &url("/alias?t={/auth_token}"), &[]).await),
        ("a header beside the route's own", post(p, &url("/set"), &[("x-other", "{/tok}")], "").await),
    ];
    for (case, reply) in &refused {
        assert_eq!(reply.status, 403, "{case}: {}", reply.text());
        reply.assert_error(403, "placeholder_not_allowed_here");
    }
    upstream.assert_nothing_received("requests with a token out of place");

    let message = |i: usize| refused[i].1.json()["message"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        message(3),
        "placeholder {/tok} is not allowed in header x-other; the route's substitute_in allows it only in: header:authorization"
    );
    assert!(message(0).contains("is not allowed in the body; the route's substitute_in allows it only in: headers"));
    assert!(message(1).contains("is not allowed in the query"), "{}", message(1));
    assert!(message(4).contains("is not allowed in the path"), "{}", message(4));
    assert!(message(8).contains("only in: json:/token, json:/nested/0/key"), "{}", message(8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_cannot_be_checked_against_pointers_and_is_refused() {
    let upstream = Upstream::start().await;
    let run = start(&upstream).await;
    // Over max_buffered_body (4 KiB): streamed, never parsed, so no string is "at /token".
    let big = format!(r#"{{"token": "{{/tok}}", "pad": "{}"}}"#, "x".repeat(8 << 10));
    let reply = send(run.proxy(), request("POST", &upstream.url("/json"), &[JSON], Bytes::from(big.clone()))).await;
    reply.assert_error(403, "placeholder_not_allowed_here");
    for seen in upstream.requests() {
        assert_no_jwt(&seen.body_text(), "a streamed body refused by position");
    }
    // The same body fits on a route that allows the body as a whole.
    let reply = post(run.proxy(), &upstream.url("/body"), &[JSON], big).await;
    reply.assert_upstream_ok();
    delivered(&upstream);
}
