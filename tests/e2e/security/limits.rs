//! Issue 9, findings 5 to 7: memory a client can pin. Header amplification (431/414), a body
//! of one-byte chunks, and stalled h2 streams (the global buffered-body budget, 503
//! `overloaded`, and `max_streams_per_connection`).
//!
//! Memory is measured as the sidecar's `VmRSS` (from `/proc/PID/status`), once the sidecar has
//! read everything the attack sent: the attacker's socket has nothing left in its send queue
//! and the sidecar's socket nothing in its receive queue (both from `/proc/net/tcp`).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::config::{config, route, rs256_token};
use crate::support::jwt::verify_demo;
use crate::support::raw::{absorbed, Answering, RawConn};
use crate::support::sidecar::Running;
use crate::support::upstream::Upstream;
use crate::support::wait::wait_until;

const MIB: u64 = 1 << 20;

// =============================================================================================
// Finding 5: header and URI amplification
// =============================================================================================

/// The default `max_header_bytes` and `max_uri_bytes` (the configs below leave them unset).
const MAX_HEADER_BYTES: usize = 64 << 10;
const MAX_URI_BYTES: usize = 16 << 10;

/// A route binding `tok` under the alias `t`, so a 4-byte `{/t}` becomes a whole RS256 JWT.
async fn amplification_world() -> (Upstream, Running, usize) {
    let upstream = Upstream::start().await;
    let text = config(
        "",
        &format!(
            "{}{}",
            rs256_token("tok", "15m"),
            route(upstream.port(), &["tok"], "[routes.placeholders]\nt = \"tok\"")
        ),
    );
    let run = Running::start(&text).await;
    // How long one token is, as the upstream receives it.
    let mut stream = RawConn::sending(
        run.proxy(),
        format!("GET {} HTTP/1.1\r\nHost: {}\r\nX-Probe: {{/t}}\r\n\r\n", upstream.url("/probe"), upstream.addr)
            .as_bytes(),
    )
    .await;
    let reply = stream.expect_response("probe").await;
    assert_eq!(reply.status, 200, "probe: {}", reply.summary());
    let token = upstream.requests()[0].header("x-probe").expect("x-probe").to_string();
    verify_demo(&token);
    (upstream, run, token.len())
}

/// A raw request head to `url` with `headers` (name, value) after Host.
fn head(method: &str, url: &str, host: std::net::SocketAddr, headers: &[(String, String)]) -> Vec<u8> {
    let mut text = format!("{method} {url} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// `count` headers `x-pad-NNN` each holding `per` copies of `{/t}`.
fn padded_headers(count: usize, per: usize) -> Vec<(String, String)> {
    (0..count).map(|i| (format!("x-pad-{i:03}"), "{/t}".repeat(per))).collect()
}

/// How many `x-pad-NNN` headers of `per` tokens of `token_len` bytes fit in `bytes` of names
/// and values (with 256 bytes left for Host and the like).
fn headers_for(bytes: usize, per: usize, token_len: usize) -> usize {
    (bytes - 256) / ("x-pad-000".len() + per * token_len)
}

#[tokio::test]
async fn substituted_head_over_max_header_bytes_is_refused_with_431() {
    let (upstream, run, token_len) = amplification_world().await;
    let per = 8;

    // Control: a head that is just under the limit once substituted is forwarded whole.
    let under = headers_for(MAX_HEADER_BYTES - 2048, per, token_len);
    let mut stream = RawConn::sending(
        run.proxy(),
        &head("GET", &upstream.url("/under"), upstream.addr, &padded_headers(under, per)),
    )
    .await;
    let reply = stream.expect_response("head just under max_header_bytes").await;
    assert_eq!(reply.status, 200, "a head {} bytes under the limit was refused: {}", 2048, reply.summary());
    let seen = upstream.requests().pop().expect("the control request reached the upstream");
    assert_eq!(seen.uri, "/under");
    for i in 0..under {
        let value = seen.header(&format!("x-pad-{i:03}")).unwrap_or_else(|| panic!("x-pad-{i:03} missing"));
        assert_eq!(value.len(), per * token_len, "x-pad-{i:03} was not substituted whole");
        assert!(!value.contains('{'), "x-pad-{i:03} still holds a placeholder");
    }

    // Just over the limit once substituted (the raw head is a few KiB): refused by the
    // sidecar itself, and nothing reaches the upstream.
    let over = headers_for(MAX_HEADER_BYTES + 2048, per, token_len) + 1;
    let before = upstream.bytes();
    let mut stream =
        RawConn::sending(run.proxy(), &head("GET", &upstream.url("/over"), upstream.addr, &padded_headers(over, per)))
            .await;
    let reply = stream.expect_response("head just over max_header_bytes").await;
    assert_eq!(reply.status, 431, "{}", reply.summary());
    assert_eq!(reply.sidecar_error(), Some("headers_too_large"), "{}", reply.summary());
    assert_eq!(upstream.bytes(), before, "the upstream received bytes of a refused request");
    assert!(!reply.text().contains("eyJ"), "the error response carries a token: {}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amplified_headers_do_not_pin_memory() {
    let (upstream, run, _token_len) = amplification_world().await;
    // 95 headers of 1000 x `{/t}`: 380 KB on the wire, ~60 MB once substituted.
    let attack = head("GET", &upstream.url("/amplify"), upstream.addr, &padded_headers(95, 1000));
    let before_bytes = upstream.bytes();
    let baseline = run.sidecar.rss();
    let mut answers = Vec::new();
    for i in 0..20 {
        let mut stream = TcpStream::connect(run.proxy()).await.expect("connect");
        // The sidecar may answer (and close) before it has read the whole head: write and read
        // at once, and accept a closed connection as a refusal too.
        let (reader, mut writer) = stream.split();
        let mut reader = RawConn::new(reader);
        let (written, reply) = tokio::join!(writer.write_all(&attack), async {
            tokio::time::timeout(Duration::from_secs(8), reader.read_response(Answering::Request)).await
        });
        match reply {
            Ok(Ok(reply)) => answers.push(reply),
            // Closed (or reset) before an answer: refused too, as long as nothing went upstream.
            Ok(Err(e)) => eprintln!("attack {i}: connection closed without an answer ({e}; write: {written:?})"),
            Err(_) => panic!("attack {i}: no answer within 8 s"),
        }
    }
    let grown = run.sidecar.rss().saturating_sub(baseline);
    eprintln!("RSS growth after 20 amplified heads: {} KiB", grown >> 10);
    assert!(grown < 16 * MIB, "RSS grew by {} MiB over 20 amplified requests", grown >> 20);
    assert_eq!(upstream.bytes(), before_bytes, "the upstream received bytes of the amplified requests");
    for reply in answers {
        assert_eq!(reply.status, 431, "{}", reply.summary());
        // hyper's own 431 (a head over its buffer) has no code; the sidecar's says which limit.
        if let Some(code) = reply.sidecar_error() {
            assert_eq!(code, "headers_too_large", "{}", reply.summary());
        }
    }
}

#[tokio::test]
async fn substituted_uri_over_max_uri_bytes_is_refused_with_414() {
    let (upstream, run, token_len) = amplification_world().await;
    let target = |n: usize| format!("{}?q={}", upstream.url("/items"), "%7B%2Ft%7D".repeat(n));

    // Control: just under the limit once substituted.
    let under = (MAX_URI_BYTES - 1024) / token_len;
    let mut stream = RawConn::sending(run.proxy(), &head("GET", &target(under), upstream.addr, &[])).await;
    let reply = stream.expect_response("target just under max_uri_bytes").await;
    assert_eq!(reply.status, 200, "{}", reply.summary());
    let seen = upstream.requests().pop().expect("the control request reached the upstream");
    assert!(!seen.uri.contains("%7B"), "a placeholder was left in {}", seen.uri);
    assert!(seen.uri.len() > under * token_len, "the target was not substituted: {} bytes", seen.uri.len());

    let over = (MAX_URI_BYTES + 1024) / token_len + 1;
    let before = upstream.bytes();
    let mut stream = RawConn::sending(run.proxy(), &head("GET", &target(over), upstream.addr, &[])).await;
    let reply = stream.expect_response("target over max_uri_bytes").await;
    assert_eq!(reply.status, 414, "{}", reply.summary());
    assert_eq!(reply.sidecar_error(), Some("uri_too_long"), "{}", reply.summary());
    assert_eq!(upstream.bytes(), before, "the upstream received bytes of a refused request");
}

// =============================================================================================
// Finding 6: a body of one-byte chunks
// =============================================================================================

/// `body` as HTTP/1.1 chunks of one byte each, without the terminating chunk.
fn one_byte_chunks(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() * 6);
    for &b in body {
        out.extend_from_slice(b"1\r\n");
        out.push(b);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_chunks_are_buffered_in_bounded_memory() {
    const BODY: usize = 600_000;
    let upstream = Upstream::start().await;
    let text = config(
        "max_buffered_body = \"1MiB\"",
        &format!("{}{}", rs256_token("tok", "15m"), route(upstream.port(), &["tok"], "")),
    );
    let run = Running::start(&text).await;
    let body: Vec<u8> = (0..BODY).map(|i| b'a' + (i % 26) as u8).collect();
    let request_head = |path: &str| {
        format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nX-Token: {{/tok}}\r\nTransfer-Encoding: chunked\r\n\r\n",
            upstream.url(path),
            upstream.addr
        )
    };

    // Warm up the same path (client connection, upstream connection, buffers) with a small body.
    let mut warm = request_head("/warm").into_bytes();
    warm.extend_from_slice(&one_byte_chunks(&body[..1000]));
    warm.extend_from_slice(b"0\r\n\r\n");
    let mut stream = RawConn::sending(run.proxy(), &warm).await;
    let reply = stream.expect_response("warm-up").await;
    assert_eq!(reply.status, 200, "warm-up: {}", reply.summary());
    drop(stream);
    let baseline = run.sidecar.rss();

    let mut stream = RawConn::sending(run.proxy(), request_head("/tiny").as_bytes()).await;
    let chunks = one_byte_chunks(&body);
    for part in chunks.chunks(256 << 10) {
        stream.send(part).await.expect("write chunks");
    }
    assert!(
        stream.wait_absorbed(Duration::from_secs(8)).await,
        "the sidecar stopped reading a {BODY}-byte body (under max_buffered_body) before its end"
    );
    let held = run.sidecar.rss().saturating_sub(baseline);
    eprintln!("RSS growth holding {BODY} one-byte chunks: {} KiB", held >> 10);
    assert_eq!(upstream.count(), 1, "the upstream got the buffered request before its end");

    stream.send(b"0\r\n\r\n").await.expect("write the last chunk");
    let reply = stream.expect_response("one-byte chunks").await;
    assert_eq!(reply.status, 200, "{}", reply.summary());
    let seen = upstream.requests().pop().expect("the request reached the upstream");
    assert_eq!(seen.uri, "/tiny");
    assert!(seen.complete);
    verify_demo(seen.header("x-token").expect("x-token"));
    let received = seen.body();
    assert_eq!(received.len(), BODY, "the body was not forwarded whole");
    assert!(received == body, "the body was altered on the way");
    assert!(held < 12 * MIB, "holding {BODY} one-byte chunks grew RSS by {} MiB", held >> 20);
}

// =============================================================================================
// Finding 7: stalled h2 streams
// =============================================================================================

/// A request body that sends `left` bytes in 16 KiB frames and then stalls forever (never
/// ends), noting when it has handed over its last byte.
struct StalledBody {
    left: usize,
    chunk: Bytes,
    sent: Arc<AtomicU64>,
    all_sent: Arc<AtomicBool>,
}

impl Body for StalledBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            // The h2 client only asks for more once the previous frame had window to go out.
            self.all_sent.store(true, Ordering::SeqCst);
            return Poll::Pending;
        }
        let n = self.left.min(self.chunk.len());
        self.left -= n;
        self.sent.fetch_add(n as u64, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        false
    }
}

/// Status and sidecar error code of each answered stream.
type Answers = Arc<Mutex<Vec<(u16, Option<String>)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_h2_streams_are_bounded_by_the_global_budget() {
    const STREAMS: usize = 100;
    const PER_STREAM: usize = 1_000_000;
    let upstream = Upstream::start().await;
    let text = config(
        "max_buffered_body = \"1MiB\"\nmax_buffered_total = \"8MiB\"\nmax_streams_per_connection = 100\n\
         body_timeout = \"30s\"",
        &format!("{}{}", rs256_token("tok", "15m"), route(upstream.port(), &["tok"], "")),
    );
    let run = Running::start(&text).await;

    let stream = TcpStream::connect(run.proxy()).await.expect("connect");
    let (local, peer) = (stream.local_addr().expect("local"), stream.peer_addr().expect("peer"));
    let (mut sender, conn) = hyper::client::conn::http2::handshake::<
        _,
        _,
        http_body_util::Either<StalledBody, Full<Bytes>>,
    >(TokioExecutor::new(), TokioIo::new(stream))
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);

    // Warm-up: one small routed POST on the same connection.
    let warm = Request::post(upstream.url("/warm"))
        .header("x-token", "{/tok}")
        .body(http_body_util::Either::Right(Full::new(Bytes::from_static(b"warm-up"))))
        .expect("request");
    let reply = sender.send_request(warm).await.expect("warm-up response");
    assert_eq!(reply.status(), 200);
    let _ = reply.into_body().collect().await;
    let baseline = run.sidecar.rss();

    let chunk = Bytes::from(vec![b'x'; 16 << 10]);
    let sent = Arc::new(AtomicU64::new(0));
    let mut all_sent = Vec::new();
    let answers: Answers = Arc::default();
    let failed = Arc::new(AtomicUsize::new(0));
    for i in 0..STREAMS {
        let flag = Arc::new(AtomicBool::new(false));
        all_sent.push(Arc::clone(&flag));
        let body = StalledBody { left: PER_STREAM, chunk: chunk.clone(), sent: Arc::clone(&sent), all_sent: flag };
        let req = Request::post(upstream.url(&format!("/stall/{i}")))
            .header("x-token", "{/tok}")
            .body(http_body_util::Either::Left(body))
            .expect("request");
        let mut sender = sender.clone();
        let answers = Arc::clone(&answers);
        let failed = Arc::clone(&failed);
        tokio::spawn(async move {
            match sender.send_request(req).await {
                Ok(response) => {
                    let code = response
                        .headers()
                        .get(token_sidecar::error::ERROR_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    answers.lock().unwrap().push((response.status().as_u16(), code));
                }
                Err(_) => {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }

    // Push until every stream has either handed over its whole megabyte or been answered, and
    // the sidecar has read everything on the socket; stop early if nothing moves for 1.5 s (a
    // sidecar that stops reading is bounding memory too).
    let settled = || {
        let done = all_sent.iter().filter(|f| f.load(Ordering::SeqCst)).count();
        let answered = answers.lock().unwrap().len() + failed.load(Ordering::SeqCst);
        done + answered >= STREAMS && absorbed(local, peer)
    };
    let started = Instant::now();
    let mut last_progress = (0u64, 0usize, Instant::now());
    while !settled() && started.elapsed() < Duration::from_secs(8) {
        let progress = (sent.load(Ordering::SeqCst), answers.lock().unwrap().len());
        if (progress.0, progress.1) != (last_progress.0, last_progress.1) {
            last_progress = (progress.0, progress.1, Instant::now());
        } else if last_progress.2.elapsed() > Duration::from_millis(1500) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let held = run.sidecar.rss().saturating_sub(baseline);
    let answers = answers.lock().unwrap().clone();
    let overloaded = answers.iter().filter(|(s, c)| *s == 503 && c.as_deref() == Some("overloaded")).count();
    eprintln!(
        "h2 stalled streams: {} MiB pushed, {} answered ({overloaded} overloaded), {} reset, RSS +{} KiB",
        sent.load(Ordering::SeqCst) >> 20,
        answers.len(),
        failed.load(Ordering::SeqCst),
        held >> 10
    );
    assert!(held < 40 * MIB, "{STREAMS} stalled streams of 1 MB grew RSS by {} MiB", held >> 20);
    assert!(overloaded > 0, "no stream was refused with 503 overloaded beyond max_buffered_total: {answers:?}");
    for (status, code) in &answers {
        assert!(
            *status == 503 && code.as_deref() == Some("overloaded"),
            "a stalled stream was answered {status} {code:?}"
        );
    }
    assert_eq!(upstream.requests().iter().filter(|r| r.uri.starts_with("/stall")).count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_beyond_max_streams_per_connection_wait() {
    const LIMIT: usize = 10;
    let upstream = Upstream::builder().gated().start().await;
    let text = config(
        "max_streams_per_connection = 10",
        &format!("{}{}", rs256_token("tok", "15m"), route(upstream.port(), &["tok"], "")),
    );
    let run = Running::start(&text).await;
    let stream = TcpStream::connect(run.proxy()).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let get = |path: String| {
        Request::get(upstream.url(&path)).header("x-token", "{/tok}").body(Empty::<Bytes>::new()).expect("request")
    };

    // One exchange first, so the client has the sidecar's SETTINGS before it opens more.
    upstream.release(1);
    let reply = sender.send_request(get("/first".into())).await.expect("first response");
    assert_eq!(reply.status(), 200);
    assert!(wait_until(Duration::from_secs(5), async || upstream.in_flight() == 0).await);

    let mut tasks = Vec::new();
    for i in 0..=LIMIT {
        let mut sender = sender.clone();
        let req = get(format!("/held/{i}"));
        tasks.push(tokio::spawn(async move {
            match sender.send_request(req).await {
                Ok(r) => Ok(r.status().as_u16()),
                Err(e) => Err(e.to_string()),
            }
        }));
    }
    assert!(
        wait_until(Duration::from_secs(5), async || upstream.in_flight() >= LIMIT).await,
        "only {} of {LIMIT} streams reached the upstream",
        upstream.in_flight()
    );
    // The 11th stream must not be in progress while ten are: watch for a while.
    let exceeded = wait_until(Duration::from_millis(700), async || upstream.in_flight() > LIMIT).await;
    assert!(
        !exceeded && upstream.max_in_flight() == LIMIT,
        "{} streams of one connection were in progress at once (max_streams_per_connection = {LIMIT})",
        upstream.max_in_flight()
    );
    // Once one finishes, the waiting one goes through.
    upstream.release(1);
    assert!(
        wait_until(Duration::from_secs(5), async || upstream.count() == LIMIT + 2).await,
        "the waiting stream never reached the upstream after one finished"
    );
    upstream.release(LIMIT);
    for task in tasks {
        let status = tokio::time::timeout(Duration::from_secs(5), task).await.expect("answered").expect("task");
        // A client that ignored the advertised limit would see REFUSED_STREAM; hyper's waits.
        assert_eq!(status, Ok(200));
    }
    assert!(upstream.max_in_flight() <= LIMIT);
}
