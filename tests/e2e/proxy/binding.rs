//! Invariant 1: a token is only ever written into a request whose route binds it.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use token_sidecar::server::Sidecar;

use crate::support::client::{get, post, request, send, Reply};
use crate::support::config::{config, route, rs256_token};
use crate::support::jwt::verify_demo;
use crate::support::sidecar::start;
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

/// Tokens A and B; `bound` gets a route binding only A, `elsewhere` a route binding only B.
fn two_tokens(bound: &Upstream, elsewhere: &Upstream, proxy_extra: &str) -> String {
    config(
        proxy_extra,
        &format!(
            "{}{}{}{}",
            rs256_token("A", "15m"),
            rs256_token("B", "15m"),
            route(bound.port(), &["A"], ""),
            route(elsewhere.port(), &["B"], "")
        ),
    )
}

/// The current value of every token of a running sidecar, by name.
fn current_tokens(sidecar: &Sidecar) -> BTreeMap<String, String> {
    let snapshot = sidecar.state().load_full();
    let now = std::time::SystemTime::now();
    snapshot
        .cells
        .iter()
        .filter_map(|(name, cell)| Some((name.clone(), cell.current(now)?)))
        .map(|(name, t)| (name, String::from_utf8(t.value.to_vec()).expect("token is text")))
        .collect()
}

fn assert_refused(reply: &Reply, tokens: &BTreeMap<String, String>, case: &str) {
    reply.assert_error(403, "placeholder_not_allowed");
    for t in tokens.values() {
        assert!(!reply.text().contains(t.as_str()), "{case}: the error body holds a token: {}", reply.text());
    }
}

#[tokio::test]
async fn naming_a_token_the_route_does_not_bind_is_refused_and_nothing_is_forwarded() {
    let bound = Upstream::start().await;
    let elsewhere = Upstream::start().await;
    let sidecar = start(&two_tokens(&bound, &elsewhere, "")).await;
    let proxy = sidecar.proxy_addr;
    let tokens = current_tokens(&sidecar);
    assert_eq!(tokens.len(), 2);

    let cases: Vec<(&str, Reply)> = vec![
        ("header", get(proxy, &bound.url("/h"), &[("authorization", "Bearer {/B}")]).await),
        ("header beside a bound one", get(proxy, &bound.url("/h"), &[("x-a", "{/A}"), ("x-b", "{/B}")]).await),
        ("raw query", get(proxy, &bound.url("/q?t={/B}"), &[("x-a", "{/A}")]).await),
        ("encoded query", get(proxy, &bound.url("/q?t=%7B%2FB%7D"), &[]).await),
        ("path", get(proxy, &bound.url("/p/{/B}"), &[]).await),
        (
            "json body",
            post(proxy, &bound.url("/b"), &[("content-type", "application/json")], r#"{"a":"{/A}","b":"{/B}"}"#).await,
        ),
        ("text body", post(proxy, &bound.url("/b"), &[], "first {/A} then {/B}").await),
    ];
    for (case, reply) in &cases {
        assert_refused(reply, &tokens, case);
        assert!(reply.text().contains("{/B}"), "{case}: the message should name the placeholder: {}", reply.text());
    }
    bound.assert_nothing_received("refused requests");
    elsewhere.assert_nothing_received("refused requests");

    // The same sidecar still serves the bound token to the bound upstream.
    get(proxy, &bound.url("/ok"), &[("authorization", "Bearer {/A}")]).await.assert_upstream_ok();
    assert_eq!(verify_demo(bound.single().token())["sub"], "A");
    sidecar.shutdown().await;
}

#[tokio::test]
async fn unbound_placeholder_deep_in_a_streamed_body_never_reaches_the_upstream() {
    // Past max_buffered_body the body streams, so the refusal happens after the request has
    // started upstream. The upstream must still never get a complete request, nor B.
    let bound = Upstream::start().await;
    let elsewhere = Upstream::start().await;
    let sidecar = start(&two_tokens(&bound, &elsewhere, "max_buffered_body = \"4KiB\"")).await;
    let tokens = current_tokens(&sidecar);

    let mut body = "x".repeat(64 * 1024).into_bytes();
    body.extend_from_slice(b" {/B} tail");
    let reply = send(sidecar.proxy_addr, request("POST", &bound.url("/stream"), &[], Bytes::from(body))).await;
    assert_refused(&reply, &tokens, "streamed body");

    // Whatever request was started upstream has ended (its body cut) before it is checked.
    let ended = wait_until(Duration::from_secs(5), async || bound.requests().iter().all(|r| r.ended)).await;
    assert!(ended, "the upstream request of the refused body was left open");
    for r in bound.requests() {
        assert!(!r.complete, "the upstream received a complete request that named {{/B}}");
        let text = String::from_utf8_lossy(&r.body()).into_owned();
        assert!(!text.contains("{/B}"));
        assert!(!text.contains(tokens["B"].as_str()), "B's token reached the upstream of a route binding only A");
    }
    elsewhere.assert_nothing_received("streamed refusal");
    sidecar.shutdown().await;
}

#[tokio::test]
async fn unrouted_host_receives_placeholders_as_text() {
    let bound = Upstream::start().await;
    let elsewhere = Upstream::start().await;
    let unrouted = Upstream::start().await;
    let sidecar = start(&two_tokens(&bound, &elsewhere, "")).await;

    let reply = post(
        sidecar.proxy_addr,
        &unrouted.url("/x/{/A}?q={/A}&e=%7B%2FA%7D"),
        &[("authorization", "Bearer {/A}"), ("x-b", "{/B}")],
        "body {/A} {/B}",
    )
    .await;
    reply.assert_upstream_ok();

    let r = unrouted.single();
    assert_eq!(r.header("authorization"), Some("Bearer {/A}"));
    assert_eq!(r.header("x-b"), Some("{/B}"));
    assert_eq!(r.uri, "/x/{/A}?q={/A}&e=%7B%2FA%7D");
    assert_eq!(r.body_text(), "body {/A} {/B}");
    bound.assert_nothing_received("unrouted request");
    sidecar.shutdown().await;
}

#[tokio::test]
async fn unmatched_deny_refuses_unrouted_requests() {
    let bound = Upstream::start().await;
    let elsewhere = Upstream::start().await;
    let unrouted = Upstream::start().await;
    let sidecar = start(&two_tokens(&bound, &elsewhere, "unmatched = \"deny\"")).await;

    let reply = get(sidecar.proxy_addr, &unrouted.url("/x"), &[("authorization", "Bearer {/A}")]).await;
    reply.assert_error(403, "unmatched_denied");
    unrouted.assert_nothing_received("unmatched = deny");

    // Routed requests are unaffected by the policy.
    get(sidecar.proxy_addr, &bound.url("/ok"), &[("authorization", "Bearer {/A}")]).await.assert_upstream_ok();
    verify_demo(bound.single().token());
    sidecar.shutdown().await;
}

#[tokio::test]
async fn unknown_names_pass_through_as_text_on_routed_requests() {
    let bound = Upstream::start().await;
    let elsewhere = Upstream::start().await;
    let sidecar = start(&two_tokens(&bound, &elsewhere, "")).await;

    let reply = post(
        sidecar.proxy_addr,
        &bound.url("/u/{/nope}?q=%7B%2Fnope%7D"),
        &[("authorization", "Bearer {/A}"), ("x-unknown", "{/nope} {/a}")],
        "{/nope} and {/A.b} stay",
    )
    .await;
    reply.assert_upstream_ok();

    let r = bound.single();
    verify_demo(r.token());
    assert_eq!(r.header("x-unknown"), Some("{/nope} {/a}"), "names are case-sensitive; unknown ones stay");
    assert_eq!(r.uri, "/u/{/nope}?q=%7B%2Fnope%7D");
    assert_eq!(r.body_text(), "{/nope} and {/A.b} stay");
    sidecar.shutdown().await;
}
