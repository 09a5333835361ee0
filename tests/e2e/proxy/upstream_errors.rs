//! Upstream failures become clear JSON errors that never show the tokens the request carried,
//! and the sidecar keeps serving.

use std::time::{Duration, Instant};

use crate::support::client::get;
use crate::support::config::{config, route, rs256_token};
use crate::support::jwt::{find_jwts, verify_demo};
use crate::support::logs::{contains, line_with};
use crate::support::raw::{exchange, get_bytes, RawResponse};
use crate::support::sidecar::{start, Running};
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

/// A token substituted into the request target stays out of the 502 and 504 the sidecar
/// answers when the upstream cannot be reached or does not answer in time: not in the JSON
/// body, not in a response header, not in the sidecar's log (at trace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_the_target_stays_out_of_502_and_504_answers_and_the_log() {
    let slow = Upstream::with_delay(Duration::from_secs(5)).await;
    // A port nothing listens on: bound, then released as the listener drops at once.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind").port();
    let toml = config(
        "request_timeout = \"500ms\"\nconnect_timeout = \"2s\"",
        &format!("{}{}{}", rs256_token("A", "15m"), route(slow.port(), &["A"], ""), route(dead_port, &["A"], "")),
    );
    let run = Running::start_with(&toml, None, "trace").await;

    // 504: the request reaches the slow upstream (which shows the token it carried), whose
    // answer comes too late.
    let authority = slow.addr.to_string();
    let reply = exchange(run.proxy(), &get_bytes(&slow.url("/slow?key={/A}"), &authority, &[])).await;
    reply.assert_error(504, "upstream_timeout", "slow upstream");
    let seen = slow.single();
    let token = seen.uri.strip_prefix("/slow?key=").unwrap_or_default().to_string();
    verify_demo(&token);
    assert_token_absent(&reply, &token, "504");

    // 502: the same token (one value for its 15 minutes) in a target nothing listens on.
    let dead = format!("127.0.0.1:{dead_port}");
    let reply = exchange(run.proxy(), &get_bytes(&format!("http://{dead}/path?key={{/A}}"), &dead, &[])).await;
    reply.assert_error(502, "upstream_unreachable", "dead port");
    assert_token_absent(&reply, &token, "502");

    let log = run.sidecar.log_text();
    assert!(log.contains("token-sidecar ready"), "the log was not captured");
    assert!(!contains(&log, &token), "the log holds the token: {}", line_with(&log, &token));
    assert_eq!(find_jwts(&log), Vec::<String>::new(), "the log holds a JWT");
}

fn assert_token_absent(reply: &RawResponse, token: &str, what: &str) {
    for (name, value) in &reply.headers {
        assert!(!value.contains(token), "{what}: header {name} holds the token");
    }
    assert!(!reply.text().contains(token), "{what}: the body holds the token: {}", reply.text());
    reply.assert_no_jwt(what);
}
