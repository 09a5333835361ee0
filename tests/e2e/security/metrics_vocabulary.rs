//! Metrics speak the error codes' vocabulary and count every response (issue 10, item 6).

use std::time::Duration;

use crate::support::config::{config, rs256_token};
use crate::support::metrics::scrape;
use crate::support::raw::{exchange, get_bytes};
use crate::support::sidecar::Running;
use crate::support::tunnel::open_tunnel;
use crate::support::upstream::Upstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_and_failed_connects_are_counted_by_error_code() {
    let slow = Upstream::with_delay(Duration::from_secs(5)).await;
    // An address nothing listens on: a port bound, then released (it cannot be otherwise).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind");
    let config = format!(
        "{}{}[[routes]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {}\ntokens = [\"tok\"]\n",
        config("request_timeout = \"1s\"", ""),
        rs256_token("tok", "10m"),
        slow.port(),
    );
    let run = Running::start(&config).await;

    // A response timeout is `upstream_timeout`, like the error code the client gets.
    let host = format!("127.0.0.1:{}", slow.port());
    let timed_out = exchange(run.proxy(), &get_bytes(&format!("http://{host}/x"), &host, &[])).await;
    timed_out.assert_error(504, "upstream_timeout", "response timeout");

    // A CONNECT to a dead port is a failed request, counted like any other.
    let refused = match open_tunnel(run.proxy(), &dead.to_string()).await {
        Ok(_) => panic!("CONNECT to a dead port succeeded"),
        Err(response) => response,
    };
    refused.assert_error(502, "upstream_unreachable", "CONNECT to a dead port");

    let metrics = scrape(run.admin()).await;
    assert_eq!(metrics.count("upstream_errors_total", &[("kind", "upstream_timeout")]), 1.0);
    assert_eq!(metrics.count("upstream_errors_total", &[("kind", "timeout")]), 0.0);
    assert_eq!(metrics.count("upstream_errors_total", &[("kind", "upstream_unreachable")]), 1.0);
    assert_eq!(metrics.count("proxy_requests_total", &[("route", "tunnel"), ("status", "502")]), 1.0);
}
