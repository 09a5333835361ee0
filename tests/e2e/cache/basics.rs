//! Hit, miss and expiry with real time; HEAD apart from GET; the header, `Age` and metrics.

use std::time::{Duration, Instant};

use super::{assert_reply, cache_state, cached_route};
use crate::support::client::{get, request, send, Reply};
use crate::support::config::{config, route, rs256_token};
use crate::support::metrics::scrape;
use crate::support::origin::Origin;
use crate::support::sidecar::Running;
use crate::support::wait::wait_until;

const AUTH: [(&str, &str); 1] = [("authorization", "Bearer {/tok}")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_call_is_answered_from_the_cache_until_its_ttl_passes() {
    let origin = Origin::counting().await;
    let text = config(
        "",
        &format!(
            "{}{}",
            rs256_token("tok", "10m"),
            cached_route("lookup", origin.port(), &["tok"], "", "ttl = \"2s\"")
        ),
    );
    let run = Running::start(&text).await;
    let url = origin.url("/v1/lookup?id=7");

    let started = Instant::now();
    let first = get(run.proxy(), &url, &AUTH).await;
    assert_reply(&first, "1", "miss");
    assert!(first.headers.get("age").is_none(), "a fetched answer has no Age of ours");
    assert!(
        origin.last().header("authorization").is_some_and(|a| a.starts_with("Bearer eyJ")),
        "the miss carried a token"
    );

    let second = get(run.proxy(), &url, &AUTH).await;
    assert_reply(&second, "1", "hit");
    let age: u64 = second.headers["age"].to_str().unwrap().parse().expect("Age is whole seconds");
    assert!(age <= 2, "Age {age}");
    assert_eq!(second.headers["content-length"], "1");
    assert_eq!(origin.count(), 1, "the hit did not reach the upstream");

    // Real time: hits until the ttl has passed, then one miss that stores the new answer.
    let mut last: Option<Reply> = None;
    let expired = wait_until(Duration::from_secs(10), async || {
        let reply = get(run.proxy(), &url, &AUTH).await;
        let missed = cache_state(&reply) == "miss";
        if !missed {
            assert_reply(&reply, "1", "hit");
        }
        last = Some(reply);
        missed
    })
    .await;
    assert!(expired, "the entry never expired");
    assert!(started.elapsed() >= Duration::from_secs(2), "expired before its ttl: {:?}", started.elapsed());
    assert_reply(last.as_ref().unwrap(), "2", "miss");
    assert_reply(&get(run.proxy(), &url, &AUTH).await, "2", "hit");
    assert_eq!(origin.count(), 2);

    let metrics = scrape(run.admin()).await;
    let count = |result| metrics.count("cache_requests_total", &[("route", "lookup"), ("result", result)]);
    assert_eq!(count("miss"), 2.0);
    assert!(count("hit") >= 2.0);
    assert_eq!(count("stale") + count("bypass"), 0.0);
}

#[tokio::test]
async fn head_and_get_are_stored_apart_and_uncached_routes_are_untouched() {
    let origin = Origin::counting().await;
    let plain = Origin::counting().await;
    let text = config(
        "",
        &format!(
            "{}{}{}",
            rs256_token("tok", "10m"),
            cached_route("head-get", origin.port(), &["tok"], "", "ttl = \"60s\""),
            route(plain.port(), &["tok"], "")
        ),
    );
    let sidecar = crate::support::sidecar::start(&text).await;
    let url = origin.url("/item");
    let head = || send(sidecar.proxy_addr, request("HEAD", &url, &AUTH, ""));

    let first = head().await;
    assert_eq!((first.status.as_u16(), cache_state(&first)), (200, "miss"));
    assert_eq!(first.headers["content-length"], "1", "the origin's length of the GET body");
    assert_eq!(origin.last().method, http::Method::HEAD, "HEAD went upstream as HEAD");
    let second = head().await;
    assert_eq!((second.status.as_u16(), cache_state(&second), second.body.len()), (200, "hit", 0));
    assert_eq!(second.headers["content-length"], "1", "HEAD keeps the stored length");
    assert_reply(&get(sidecar.proxy_addr, &url, &AUTH).await, "2", "miss");
    assert_reply(&get(sidecar.proxy_addr, &url, &AUTH).await, "2", "hit");
    assert_eq!(origin.count(), 2);

    for n in ["1", "2"] {
        let reply = get(sidecar.proxy_addr, &plain.url("/item"), &AUTH).await;
        assert_eq!(reply.text(), n, "a route without [routes.cache] is never cached");
        assert!(reply.headers.get("x-token-sidecar-cache").is_none(), "no cache header on uncached routes");
    }
    sidecar.shutdown().await;
}
