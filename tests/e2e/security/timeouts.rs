//! Issue 9, finding 8: every stage of a connection has a timeout, and open connections are
//! capped. Each test configures small values and checks the sidecar acts within the timeout
//! plus [`SLACK`], and (where a premature cut would break clients) not much before it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::config::{config, route, rs256_token, TLS_SECTION};
use crate::support::raw::{Answering, RawConn};
use crate::support::sidecar::Running;
use crate::support::tunnel::{open_tunnel, tls_over};
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

/// How late after its timeout the sidecar may act.
const SLACK: Duration = Duration::from_millis(1500);

fn get(url: &str, host: SocketAddr) -> Vec<u8> {
    format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nX-Token: {{/tok}}\r\n\r\n").into_bytes()
}

fn assert_closed_in_time(what: &str, closed: Option<Duration>, timeout: Duration) {
    let Some(after) = closed else {
        panic!("{what}: still open {:?} after it should have been closed ({timeout:?} timeout)", timeout + SLACK)
    };
    assert!(after >= timeout.mul_f32(0.9), "{what}: closed after {after:?}, before its {timeout:?} timeout");
}

// ---------------------------------------------------------------------------------------------
// handshake_timeout

#[tokio::test]
async fn silent_connection_is_closed_after_handshake_timeout() {
    let upstream = Upstream::start().await;
    let text = config(
        "handshake_timeout = \"1s\"\nheader_timeout = \"1s\"",
        &format!("{}{}", rs256_token("tok", "15m"), route(upstream.port(), &["tok"], "")),
    );
    let run = Running::start(&text).await;
    let mut stream = RawConn::tcp(run.proxy()).await;
    let closed = stream.closed_within(Duration::from_secs(1) + SLACK).await;
    assert_closed_in_time("a connection that sends nothing", closed, Duration::from_secs(1));
}

#[tokio::test]
async fn partial_h2_preface_is_closed_after_handshake_timeout() {
    let upstream = Upstream::start().await;
    let text = config(
        "handshake_timeout = \"1s\"\nheader_timeout = \"1s\"",
        &format!("{}{}", rs256_token("tok", "15m"), route(upstream.port(), &["tok"], "")),
    );
    let run = Running::start(&text).await;
    // The first 16 of the 24 preface bytes ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").
    let mut stream = RawConn::sending(run.proxy(), b"PRI * HTTP/2.0\r\n").await;
    let closed = stream.closed_within(Duration::from_secs(1) + SLACK).await;
    assert_closed_in_time("a connection that sent part of the h2 preface", closed, Duration::from_secs(1));
}

/// A sidecar intercepting `localhost:PORT` of an upstream (which these tests never reach)
/// with a CA it generates in its config folder.
async fn interception_world(proxy_extra: &str) -> (Running, Upstream) {
    let upstream = Upstream::start().await;
    let text = config(
        proxy_extra,
        &format!(
            "{TLS_SECTION}{}[[routes]]\nhost = \"localhost\"\nport = {}\ntokens = [\"tok\"]\n",
            rs256_token("tok", "15m"),
            upstream.port()
        ),
    );
    (Running::start(&text).await, upstream)
}

/// Opens a CONNECT tunnel to `localhost:port` and checks the sidecar accepted it.
async fn tunnel(proxy: SocketAddr, port: u16) -> TcpStream {
    let target = format!("localhost:{port}");
    open_tunnel(proxy, &target).await.unwrap_or_else(|r| panic!("CONNECT {target}: {}", r.summary()))
}

#[tokio::test]
async fn intercepted_tunnel_without_client_hello_is_closed_after_handshake_timeout() {
    let (run, upstream) = interception_world("handshake_timeout = \"1s\"\nheader_timeout = \"1s\"").await;
    let mut stream = RawConn::new(tunnel(run.proxy(), upstream.port()).await);
    let closed = stream.closed_within(Duration::from_secs(1) + SLACK).await;
    assert_closed_in_time("an intercepted tunnel that never sends a ClientHello", closed, Duration::from_secs(1));
}

// ---------------------------------------------------------------------------------------------
// header_timeout inside a tunnel

#[tokio::test]
async fn trickled_head_inside_a_tunnel_is_cut_after_header_timeout() {
    let (run, upstream) = interception_world("handshake_timeout = \"5s\"\nheader_timeout = \"1s\"").await;
    let port = upstream.port();
    let stream = tunnel(run.proxy(), port).await;
    let tls = tls_over(stream, &run.ca_pem(), "localhost", &[b"http/1.1"])
        .await
        .expect("TLS handshake with the intercepting sidecar");
    let (reader, mut writer) = tokio::io::split(tls);
    let mut reader = RawConn::new(reader);

    // One byte every 300 ms: the head would take 30 s to arrive.
    let head = format!(
        "GET /trickle HTTP/1.1\r\nHost: localhost:{port}\r\nX-Token: {{/tok}}\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(40)
    );
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for byte in head.into_bytes() {
            if writer.write_all(&[byte]).await.is_err() || writer.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let closed = reader.closed_within(Duration::from_secs(1) + SLACK).await;
    trickle.abort();
    assert_closed_in_time("a tunnel request whose head trickles in", closed, Duration::from_secs(1));
    eprintln!("trickled head cut {:?} after its first byte", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// body_timeout

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_request_body_gets_408_and_releases_its_buffer() {
    const PART: usize = 600_000;
    let upstream = Upstream::start().await;
    // The budget holds one 600 KB body, not two.
    let text = config(
        "max_buffered_body = \"1MiB\"\nmax_buffered_total = \"1MiB\"\nbody_timeout = \"2s\"",
        &format!("{}{}", rs256_token("tok", "15m"), route(upstream.port(), &["tok"], "")),
    );
    let run = Running::start(&text).await;
    let post = |path: &str, length: usize| {
        format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nX-Token: {{/tok}}\r\nContent-Length: {length}\r\n\r\n",
            upstream.url(path),
            upstream.addr
        )
        .into_bytes()
    };
    let body = vec![b'b'; PART];

    // A routed POST that announces 900 KB, sends 600 KB and stops.
    let mut stalled = RawConn::sending(run.proxy(), &post("/stalled", 900_000)).await;
    // The sidecar reads the last of these bytes after this instant, so body_timeout cannot
    // run out before 2 s from here (`paused`, taken once the read is seen, can be later).
    let last_write = Instant::now();
    stalled.send(&body).await.expect("write part of the body");
    assert!(stalled.wait_absorbed(Duration::from_secs(5)).await, "the sidecar did not read the body");
    let paused = Instant::now();

    // While it holds 600 KB, another 600 KB body does not fit in max_buffered_total.
    let mut full = post("/second", PART);
    full.extend_from_slice(&body);
    let mut second = RawConn::sending(run.proxy(), &full).await;
    let reply = second.expect_response("a body beyond max_buffered_total").await;
    assert!(paused.elapsed() < Duration::from_secs(2), "too slow to check the budget before body_timeout");
    assert_eq!(reply.status, 503, "{}", reply.summary());
    assert_eq!(reply.sidecar_error(), Some("overloaded"), "{}", reply.summary());

    // The stalled request is answered 408 (or its connection closed) after body_timeout.
    let answer = tokio::time::timeout(Duration::from_secs(2) + SLACK, stalled.read_response(Answering::Request)).await;
    let waited = last_write.elapsed();
    match answer {
        Err(_) => panic!("a request body paused for {waited:?} (body_timeout 2s) is still waited for"),
        Ok(Ok(reply)) => {
            assert_eq!(reply.status, 408, "{}", reply.summary());
            assert_eq!(reply.sidecar_error(), Some("body_timeout"), "{}", reply.summary());
        }
        Ok(Err(e)) => eprintln!("stalled request: connection closed without an answer ({e})"),
    }
    assert!(waited >= Duration::from_secs(2), "cut {waited:?} after the last byte was written, before body_timeout");

    // Its buffer was released: a 600 KB body fits again.
    let mut third = RawConn::sending(run.proxy(), &{
        let mut r = post("/third", PART);
        r.extend_from_slice(&body);
        r
    })
    .await;
    let reply = third.expect_response("a body after the stalled one was cut").await;
    assert_eq!(reply.status, 200, "the stalled request's buffer was not released: {}", reply.summary());
    let uris: Vec<String> = upstream.requests().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(uris, ["/third"], "only the complete request may reach the upstream");
    assert_eq!(upstream.requests()[0].body().len(), PART);
}

/// An upstream that answers every request with the head and the first 1000 bytes of a
/// 100,000-byte body, then stalls with the connection open.
async fn stalling_upstream() -> Upstream {
    Upstream::builder()
        .raw(|_| {
            let mut response = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
            response.extend_from_slice(&[b'r'; 1000]);
            vec![response]
        })
        .hold_open()
        .start()
        .await
}

#[tokio::test]
async fn upstream_stalling_mid_response_body_is_cut_after_body_timeout() {
    let upstream = stalling_upstream().await;
    let text = config(
        "body_timeout = \"1s\"",
        &format!("{}{}", rs256_token("tok", "15m"), route(upstream.port(), &["tok"], "")),
    );
    let run = Running::start(&text).await;
    let stream = TcpStream::connect(run.proxy()).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::get(upstream.url("/slow"))
        .header("host", upstream.addr.to_string())
        .header("x-token", "{/tok}")
        .body(Empty::<Bytes>::new())
        .expect("request");
    // The sidecar's wait for the body starts after this instant (it has no head to wait on
    // before the request is sent), so a cut before 1 s from here would be premature.
    let sent = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .expect("response head in time")
        .expect("response head");
    assert_eq!(response.status(), 200);
    let started = Instant::now();
    let mut body = response.into_body();
    let mut received = 0;
    let ended = tokio::time::timeout(Duration::from_secs(1) + SLACK, async {
        loop {
            match body.frame().await {
                Some(Ok(frame)) => received += frame.data_ref().map_or(0, Bytes::len),
                Some(Err(e)) => return Err(e.to_string()),
                None => return Ok(()),
            }
        }
    })
    .await;
    match ended {
        Err(_) => panic!("the response body stalled by the upstream was still open after {:?}", started.elapsed()),
        Ok(Ok(())) => panic!("a cut response body ended cleanly after {received} of 100000 bytes"),
        Ok(Err(e)) => eprintln!("response body cut after {:?} and {received} bytes: {e}", started.elapsed()),
    }
    assert!(received < 100_000);
    assert!(
        sent.elapsed() >= Duration::from_secs(1),
        "cut {:?} after the request, before body_timeout",
        sent.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// idle_timeout

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let upstream = Upstream::builder().gated().start().await;
    let text = config(
        "idle_timeout = \"1s\"\nheader_timeout = \"10s\"\nhandshake_timeout = \"10s\"",
        &format!("{}{}", rs256_token("tok", "15m"), route(upstream.port(), &["tok"], "")),
    );
    let run = Running::start(&text).await;
    let mut stream = RawConn::sending(run.proxy(), &get(&upstream.url("/held"), upstream.addr)).await;

    // A request in flight for twice idle_timeout is not idle: it completes.
    assert!(wait_until(Duration::from_secs(5), async || upstream.in_flight() == 1).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    upstream.release(1);
    let reply = stream.expect_response("a request held longer than idle_timeout").await;
    assert_eq!(reply.status, 200, "{}", reply.summary());

    // Then the connection sits idle and is closed.
    let closed = stream.closed_within(Duration::from_secs(1) + SLACK).await;
    assert_closed_in_time("an idle keep-alive connection", closed, Duration::from_secs(1));
}

// ---------------------------------------------------------------------------------------------
// max_connections

#[tokio::test]
async fn connections_beyond_max_connections_wait_until_one_closes() {
    let upstream = Upstream::start().await;
    let text = config(
        "max_connections = 4\nidle_timeout = \"30s\"\nheader_timeout = \"30s\"\nhandshake_timeout = \"30s\"",
        &format!("{}{}", rs256_token("tok", "15m"), route(upstream.port(), &["tok"], "")),
    );
    let run = Running::start(&text).await;
    let mut open = Vec::new();
    for i in 0..4 {
        let mut stream = RawConn::sending(run.proxy(), &get(&upstream.url(&format!("/c{i}")), upstream.addr)).await;
        let reply = stream.expect_response("one of the first four connections").await;
        assert_eq!(reply.status, 200, "{}", reply.summary());
        open.push(stream);
    }

    let mut fifth = RawConn::sending(run.proxy(), &get(&upstream.url("/fifth"), upstream.addr)).await;
    let early = tokio::time::timeout(Duration::from_millis(700), fifth.read_response(Answering::Request)).await;
    assert!(early.is_err(), "a fifth connection was served beyond max_connections = 4: {early:?}");
    assert_eq!(upstream.count(), 4, "the fifth request reached the upstream");

    // One of the four closes: the fifth is served.
    drop(open.remove(0));
    let reply = fifth.expect_response("the fifth connection after one closed").await;
    assert_eq!(reply.status, 200, "{}", reply.summary());
    assert_eq!(upstream.requests().last().map(|r| r.uri.clone()).as_deref(), Some("/fifth"));
}
