//! HTTP semantics: what the upstream says about storing (`Cache-Control`, `Set-Cookie`,
//! `Vary`, encodings, statuses), lifetimes (`max-age` below the ttl, `Age`), and what a
//! request asks (`no-cache` refreshes, `Range` bypasses).

use std::time::{Duration, Instant};

use super::{assert_reply, cache_state, cached_route};
use crate::support::client::{get, Reply};
use crate::support::config::{config, rs256_token};
use crate::support::origin::{Answer, Origin};
use crate::support::sidecar::start;
use crate::support::wait::wait_until;

/// Answers by path: `/no-store` etc. set what their names say; the body is the request count.
async fn scripted() -> Origin {
    Origin::start(|seen, n| {
        let answer = Answer::ok(n.to_string());
        match seen.uri.as_str() {
            "/no-store" => answer.header("cache-control", "no-store"),
            "/private" => answer.header("cache-control", "private, max-age=60"),
            "/no-cache" => answer.header("cache-control", "no-cache"),
            "/cookie" => answer.header("set-cookie", "session=s3cret; HttpOnly"),
            "/short" => answer.header("cache-control", "max-age=1"),
            "/aged" => answer.header("cache-control", "max-age=3600").header("age", "30"),
            "/must-revalidate" => answer.header("cache-control", "max-age=60, must-revalidate"),
            "/vary-origin" => answer.header("vary", "Origin"),
            "/vary-encoding" => answer.header("vary", "Accept-Encoding, Authorization"),
            "/vary-star" => answer.header("vary", "*"),
            "/gzip" => answer.header("content-encoding", "gzip"),
            "/missing" => answer.status(404),
            "/broken" => answer.status(500),
            "/created" => answer.status(201),
            _ => answer,
        }
    })
    .await
}

fn text(port: u16, name: &str, cache: &str) -> String {
    config("", &format!("{}{}", rs256_token("tok", "10m"), cached_route(name, port, &["tok"], "", cache)))
}

async fn twice(proxy: std::net::SocketAddr, url: &str) -> (Reply, Reply) {
    (get(proxy, url, &[]).await, get(proxy, url, &[]).await)
}

#[tokio::test]
async fn what_the_upstream_forbids_or_personalises_is_not_stored() {
    let origin = scripted().await;
    let sidecar = start(&text(origin.port(), "forbidden", "ttl = \"60s\"")).await;
    for path in
        ["/no-store", "/private", "/no-cache", "/cookie", "/vary-origin", "/vary-star", "/gzip", "/broken", "/created"]
    {
        let before = origin.count();
        let (first, second) = twice(sidecar.proxy_addr, &origin.url(path)).await;
        assert_eq!((cache_state(&first), cache_state(&second)), ("miss", "miss"), "{path}");
        assert_eq!(origin.count(), before + 2, "{path}: not stored");
    }
    assert_eq!(origin.last().header("accept-encoding"), Some("identity"), "cached routes ask for unencoded answers");
    let (first, second) = twice(sidecar.proxy_addr, &origin.url("/cookie")).await;
    assert!(first.headers.contains_key("set-cookie") && second.headers.contains_key("set-cookie"));

    for path in ["/vary-encoding", "/missing", "/plain"] {
        let (first, second) = twice(sidecar.proxy_addr, &origin.url(path)).await;
        assert_eq!((cache_state(&first), cache_state(&second)), ("miss", "hit"), "{path} is stored");
        assert_eq!(first.status, second.status);
    }
    sidecar.shutdown().await;
}

#[tokio::test]
async fn ignore_cache_control_stores_anyway_but_never_a_cookie_and_statuses_are_configurable() {
    let origin = scripted().await;
    let sidecar =
        start(&text(origin.port(), "ignoring", "ttl = \"60s\"\nignore_cache_control = true\nstatuses = [200, 201]"))
            .await;
    for path in ["/no-store", "/private", "/no-cache", "/short", "/created"] {
        let (first, second) = twice(sidecar.proxy_addr, &origin.url(path)).await;
        assert_eq!((cache_state(&first), cache_state(&second)), ("miss", "hit"), "{path}");
    }
    for path in ["/cookie", "/missing"] {
        let (first, second) = twice(sidecar.proxy_addr, &origin.url(path)).await;
        assert_eq!((cache_state(&first), cache_state(&second)), ("miss", "miss"), "{path}");
    }
    sidecar.shutdown().await;
}

#[tokio::test]
async fn a_shorter_max_age_wins_over_the_ttl_and_age_counts() {
    let origin = scripted().await;
    let sidecar = start(&text(origin.port(), "lifetimes", "ttl = \"60s\"")).await;
    let short = origin.url("/short");
    let started = Instant::now();
    assert_reply(&get(sidecar.proxy_addr, &short, &[]).await, "1", "miss");
    let expired = wait_until(Duration::from_secs(10), async || {
        cache_state(&get(sidecar.proxy_addr, &short, &[]).await) == "miss"
    })
    .await;
    assert!(expired, "max-age=1 did not shorten the 60 s ttl");
    assert!(started.elapsed() >= Duration::from_secs(1));

    // The upstream's Age (30 s) carries on into the answers served from the cache.
    let aged = origin.url("/aged");
    let first = get(sidecar.proxy_addr, &aged, &[]).await;
    assert_eq!(first.headers["age"], "30", "a miss passes the upstream's Age on");
    let hit = get(sidecar.proxy_addr, &aged, &[]).await;
    assert_eq!(cache_state(&hit), "hit");
    let age: u64 = hit.headers["age"].to_str().unwrap().parse().unwrap();
    assert!((30..40).contains(&age), "Age {age}");
    sidecar.shutdown().await;
}

#[tokio::test]
async fn a_no_cache_request_refreshes_the_entry_and_range_and_no_store_requests_bypass() {
    let origin = Origin::counting().await;
    let sidecar = start(&text(origin.port(), "refreshing", "ttl = \"60s\"")).await;
    let url = origin.url("/doc");
    let with = |headers: &'static [(&'static str, &'static str)]| get(sidecar.proxy_addr, &url, headers);
    assert_reply(&with(&[]).await, "1", "miss");
    assert_reply(&with(&[]).await, "1", "hit");
    assert_reply(&with(&[("cache-control", "no-cache")]).await, "2", "bypass");
    assert_reply(&with(&[]).await, "2", "hit");
    assert_reply(&with(&[("pragma", "no-cache")]).await, "3", "bypass");
    assert_reply(&with(&[("cache-control", "max-age=0")]).await, "4", "bypass");
    assert_reply(&with(&[]).await, "4", "hit");

    assert_reply(&with(&[("cache-control", "no-store")]).await, "5", "bypass");
    assert_reply(&with(&[("range", "bytes=0-0")]).await, "6", "bypass");
    assert_reply(&with(&[("if-none-match", "\"x\"")]).await, "7", "bypass");
    assert_reply(&with(&[]).await, "4", "hit");
    sidecar.shutdown().await;
}
