//! `stale_while_revalidate`: past its ttl an entry is served at once while one background
//! request renews it. `stale_if_error`: past its ttl an entry stands in for a failing upstream
//! (an error status, or no upstream at all), but never past the window or for
//! `must-revalidate` answers.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{assert_reply, cache_state, cached_route};
use crate::support::client::{get, Reply};
use crate::support::config::{config, rs256_token};
use crate::support::origin::{Answer, Origin};
use crate::support::sidecar::start;
use crate::support::wait::wait_until;

fn text(port: u16, name: &str, cache: &str) -> String {
    config("", &format!("{}{}", rs256_token("tok", "10m"), cached_route(name, port, &["tok"], "", cache)))
}

/// Polls `url` until it is answered with cache state `state` (the entry aged into it).
async fn until_state(proxy: std::net::SocketAddr, url: &str, state: &str) -> Reply {
    let mut last = None;
    let reached = wait_until(Duration::from_secs(10), async || {
        let reply = get(proxy, url, &[]).await;
        let done = cache_state(&reply) == state;
        last = Some(reply);
        done
    })
    .await;
    let last = last.expect("a reply");
    assert!(reached, "never answered {state:?}; last: {} {:?}", cache_state(&last), last.text());
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_entry_is_served_while_one_request_refreshes_it() {
    let origin = Origin::counting().await;
    let sidecar = start(&text(origin.port(), "swr", "ttl = \"1s\"\nstale_while_revalidate = \"60s\"")).await;
    let url = origin.url("/feed");
    assert_reply(&get(sidecar.proxy_addr, &url, &[]).await, "1", "miss");

    // Once the ttl passes, the old answer comes back at once, marked stale...
    origin.hold();
    let stale = until_state(sidecar.proxy_addr, &url, "stale").await;
    assert_reply(&stale, "1", "stale");
    // ...and one refresh goes upstream in the background (held there for now); more stale
    // answers meanwhile start no second refresh.
    let refreshing = wait_until(Duration::from_secs(5), async || origin.count() == 2).await;
    assert!(refreshing, "no background refresh");
    let refresh = origin.last();
    assert_eq!((refresh.method.as_str(), refresh.uri.as_str()), ("GET", "/feed"), "the same request, repeated");
    assert!(refresh.headers.get("content-length").is_none(), "a GET without a body stays without one");
    assert_reply(&get(sidecar.proxy_addr, &url, &[]).await, "1", "stale");
    assert_eq!(origin.count(), 2);
    origin.release(1);
    let renewed = until_state(sidecar.proxy_addr, &url, "hit").await;
    assert_reply(&renewed, "2", "hit");
    assert_eq!(origin.count(), 2);
    sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_entry_stands_in_for_a_failing_upstream() {
    let status = Arc::new(AtomicU16::new(200));
    let answer_with = Arc::clone(&status);
    let origin = Origin::start(move |seen, n| {
        let answer = Answer::ok(n.to_string()).status(answer_with.load(Ordering::SeqCst));
        if seen.uri == "/strict" {
            answer.header("cache-control", "max-age=1, must-revalidate")
        } else {
            answer
        }
    })
    .await;
    let sidecar = start(&text(origin.port(), "sie", "ttl = \"1s\"\nstale_if_error = \"60s\"")).await;
    let url = origin.url("/quote");
    let strict = origin.url("/strict");
    assert_reply(&get(sidecar.proxy_addr, &url, &[]).await, "1", "miss");
    assert_reply(&get(sidecar.proxy_addr, &strict, &[]).await, "2", "miss");

    // The upstream starts failing; once the ttl has passed, the stale answer is served.
    status.store(503, Ordering::SeqCst);
    let stale = until_state(sidecar.proxy_addr, &url, "stale").await;
    assert_reply(&stale, "1", "stale");
    assert!(origin.count() >= 3, "the upstream was asked first");
    // must-revalidate: the failure is passed on instead.
    let failed = until_state(sidecar.proxy_addr, &strict, "miss").await;
    assert_eq!(failed.status, 503);

    // No upstream at all: still the stale answer.
    drop(origin);
    let unreachable = get(sidecar.proxy_addr, &url, &[]).await;
    assert_reply(&unreachable, "1", "stale");
    let age: u64 = unreachable.headers["age"].to_str().unwrap().parse().unwrap();
    assert!(age >= 1, "Age {age}");
    sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_stale_windows_an_expired_entry_is_never_served() {
    let origin = Origin::counting().await;
    let sidecar = start(&text(origin.port(), "no-stale", "ttl = \"1s\"")).await;
    let url = origin.url("/quote");
    assert_reply(&get(sidecar.proxy_addr, &url, &[]).await, "1", "miss");
    origin.script(|_, n| Answer::ok(n.to_string()).status(502));
    let failed = until_state(sidecar.proxy_addr, &url, "miss").await;
    assert_eq!((failed.status.as_u16(), failed.text().as_str()), (502, "2"));
    sidecar.shutdown().await;
}
