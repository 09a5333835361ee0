//! Upstream failures become clear JSON errors, and the sidecar keeps serving.

use std::time::{Duration, Instant};

use crate::support::client::get;
use crate::support::config::{config, route, rs256_token};
use crate::support::jwt::verify_demo;
use crate::support::sidecar::start;
use crate::support::upstream::Upstream;

#[tokio::test]
async fn unreachable_and_slow_upstreams_get_502_and_504_then_service_continues() {
    let healthy = Upstream::start().await;
    let slow = Upstream::start().await;
    slow.set_delay(Duration::from_secs(5));
    // A port nothing listens on: bound, then released (it cannot be otherwise).
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind").port();

    let toml = config(
        "request_timeout = \"1s\"\nconnect_timeout = \"2s\"",
        &format!(
            "{}{}{}{}",
            rs256_token("A", "15m"),
            route(healthy.port(), &["A"], ""),
            route(slow.port(), &["A"], ""),
            route(dead_port, &["A"], "")
        ),
    );
    let sidecar = start(&toml).await;
    let auth = [("authorization", "Bearer {/A}")];

    let reply = get(sidecar.proxy_addr, &format!("http://127.0.0.1:{dead_port}/x"), &auth).await;
    reply.assert_error(502, "upstream_unreachable");

    let started = Instant::now();
    let reply = get(sidecar.proxy_addr, &slow.url("/slow"), &auth).await;
    reply.assert_error(504, "upstream_timeout");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "timed out before request_timeout: {waited:?}");
    assert!(waited < Duration::from_secs(4), "did not time out at request_timeout (1s): {waited:?}");
    assert_eq!(slow.requests().len(), 1, "the slow upstream should have received the request");

    let reply = get(sidecar.proxy_addr, &healthy.url("/after"), &auth).await;
    reply.assert_upstream_ok();
    verify_demo(healthy.single().token());
    sidecar.shutdown().await;
}

#[tokio::test]
async fn upstream_error_statuses_are_relayed_as_the_upstreams_own() {
    let upstream = Upstream::start().await;
    upstream.set_status(503);
    let toml = config("", &format!("{}{}", rs256_token("A", "15m"), route(upstream.port(), &["A"], "")));
    let sidecar = start(&toml).await;

    let reply = get(sidecar.proxy_addr, &upstream.url("/down"), &[("authorization", "Bearer {/A}")]).await;
    assert_eq!(reply.status.as_u16(), 503);
    assert_eq!(reply.body.as_ref(), b"upstream ok", "the upstream's body must be relayed");
    assert!(
        reply.headers.get(token_sidecar::error::ERROR_HEADER).is_none(),
        "an upstream's error must not look like one the sidecar generated"
    );
    verify_demo(upstream.single().token());
    sidecar.shutdown().await;
}
