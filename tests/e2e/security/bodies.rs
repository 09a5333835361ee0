//! Issue 9, findings 10 and 11: bodies of every method are forwarded or substituted like POST
//! bodies and refused the same way; trailers naming a token the route does not bind are
//! refused like headers; encoded (compressed) bodies pass unscanned, byte for byte.
//!
//! Requests are written as raw HTTP/1.1 so that the method, framing and trailers are exactly
//! what a hostile client sends.

use std::time::Duration;

use crate::support::config::{config, route, rs256_token};
use crate::support::jwt::{find_jwts, verify_demo};
use crate::support::raw::{Answering, RawConn};
use crate::support::sidecar::Running;
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

/// `tok` is bound by the route to `routed`; `tok_other` is configured, bound only to another
/// host; `unrouted` has no route at all.
async fn world(proxy_extra: &str) -> (Upstream, Upstream, Running) {
    let routed = Upstream::start().await;
    let unrouted = Upstream::start().await;
    let text = config(
        proxy_extra,
        &format!(
            "{}{}{}[[routes]]\nscheme = \"http\"\nhost = \"other.test\"\ntokens = [\"tok_other\"]\n",
            rs256_token("tok", "15m"),
            rs256_token("tok_other", "15m"),
            route(routed.port(), &["tok"], "")
        ),
    );
    let run = Running::start(&text).await;
    (routed, unrouted, run)
}

/// A request with a `Content-Length` body.
fn with_body(method: &str, upstream: &Upstream, path: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        upstream.url(path),
        upstream.addr,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// `size` bytes of JSON-ish text with `inner` in the middle.
fn big_body(size: usize, inner: &str) -> Vec<u8> {
    let mut body = format!("{{\"pad\":\"{}", "p".repeat(size / 2)).into_bytes();
    body.extend_from_slice(format!("\",\"token\":\"{inner}\",\"more\":\"").as_bytes());
    while body.len() < size - 2 {
        body.push(b'q');
    }
    body.extend_from_slice(b"\"}");
    body
}

// ---------------------------------------------------------------------------------------------
// Finding 10: GET and HEAD bodies

/// Bodies over this stream upstream (chunked) instead of being rewritten whole; a 70 KB body
/// takes that path, a small one the buffered path.
const STREAM_ABOVE: &str = "max_buffered_body = \"64KiB\"";

#[tokio::test]
async fn get_and_head_bodies_naming_an_unbound_token_are_refused() {
    let (routed, _unrouted, run) = world(STREAM_ABOVE).await;
    for size in [1_000, 70_000] {
        let body = big_body(size, "{/tok_other}");
        for method in ["GET", "HEAD"] {
            let before = routed.bytes();
            let path = format!("/search/{method}/{size}");
            let mut stream = RawConn::sending(run.proxy(), &with_body(method, &routed, &path, &body)).await;
            let reply = tokio::time::timeout(
                Duration::from_secs(8),
                stream.read_response(if method == "HEAD" { Answering::Head } else { Answering::Request }),
            )
            .await
            .expect("an answer")
            .expect("a response");
            let what = format!("{method} with a {size}-byte body naming tok_other");
            assert_eq!(reply.status, 403, "{what}: {}", reply.summary());
            assert_eq!(reply.sidecar_error(), Some("placeholder_not_allowed"), "{what}: {}", reply.summary());
            if size < 64 << 10 {
                assert_eq!(routed.bytes(), before, "{what}: the upstream received bytes of a refused request");
            }
            // A streamed body may have been started upstream, but never completed.
            assert_never_completed(&routed, &path).await;
        }
    }
}

/// The upstream never received a complete request for `path` (an aborted start is allowed).
async fn assert_never_completed(upstream: &Upstream, path: &str) {
    let ended = wait_until(Duration::from_secs(5), async || {
        upstream.requests().iter().filter(|r| r.uri == path).all(|r| r.ended)
    })
    .await;
    assert!(ended, "{path}: the upstream request was left open");
    for seen in upstream.requests().iter().filter(|r| r.uri == path) {
        assert!(!seen.complete, "{path}: the upstream received the whole refused request");
        assert!(seen.trailers.is_none(), "{path}: the upstream received the trailer {:?}", seen.trailers);
    }
}

#[tokio::test]
async fn get_bodies_with_a_bound_placeholder_are_substituted() {
    let (routed, _unrouted, run) = world(STREAM_ABOVE).await;
    for size in [1_000, 70_000] {
        let body = big_body(size, "{/tok}");
        let path = format!("/search/{size}");
        let mut stream = RawConn::sending(run.proxy(), &with_body("GET", &routed, &path, &body)).await;
        let reply = stream.expect_response("GET with a body").await;
        assert_eq!(reply.status, 200, "{size}: {}", reply.summary());
        let seen = routed.requests().into_iter().find(|r| r.uri == path).expect("the GET reached the upstream");
        assert_eq!(seen.method, "GET");
        assert!(seen.complete);
        let received = seen.body();
        assert!(!received.is_empty(), "{size}: the GET reached the upstream without its body");
        let text = String::from_utf8(received.to_vec()).expect("UTF-8 body");
        let tokens = find_jwts(&text);
        assert_eq!(tokens.len(), 1, "{size}: the placeholder was not substituted once");
        assert_eq!(verify_demo(&tokens[0])["sub"], "tok");
        let expected = String::from_utf8(body.clone()).expect("UTF-8").replacen("{/tok}", &tokens[0], 1);
        assert!(text == expected, "{size}: the GET body was altered beyond its placeholder");
        if let Some(length) = seen.header("content-length") {
            assert_eq!(length, text.len().to_string());
        }
    }
}

#[tokio::test]
async fn unrouted_get_with_a_chunked_body_is_forwarded_intact() {
    let (_routed, unrouted, run) = world("").await;
    let pieces: [&[u8]; 4] = [b"{\"a\":", b"\"{/tok}\",", b"\"b\":\"{/tok_other}\"", b"}"];
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        unrouted.url("/plain"),
        unrouted.addr
    )
    .into_bytes();
    for piece in pieces {
        request.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        request.extend_from_slice(piece);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let mut stream = RawConn::sending(run.proxy(), &request).await;
    let reply = stream.expect_response("unrouted GET with a chunked body").await;
    assert_eq!(reply.status, 200, "{}", reply.summary());
    let seen = unrouted.requests().pop().expect("the GET reached the upstream");
    assert_eq!(seen.method, "GET");
    assert!(seen.complete);
    assert_eq!(seen.body(), pieces.concat(), "an unrouted GET body must pass untouched");
}

// ---------------------------------------------------------------------------------------------
// Finding 11: trailers and encoded bodies

/// A chunked POST of `body` (in 16 KiB chunks) whose trailer `x-signature` names `tok_other`.
fn with_trailer(upstream: &Upstream, path: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nTrailer: x-signature\r\n\r\n",
        upstream.url(path),
        upstream.addr
    )
    .into_bytes();
    for chunk in body.chunks(16 << 10) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\nx-signature: Bearer {/tok_other}\r\n\r\n");
    out
}

#[tokio::test]
async fn trailer_naming_an_unbound_token_is_refused() {
    // Bodies over 64 KiB stream: the trailer arrives after the upstream request has started.
    let (routed, _unrouted, run) = world(STREAM_ABOVE).await;
    for (path, size) in [("/buffered", 1_000), ("/streamed", 200_000)] {
        let body = vec![b'z'; size];
        let mut stream = RawConn::sending(run.proxy(), &with_trailer(&routed, path, &body)).await;
        let reply = stream.expect_response("a trailer naming tok_other").await;
        assert_eq!(reply.status, 403, "{path}: {}", reply.summary());
        assert_eq!(reply.sidecar_error(), Some("placeholder_not_allowed"), "{path}: {}", reply.summary());
        // The upstream may have seen the start of a streamed request, but never its end.
        if size < 64 << 10 {
            assert!(routed.requests().iter().all(|r| r.uri != path), "{path}: a buffered request reached the upstream");
        }
        assert_never_completed(&routed, path).await;
    }
}

#[tokio::test]
async fn gzip_body_is_forwarded_byte_for_byte() {
    let (routed, _unrouted, run) = world("").await;
    // Not real gzip, which is the point: the sidecar does not look inside encoded bodies
    // (a documented limitation), even at placeholders; their headers are still substituted.
    let mut body = vec![0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff];
    body.extend_from_slice(b"{/tok} and {/tok_other}");
    body.extend((0..=255u8).rev());
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {{/tok}}\r\nContent-Encoding: gzip\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        routed.url("/gz"),
        routed.addr,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let mut stream = RawConn::sending(run.proxy(), &request).await;
    let reply = stream.expect_response("a gzip body").await;
    assert_eq!(reply.status, 200, "{}", reply.summary());
    let seen = routed.requests().pop().expect("the request reached the upstream");
    assert_eq!(seen.body(), body, "an encoded body was altered");
    assert_eq!(seen.header("content-encoding"), Some("gzip"));
    let bearer = seen.header("authorization").and_then(|a| a.strip_prefix("Bearer ")).expect("bearer");
    assert_eq!(verify_demo(bearer)["sub"], "tok");
}
