//! Tokens are re-signed ahead of expiry while requests keep flowing; every request carries a
//! current token, the same one in its header and its body.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::support::client::post;
use crate::support::config::{config, route, rs256_token};
use crate::support::jwt::verify_demo_at;
use crate::support::sidecar::start;
use crate::support::upstream::Upstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_always_carry_a_current_consistent_token() {
    let upstream = Upstream::start().await;
    let token = format!("{}refresh_before = \"1s\"\n", rs256_token("A", "2s"));
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
    assert!(distinct.len() >= 3, "only {} distinct tokens in 4 s with ttl 2s: no refresh happened", distinct.len());
    sidecar.shutdown().await;
}
