//! Tokens are re-signed ahead of expiry while requests keep flowing; every request carries a
//! current token, and one request carries one token: every placeholder of a token in it
//! (target, headers, body) gets the value loaded when the request started, even when a refresh
//! lands while its body is still streaming.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;

use crate::support::client::{channel_body, post, send, Client};
use crate::support::config::{config, route, rs256_token};
use crate::support::jwt::verify_demo_at;
use crate::support::sidecar::start;
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_always_carry_a_current_consistent_token() {
    let upstream = Upstream::start().await;
    // Re-signed about every second, each token valid for 4 s: a refresher delayed by a loaded
    // machine has 3 s before requests would find no valid token.
    let token = format!("{}refresh_before = \"3s\"\n", rs256_token("A", "4s"));
    let toml = config("", &format!("{token}{}", route(upstream.port(), &["A"], "")));
    let sidecar = start(&toml).await;
    let proxy = sidecar.proxy_addr;
    let url = upstream.url("/refresh");

    let until = Instant::now() + Duration::from_secs(4);
    let mut tasks = Vec::new();
    for task in 0..4 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u32;
            while Instant::now() < until {
                let body = format!(r#"{{"task":{task},"n":{sent},"token":"{{/A}}"}}"#);
                let reply =
                    post(proxy, &url, &[("authorization", "Bearer {/A}"), ("content-type", "application/json")], body)
                        .await;
                reply.assert_upstream_ok();
                sent += 1;
                // Pace the loop so four tasks do not starve the refresher on two cores.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            sent
        }));
    }
    let mut total = 0;
    for t in tasks {
        let sent = t.await.expect("client task panicked");
        assert!(sent >= 10, "a client task only managed {sent} requests in 4 s");
        total += sent;
    }

    let received = upstream.requests();
    assert_eq!(received.len(), total as usize, "every request should reach the upstream");
    let mut distinct = HashSet::new();
    for r in &received {
        let header_token = r.token().to_string();
        let body: serde_json::Value = serde_json::from_slice(&r.body()).expect("JSON body");
        assert_eq!(body["token"], header_token.as_str(), "header and body carry different tokens in one request");
        verify_demo_at(&header_token, r.arrived);
        distinct.insert(header_token);
    }
    assert!(
        distinct.len() >= 3,
        "only {} distinct tokens in 4 s, re-signed every second: no refresh happened",
        distinct.len()
    );
    sidecar.shutdown().await;
}

/// A request whose body is still streaming when its token is refreshed: the placeholder in the
/// part of the body sent after the refresh gets the same token as the target, the header and
/// the part sent before, not the new one that requests started after the refresh get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_during_a_streamed_body_does_not_change_the_requests_token() {
    let upstream = Upstream::start().await;
    // Requests to the probe upstream show the token a request starting now gets.
    let probe = Upstream::builder().echo().start().await;
    // Re-signed about 2 s after each signing; each token stays valid for 10 s, so the first
    // one is still good when the body ends after the refresh.
    let token = format!("{}refresh_before = \"8s\"\n", rs256_token("A", "10s"));
    let toml = config(
        "max_buffered_body = \"64KiB\"",
        &format!("{token}{}{}", route(upstream.port(), &["A"], ""), route(probe.port(), &["A"], "")),
    );
    let sidecar = start(&toml).await;
    let proxy = sidecar.proxy_addr;

    let (tx, body) = channel_body(4);
    let request = Request::post(upstream.url("/stream?t={/A}"))
        .header("authorization", "Bearer {/A}")
        .header("content-type", "application/json")
        .body(body)
        .expect("request");
    let reply = tokio::spawn(send(proxy, request));
    // More than max_buffered_body: streamed, so the head and this part reach the upstream now.
    let padding = "x".repeat(70 << 10);
    tx.send(Bytes::from(format!("{{\"before\":\"{{/A}}\",\"padding\":\"{padding}\","))).await.expect("first part");
    // Target, header and the first body placeholder have arrived.
    let mut first = Vec::new();
    let streamed = wait_until(Duration::from_secs(10), async || {
        first = upstream.last().map(|r| r.jwts()).unwrap_or_default();
        first.len() >= 3
    })
    .await;
    assert!(streamed, "the head and the first part of the body did not reach the upstream: {first:?}");
    let loaded = upstream.single().token().to_string();

    // Wait, with the body still open, until a new request gets a refreshed token.
    let mut probes = Client::new(proxy);
    let mut now_served = String::new();
    let refreshed = wait_until(Duration::from_secs(10), async || {
        let reply = probes.get(&probe.url("/probe"), &[("authorization", "Bearer {/A}")]).await.expect("probe");
        let echoed = reply.headers.get("x-echo-authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
        now_served = echoed.strip_prefix("Bearer ").unwrap_or_default().to_string();
        !now_served.is_empty() && now_served != loaded
    })
    .await;
    assert!(refreshed, "token A was not refreshed within 10 s (still {now_served:?})");

    tx.send(Bytes::from_static(b"\"after\":\"{/A}\"}")).await.expect("second part");
    drop(tx);
    reply.await.expect("request task").assert_upstream_ok();

    let seen = upstream.single();
    let tokens = seen.jwts();
    let places: Vec<&str> = vec!["target", "header", "body before the refresh", "body after the refresh"];
    assert_eq!(tokens.len(), places.len(), "expected a token in each place: {tokens:?}");
    for ((token, at), place) in tokens.iter().zip(&places) {
        assert_eq!(token, &loaded, "the {place} carries another token than the request started with");
        assert_ne!(token, &now_served);
        verify_demo_at(token, *at);
    }
    assert_eq!(seen.uri, format!("/stream?t={loaded}"));
    let body: serde_json::Value = serde_json::from_slice(&seen.body()).expect("JSON body");
    assert_eq!(body["after"], loaded.as_str());
    sidecar.shutdown().await;
}
