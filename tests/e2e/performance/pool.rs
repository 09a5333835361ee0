//! The upstream connection pool: a connection is reused once its response has been read,
//! requests over h2 share one connection, idle connections close after `pool_idle_timeout`,
//! and neither an upstream that closes its connections nor a client that abandons a response
//! makes a request fail or wait.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::client::{get, post, request, send};
use crate::support::config::{config, route, rs256_token};
use crate::support::metrics::scrape;
use crate::support::origin::{Answer, Origin};
use crate::support::sidecar::Running;
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

fn sidecar_config(port: u16, proxy_extra: &str, route_extra: &str) -> String {
    config(proxy_extra, &format!("{}{}", rs256_token("tok", "15m"), route(port, &["tok"], route_extra)))
}

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection_whatever_their_answer() {
    let upstream = Upstream::start().await;
    let run = Running::start(&sidecar_config(upstream.port(), "", "")).await;
    let token = [("x-token", "{/tok}")];
    // Bodies of every framing the pool must see the end of: a length, none (HEAD, 204), and
    // a request body. Each request comes on a new client connection.
    for round in 0..3 {
        get(run.proxy(), &upstream.url("/get"), &token).await.assert_upstream_ok();
        let head = send(run.proxy(), request("HEAD", &upstream.url("/head"), &token, "")).await;
        assert_eq!(head.status, 200, "HEAD, round {round}");
        upstream.set_status(204);
        let empty = get(run.proxy(), &upstream.url("/204"), &token).await;
        assert_eq!(empty.status, 204, "204, round {round}");
        upstream.set_status(200);
        post(run.proxy(), &upstream.url("/post"), &token, "a body with {/tok}").await.assert_upstream_ok();
    }
    assert_eq!(upstream.count(), 12);
    assert_eq!(upstream.connections(), 1, "every request after the first reused the first connection");
    let metrics = scrape(run.admin()).await;
    assert_eq!(metrics.count("upstream_connections_opened_total", &[("protocol", "http1")]), 1.0);
}

#[tokio::test]
async fn concurrent_h2_requests_share_one_upstream_connection() {
    let upstream = Upstream::start().await;
    // A plain-HTTP upstream reached over h2 with prior knowledge.
    let run = Running::start(&sidecar_config(upstream.port(), "", "upstream_http2 = true")).await;
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..16 {
        let (proxy, url) = (run.proxy(), upstream.url(&format!("/h2/{i}")));
        requests.spawn(async move { get(proxy, &url, &[("x-token", "{/tok}")]).await });
    }
    while let Some(reply) = requests.join_next().await {
        reply.expect("a request task").assert_upstream_ok();
    }
    assert_eq!(upstream.count(), 16);
    for r in upstream.requests() {
        assert_eq!(r.version, http::Version::HTTP_2);
        // The host goes in :authority alone: nginx answers 400 to an h2 request that also
        // has a Host header ("client sent duplicate host header").
        assert!(r.header("host").is_none(), "an h2 request carried a Host header: {:?}", r.hosts());
        assert_eq!(r.hosts(), [upstream.addr.to_string()]);
    }
    assert_eq!(upstream.connections(), 1, "h2 requests opened more than one connection");
    let metrics = scrape(run.admin()).await;
    assert_eq!(metrics.count("upstream_connections_opened_total", &[("protocol", "h2")]), 1.0);
}

#[tokio::test]
async fn an_idle_upstream_connection_is_closed_after_pool_idle_timeout() {
    let upstream = Upstream::start().await;
    let run = Running::start(&sidecar_config(upstream.port(), "pool_idle_timeout = \"1s\"", "")).await;
    // The connection goes idle after this instant (its request has not been sent yet), so a
    // close less than one timeout from here would be premature.
    let idle_since = Instant::now();
    get(run.proxy(), &upstream.url("/first"), &[("x-token", "{/tok}")]).await.assert_upstream_ok();
    assert_eq!(upstream.open_connections(), 1);
    // Closed by the sidecar's sweeper (between one and one and a half timeouts), not before.
    assert!(
        wait_until(Duration::from_secs(4), async || upstream.open_connections() == 0).await,
        "the idle connection is still open {:?} after its last use (pool_idle_timeout 1s)",
        idle_since.elapsed()
    );
    let closed_after = idle_since.elapsed();
    assert!(closed_after >= Duration::from_secs(1), "closed after {closed_after:?}, before the idle timeout");
    // The next request opens a new connection and is served.
    get(run.proxy(), &upstream.url("/second"), &[("x-token", "{/tok}")]).await.assert_upstream_ok();
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn an_upstream_that_closes_after_each_answer_never_fails_a_request() {
    // Keep-alive in form (no `Connection: close`), closed right after each answer.
    let upstream = Upstream::builder()
        .raw(|_| vec![b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nupstream ok".to_vec()])
        .start()
        .await;
    let run = Running::start(&sidecar_config(upstream.port(), "", "")).await;
    for i in 0..10 {
        let reply = get(run.proxy(), &upstream.url(&format!("/{i}")), &[("x-token", "{/tok}")]).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
    }
    assert_eq!(upstream.connections(), 10);
}

#[tokio::test]
async fn a_response_the_client_abandons_does_not_hold_up_the_next_request() {
    // The first answer sends part of its body and holds the rest; later answers are whole.
    let origin = Origin::start(|_, n| {
        if n == 1 {
            Answer::ok(vec![b'a'; 1000]).then(vec![b'b'; 1000])
        } else {
            Answer::ok(format!("answer {n}"))
        }
    })
    .await;
    let run = Running::start(&sidecar_config(origin.port(), "", "")).await;
    let mut client = TcpStream::connect(run.proxy()).await.unwrap();
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Token: {{/tok}}\r\n\r\n",
        origin.url("/held"),
        origin.port()
    );
    client.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"aaaa") {
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "the proxy closed before the first part of the body");
        got.extend_from_slice(&buf[..n]);
    }
    // The client leaves in the middle of the body.
    drop(client);
    let started = Instant::now();
    let reply = get(run.proxy(), &origin.url("/next"), &[("x-token", "{/tok}")]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "answer 2");
    assert!(started.elapsed() < Duration::from_secs(3), "the next request waited {:?}", started.elapsed());
    assert_eq!(origin.connections(), 2, "the abandoned response's connection was not reused");
}
