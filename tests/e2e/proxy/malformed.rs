//! Requests hyper cannot parse get the sidecar's own error (JSON body and
//! `x-token-sidecar-error`), on the proxy port and inside an intercepted tunnel, and the
//! connection closes with nothing forwarded. What only looks like hyper's bare answer, an
//! upstream's own `400` relayed or bytes in a blind tunnel, is never rewritten.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::ca::TestCa;
use crate::support::config::{config, route, rs256_token, TLS_SECTION, UPSTREAM_CA_FILE};
use crate::support::jwt::verify_demo;
use crate::support::raw::{get_bytes, Answering, RawConn, RawResponse, DEADLINE};
use crate::support::sidecar::Running;
use crate::support::tunnel::{intercepted_raw, open_tunnel};
use crate::support::upstream::Upstream;

/// Byte for byte what hyper answers a request head it cannot parse.
const BARE_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// A sidecar routing `upstream` with token `A`.
async fn routing(upstream: &Upstream) -> Running {
    Running::start(&config("", &format!("{}{}", rs256_token("A", "10m"), route(upstream.port(), &["A"], "")))).await
}

/// A head for `upstream` through the proxy with `extra` lines (each ending in CRLF) added,
/// keeping the connection open.
fn head(method: &str, upstream: &Upstream, path: &str, extra: &str) -> String {
    format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {{/A}}\r\n{extra}\r\n",
        upstream.url(path),
        upstream.addr
    )
}

/// The sidecar's error `status` / `code`, as JSON, then the end of the connection.
async fn assert_error_then_close<S: tokio::io::AsyncRead + Unpin>(
    conn: &mut RawConn<S>,
    reply: &RawResponse,
    status: u16,
    code: &str,
    what: &str,
) {
    reply.assert_error(status, code, what);
    assert_eq!(reply.header("content-type"), Some("application/json"), "{what}: {}", reply.head);
    let rest = conn.rest_until_close(DEADLINE).await;
    assert_eq!(rest.as_deref(), Some(&b""[..]), "{what}: the connection was not closed after the error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparsable_head_gets_a_json_400_and_the_connection_closes() {
    let upstream = Upstream::start().await;
    let run = routing(&upstream).await;
    let cases = [
        ("a header line without a colon", head("GET", &upstream, "/x", "this header line has no colon\r\n")),
        ("a method with a character methods cannot hold", head("G@T", &upstream, "/x", "")),
    ];
    for (what, request) in cases {
        let mut conn = RawConn::sending(run.proxy(), request.as_bytes()).await;
        let reply = conn.expect_response(what).await;
        assert_error_then_close(&mut conn, &reply, 400, "bad_request", what).await;
    }
    assert_eq!(upstream.bytes(), 0, "bytes of an unparsable request reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_larger_than_the_parser_reads_gets_a_json_431() {
    let upstream = Upstream::start().await;
    let run = routing(&upstream).await;
    // 1 MiB of one header, with no end of head in sight: hyper reads about 400 KB of a head
    // (a little more or less depending on how its reads fall; 500 KB sometimes parses whole).
    let request = head("GET", &upstream, "/big", &format!("X-Big: {}\r\n", "a".repeat(1 << 20)));
    let stream = TcpStream::connect(run.proxy()).await.expect("connect");
    let (reader, mut writer) = stream.into_split();
    let mut conn = RawConn::new(reader);
    // The sidecar answers (and closes) before it has read everything: write and read at once;
    // the write fails once the sidecar has closed.
    let (written, reply) = tokio::join!(writer.write_all(request.as_bytes()), conn.read_response(Answering::Request));
    let reply = reply.unwrap_or_else(|e| panic!("no answer to an over-long head: {e}; write: {written:?}"));
    assert_error_then_close(&mut conn, &reply, 431, "headers_too_large", "a 1 MiB head").await;
    assert_eq!(upstream.bytes(), 0, "bytes of the over-long request reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_request_pipelined_before_a_malformed_one_is_answered_first() {
    let upstream = Upstream::start().await;
    let run = routing(&upstream).await;
    let both =
        format!("{}{}", head("GET", &upstream, "/good", ""), head("GET", &upstream, "/bad", "no colon here\r\n"));
    let mut conn = RawConn::sending(run.proxy(), both.as_bytes()).await;
    let good = conn.expect_response("the good request").await;
    assert_eq!(good.status, 200, "{}", good.summary());
    assert_eq!(good.body, b"upstream ok");
    let bad = conn.expect_response("the malformed request after it").await;
    assert_error_then_close(&mut conn, &bad, 400, "bad_request", "pipelined after a good request").await;
    let seen = upstream.single();
    assert_eq!(seen.uri, "/good");
    verify_demo(seen.token());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparsable_head_inside_an_intercepted_tunnel_gets_a_json_400() {
    let ca = TestCa::new();
    let upstream = Upstream::tls(&ca).await;
    let rest = format!(
        "{TLS_SECTION}{}\n[[routes]]\nhost = \"localhost\"\nport = {}\ntokens = [\"A\"]\n",
        rs256_token("A", "10m"),
        upstream.port()
    );
    let run =
        Running::start_with(&config(&format!("extra_ca_file = \"{UPSTREAM_CA_FILE}\""), &rest), Some(&ca), "info")
            .await;
    let authority = format!("localhost:{}", upstream.port());
    let mut conn = intercepted_raw(run.proxy(), &authority, &run.ca_pem(), "localhost").await;
    let request = |path: &str, extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {{/A}}\r\n{extra}\r\n")
    };
    // A good request first: the tunnel works and stays open.
    let good = conn.request(request("/good", "").as_bytes()).await.expect("an answer in the tunnel");
    assert_eq!(good.status, 200, "{}", good.summary());
    verify_demo(upstream.single().token());
    let bad =
        conn.request(request("/bad", "no colon here\r\n").as_bytes()).await.expect("an answer to the malformed head");
    assert_error_then_close(&mut conn, &bad, 400, "bad_request", "inside an intercepted tunnel").await;
    assert_eq!(upstream.count(), 1, "the malformed request reached the upstream: {:?}", upstream.requests());
}

/// An upstream's own bare `400` is relayed as the upstream's, through a route and through a
/// blind tunnel, though it reads exactly like hyper's answer to a malformed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstreams_bare_400_is_passed_through_untouched() {
    let routed = Upstream::builder().raw(|_| vec![BARE_400.to_vec()]).start().await;
    let unrouted = Upstream::builder().raw(|_| vec![BARE_400.to_vec()]).start().await;
    let run = routing(&routed).await;

    // Proxied: the sidecar relays the upstream's status and empty body.
    for close in [true, false] {
        let mut request =
            get_bytes(&routed.url("/bare"), &routed.addr.to_string(), &[("Authorization", "Bearer {/A}")]);
        if !close {
            request = head("GET", &routed, "/bare", "").into_bytes();
        }
        let mut conn = RawConn::sending(run.proxy(), &request).await;
        let reply = conn.expect_response("the upstream's 400").await;
        assert_eq!(reply.status, 400, "{}", reply.summary());
        assert_eq!(reply.sidecar_error(), None, "the upstream's 400 was made the sidecar's: {}", reply.head);
        assert!(reply.body.is_empty(), "the upstream's empty body was replaced: {}", reply.text());
        assert_eq!(reply.header("content-length"), Some("0"), "{}", reply.head);
    }
    assert_eq!(routed.count(), 2);
    verify_demo(routed.requests()[0].token());

    // A blind tunnel (the port is not routed): the upstream's bytes arrive exactly.
    let mut tunnel = open_tunnel(run.proxy(), &unrouted.addr.to_string()).await.expect("a blind tunnel");
    let request = format!("GET /bare HTTP/1.1\r\nHost: {}\r\n\r\n", unrouted.addr);
    tunnel.write_all(request.as_bytes()).await.expect("write in the tunnel");
    let mut conn = RawConn::new(tunnel);
    let bytes = conn.rest_until_close(Duration::from_secs(10)).await.expect("the tunnel closes after the answer");
    assert_eq!(String::from_utf8_lossy(&bytes), String::from_utf8_lossy(BARE_400), "the tunnel's bytes were changed");
    assert_eq!(unrouted.single().uri, "/bare");
}
