//! Issue 9, finding 9: a request loads its route's tokens when its head arrives, but nothing
//! the upstream receives may carry a token whose `exp` has passed by the time it arrives. A
//! buffered body that comes in after the token's expiry gets 503 `token_unavailable`; a
//! streamed body whose placeholder comes in after it ends the upstream request instead.
//!
//! Tokens live 2 s (the minimum `ttl`; `refresh_before` defaults to ttl / 5, which the
//! validation requires to be shorter than ttl). The refresher keeps signing new ones, which the
//! request does not see: it holds the token it loaded.

use std::time::{Duration, SystemTime};

use crate::support::config::{config, route, rs256_token};
use crate::support::jwt::{claims, unix_secs};
use crate::support::raw::{Answering, RawConn};
use crate::support::sidecar::Running;
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

const TTL: Duration = Duration::from_secs(2);

/// The `exp` claim of `token`, without checking the signature.
fn exp_of(token: &str) -> f64 {
    claims(token)["exp"].as_f64().unwrap_or_else(|| panic!("no exp claim in {token}"))
}

/// Every token the upstream received had not expired when it arrived.
fn assert_nothing_expired(upstream: &Upstream) {
    for request in upstream.requests() {
        for (token, at) in request.jwts() {
            let exp = exp_of(&token);
            let arrived = unix_secs(at);
            assert!(
                exp > arrived,
                "{} {} carried a token that expired {:.1} s before it reached the upstream",
                request.method,
                request.uri,
                arrived - exp
            );
        }
    }
}

/// Sleeps until the wall clock is past `until`.
async fn sleep_until(until: SystemTime) {
    if let Ok(left) = until.duration_since(SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
}

#[tokio::test]
async fn body_arriving_after_the_token_expired_gets_503_not_an_expired_token() {
    let upstream = Upstream::start().await;
    let text = config("", &format!("{}{}", rs256_token("tok", "2s"), route(upstream.port(), &["tok"], "")));
    let run = Running::start(&text).await;

    let body = br#"{"token":"{/tok}"}"#;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nX-Token: {{/tok}}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        upstream.url("/late"),
        upstream.addr,
        body.len()
    );
    let mut stream = RawConn::sending(run.proxy(), head.as_bytes()).await;
    // The token loaded for this head was signed before it arrived, so it expires within TTL
    // of now; the body comes a second after that.
    sleep_until(SystemTime::now() + TTL + Duration::from_secs(1)).await;
    stream.send(body).await.expect("write the body");
    let reply = tokio::time::timeout(Duration::from_secs(5), stream.read_response(Answering::Request))
        .await
        .expect("an answer")
        .expect("a response");

    assert_nothing_expired(&upstream);
    assert_eq!(reply.status, 503, "{}", reply.summary());
    assert_eq!(reply.sidecar_error(), Some("token_unavailable"), "{}", reply.summary());
    assert!(!reply.text().contains("eyJ"), "the error carries a token: {}", reply.text());
    assert_eq!(upstream.count(), 0, "a refused request reached the upstream");
}

#[tokio::test]
async fn streamed_body_never_carries_a_token_past_its_exp() {
    let upstream = Upstream::start().await;
    let text = config(
        "max_buffered_body = \"64KiB\"",
        &format!("{}{}", rs256_token("tok", "2s"), route(upstream.port(), &["tok"], "")),
    );
    let run = Running::start(&text).await;

    // A chunked body larger than max_buffered_body: the sidecar streams it upstream.
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nX-Token: {{/tok}}\r\nTransfer-Encoding: chunked\r\n\r\n",
        upstream.url("/stream"),
        upstream.addr
    );
    let first = vec![b'a'; 100_000];
    let mut stream = RawConn::sending(run.proxy(), head.as_bytes()).await;
    stream.send(format!("{:x}\r\n", first.len()).as_bytes()).await.expect("write");
    stream.send(&first).await.expect("write");
    stream.send(b"\r\n").await.expect("write");
    assert!(
        wait_until(Duration::from_secs(5), async || upstream.count() == 1).await,
        "the streamed request did not reach the upstream"
    );
    let sent = upstream.requests()[0].header("x-token").expect("x-token").to_string();
    let exp = exp_of(&sent);
    assert!(exp > unix_secs(upstream.requests()[0].arrived), "the head already carried an expired token");

    // The token of this request expires; then the body names it again.
    sleep_until(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(exp + 0.3)).await;
    let second = format!("{}, token={{/tok}}, {}", "b".repeat(1000), "c".repeat(10_000));
    stream.send(format!("{:x}\r\n{second}\r\n0\r\n\r\n", second.len()).as_bytes()).await.expect("write");
    let reply = tokio::time::timeout(Duration::from_secs(5), stream.read_response(Answering::Request)).await;
    assert!(
        wait_until(Duration::from_secs(5), async || upstream.requests()[0].ended).await,
        "the upstream request neither ended nor was cut"
    );

    assert_nothing_expired(&upstream);
    let seen = &upstream.requests()[0];
    assert!(!seen.complete, "the upstream received the whole request although its token had expired");
    let reply = reply.expect("an answer").expect("a response");
    assert_eq!(reply.status, 503, "{}", reply.summary());
    assert_eq!(reply.sidecar_error(), Some("token_unavailable"), "{}", reply.summary());
}
