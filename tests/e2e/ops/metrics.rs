//! `/metrics` is valid Prometheus text and its counters follow the traffic.
//!
//! The recorder is process-wide and other tests in this binary record too, so the assertions
//! use this test's own route and token names, and compare deltas or lower bounds.

use std::time::Duration;

use crate::support::client::{get, Client};
use crate::support::config::ConfigDir;
use crate::support::metrics::{scrape, Metrics, Sample};
use crate::support::sidecar::{start_file, Running};
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics() {
    let upstream = Upstream::start().await;
    // An address nothing listens on: a port bound, then released (it cannot be otherwise).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind");
    let dir = ConfigDir::with_demo_keys();
    let path = dir.write_config(&format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
connect_timeout = "2s"

[admin]
listen = "127.0.0.1:0"

[tokens.metrics_api]
algorithm = "EdDSA"
key_type = "EdPem"
key_file = "keys/demo-ed.key.pem"
ttl = "10m"

[[routes]]
name = "metrics-live"
scheme = "http"
host = "127.0.0.1"
port = {live}
tokens = ["metrics_api"]

[[routes]]
name = "metrics-dead"
scheme = "http"
host = "127.0.0.1"
port = {dead}
tokens = ["metrics_api"]
"#,
        live = upstream.port(),
        dead = dead.port(),
    ));
    let sidecar = start_file(&path).await;
    let admin = sidecar.admin_addr;

    let before = scrape(admin).await;
    // Started: the first token was signed.
    assert!(before.count("token_refreshes_total", &[("token", "metrics_api"), ("result", "ok")]) >= 1.0);

    let live = [("route", "metrics-live"), ("status", "200")];
    let requests = 5;
    let mut client = Client::new(sidecar.proxy_addr);
    for _ in 0..requests {
        let r = client.get(&upstream.url("/m"), &[("authorization", "Bearer {/metrics_api}")]).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let dead_reply = get(sidecar.proxy_addr, &format!("http://{dead}/m"), &[]).await;
    assert_eq!(dead_reply.status, 502, "{}", dead_reply.text());
    assert_eq!(dead_reply.sidecar_error(), Some("upstream_unreachable"));

    let after = scrape(admin).await;
    let delta = |name: &str, labels: &[(&str, &str)]| after.count(name, labels) - before.count(name, labels);
    assert_eq!(delta("proxy_requests_total", &live), requests as f64);
    assert_eq!(delta("proxy_requests_total", &[("route", "metrics-dead"), ("status", "502")]), 1.0);
    assert_eq!(delta("substitutions_total", &[("token", "metrics_api")]), requests as f64);
    assert!(delta("upstream_errors_total", &[("kind", "upstream_unreachable")]) >= 1.0);
    assert!(after.count("token_refreshes_total", &[("token", "metrics_api"), ("result", "ok")]) >= 1.0);

    let expires = after.value("token_expires_in_seconds", &[("token", "metrics_api")]).expect("expiry gauge");
    assert!(expires > 0.0 && expires <= 600.0, "token_expires_in_seconds = {expires}");
    assert!(after.value("proxy_open_connections", &[]).is_some(), "proxy_open_connections missing");

    // The duration histogram: typed, cumulative buckets ending in +Inf that equal _count.
    assert_eq!(after.types.get("proxy_request_duration_seconds").map(String::as_str), Some("histogram"));
    let route = [("route", "metrics-live")];
    let mut buckets: Vec<(f64, f64)> =
        after.find("proxy_request_duration_seconds_bucket", &route).iter().map(|s| (le(s), s.value)).collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() >= 2, "too few buckets: {buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "buckets are not cumulative: {buckets:?}");
    let (last_le, last) = *buckets.last().unwrap();
    assert!(last_le.is_infinite(), "the last bucket must be +Inf: {buckets:?}");
    let count = after.value("proxy_request_duration_seconds_count", &route).expect("_count");
    assert_eq!(last, count);
    assert!(count >= requests as f64);
    assert!(after.value("proxy_request_duration_seconds_sum", &route).is_some_and(|s| s >= 0.0));
    let count_before = before.count("proxy_request_duration_seconds_count", &route);
    assert_eq!(count - count_before, requests as f64);

    drop(client);
    sidecar.shutdown().await;
}

/// `proxy_open_connections` counts the client connections open now, exactly. The real binary,
/// so that no other test's connections share the gauge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_gauge_is_exact() {
    let upstream = Upstream::start().await;
    let running = Running::start(&format!(
        r#"
[proxy]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[[routes]]
name = "gauge"
scheme = "http"
host = "127.0.0.1"
port = {port}
"#,
        port = upstream.port()
    ))
    .await;
    let admin = running.admin();
    // Scrapes go to the admin listener, which the gauge does not count.
    let gauge = async || scrape(admin).await.value("proxy_open_connections", &[]).expect("proxy_open_connections");
    assert_eq!(gauge().await, 0.0, "no client has connected yet");

    // Keep-alive connections, each held open after one request.
    let mut clients = Vec::new();
    for n in 1..=3 {
        let mut client = Client::new(running.proxy());
        client.get(&upstream.url("/held"), &[]).await.expect("request through the proxy").assert_upstream_ok();
        clients.push(client);
        let counted = wait_until(Duration::from_secs(5), async || gauge().await == f64::from(n)).await;
        assert!(counted, "proxy_open_connections is {}, expected {n} open connections", gauge().await);
    }

    // One closes, then the rest.
    drop(clients.pop());
    let one_less = wait_until(Duration::from_secs(5), async || gauge().await == 2.0).await;
    assert!(one_less, "proxy_open_connections is {} after one of 3 connections closed", gauge().await);
    drop(clients);
    let back = wait_until(Duration::from_secs(5), async || gauge().await == 0.0).await;
    assert!(back, "proxy_open_connections is {} after every connection closed", gauge().await);
}

fn le(s: &Sample) -> f64 {
    match s.labels.get("le").map(String::as_str) {
        Some("+Inf") => f64::INFINITY,
        Some(v) => v.parse().unwrap_or_else(|_| panic!("bad le {v:?}")),
        None => panic!("bucket without le"),
    }
}

/// The exposition checker itself: accepts valid text, rejects what Prometheus would reject.
#[test]
fn exposition_checker_rejects_malformed_text() {
    let valid = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 3\n\n\
                 # TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.7\nh_count 2\n\
                 # TYPE g gauge\ng -1.5e-3 1700000000000\n";
    let m = Metrics::parse(valid).unwrap();
    assert_eq!(m.value("a_total", &[("y", "q\"")]), Some(3.0));
    assert_eq!(m.value("h_count", &[]), Some(2.0));
    for bad in [
        "# TYPE a_total counter\na_total{x=\"1\"}",
        "# TYPE a_total counter\na_total{x=1} 3",
        "# TYPE a_total counter\na_total{x=\"1\" 3",
        "# TYPE a_total counter\na_total three",
        "# TYPE a_total counter\na_total 3 4 5",
        "# TYPE a_total countr\na_total 3",
        "# TYPE 1a counter\n1a 3",
        "no_type_line 3",
        "# TYPE h histogram\nh_bucket 1",
    ] {
        assert!(Metrics::parse(bad).is_err(), "accepted {bad:?}");
    }
}
