//! Concurrent misses for one key make one upstream request; the others wait for it, for a
//! bounded time, and go upstream themselves when its answer is not stored or is late.

use std::time::Duration;

use super::{cache_report, cache_state, cached_route};
use crate::support::client::{get, Reply};
use crate::support::config::{config, rs256_token};
use crate::support::origin::{Answer, Origin};
use crate::support::sidecar::start;
use crate::support::wait::wait_until;

fn text(port: u16, name: &str, proxy_extra: &str) -> String {
    let route = cached_route(name, port, &["tok"], "", "ttl = \"60s\"");
    config("", &format!("[cache]\n{proxy_extra}\n{}{route}", rs256_token("tok", "10m")))
}

/// Sends `n` identical requests at once; returns their tasks.
fn fire(proxy: std::net::SocketAddr, url: &str, n: usize) -> Vec<tokio::task::JoinHandle<Reply>> {
    (0..n)
        .map(|_| {
            let url = url.to_string();
            tokio::spawn(async move { get(proxy, &url, &[("authorization", "Bearer {/tok}")]).await })
        })
        .collect()
}

/// Waits until `GET /cache` shows `waiting` requests waiting on a fetch.
async fn wait_for_waiting(admin: std::net::SocketAddr, waiting: u64) {
    let mut last = serde_json::Value::Null;
    let seen = wait_until(Duration::from_secs(15), async || {
        last = cache_report(admin).await;
        last["waiting"] == waiting
    })
    .await;
    assert!(seen, "expected {waiting} coalesced requests waiting; GET /cache: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_misses_make_one_upstream_request() {
    let origin = Origin::counting().await;
    origin.hold();
    let sidecar = start(&text(origin.port(), "coalesced", "")).await;
    let replies = fire(sidecar.proxy_addr, &origin.url("/v1/report?id=9"), 50);

    // All fifty are in the sidecar: one at the upstream, forty-nine waiting for it.
    wait_for_waiting(sidecar.admin_addr, 49).await;
    assert_eq!(origin.count(), 1);
    assert_eq!(cache_report(sidecar.admin_addr).await["fetching"], 1);
    origin.release(1);

    let mut states = std::collections::BTreeMap::new();
    for reply in replies {
        let reply = reply.await.expect("request task");
        assert_eq!((reply.status.as_u16(), reply.text().as_str()), (200, "1"), "every caller got the one answer");
        *states.entry(cache_state(&reply).to_string()).or_insert(0) += 1;
    }
    assert_eq!(states, [("hit".to_string(), 49), ("miss".to_string(), 1)].into(), "{states:?}");
    assert_eq!(origin.count(), 1, "one upstream request for fifty callers");
    let report = cache_report(sidecar.admin_addr).await;
    assert_eq!((&report["fetching"], &report["waiting"]), (&0.into(), &0.into()), "{report}");
    sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_go_upstream_themselves_when_the_first_answer_is_not_stored() {
    let origin = Origin::start(|_, n| Answer::ok(n.to_string()).header("cache-control", "no-store")).await;
    origin.hold();
    let sidecar = start(&text(origin.port(), "unstorable", "")).await;
    let replies = fire(sidecar.proxy_addr, &origin.url("/live"), 5);
    wait_for_waiting(sidecar.admin_addr, 4).await;
    origin.release(1);
    // The four waiters wake when the answer turns out unstorable, and each goes upstream.
    let all_sent = wait_until(Duration::from_secs(15), async || origin.count() == 5).await;
    assert!(all_sent, "the waiters did not go upstream: {} requests", origin.count());
    origin.release(4);
    let mut bodies: Vec<String> = Vec::new();
    for reply in replies {
        let reply = reply.await.expect("request task");
        assert_eq!((reply.status.as_u16(), cache_state(&reply)), (200, "miss"));
        bodies.push(reply.text());
    }
    bodies.sort();
    assert_eq!(bodies, ["1", "2", "3", "4", "5"]);
    sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_is_bounded_by_coalesce_wait() {
    let origin = Origin::counting().await;
    origin.hold();
    let sidecar = start(&text(origin.port(), "impatient", "coalesce_wait = \"300ms\"")).await;
    let replies = fire(sidecar.proxy_addr, &origin.url("/slow"), 3);
    // The first is held at the upstream; after 300 ms the other two stop waiting for it.
    let all_sent = wait_until(Duration::from_secs(15), async || origin.count() == 3).await;
    assert!(all_sent, "waiters still waiting past coalesce_wait: {} upstream requests", origin.count());
    assert_eq!(cache_report(sidecar.admin_addr).await["waiting"], 0);
    origin.release(3);
    for reply in replies {
        let reply = reply.await.expect("request task");
        assert_eq!((reply.status.as_u16(), cache_state(&reply)), (200, "miss"));
    }
    sidecar.shutdown().await;
}
