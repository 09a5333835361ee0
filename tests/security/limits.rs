//! Issue 9, findings 5 to 7: memory a client can pin. Header amplification (431/414), a body
//! of one-byte chunks, and stalled h2 streams (the global buffered-body budget, 503
//! `overloaded`, and `max_streams_per_connection`).
//!
//! Memory is measured as the sidecar's `VmRSS` (from `/proc/PID/status`), once the sidecar has
//! read everything the attack sent: the attacker's socket has nothing left in its send queue
//! and the sidecar's socket nothing in its receive queue (both from `/proc/net/tcp`).
//!
//! The first half of this file holds the helpers that `timeouts.rs`, `expiry.rs` and
//! `bodies.rs` share: config text, a recording upstream that counts every byte it reads, a
//! raw HTTP/1.1 reply reader, and the `/proc` readers.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::harness::{self, ConfigDir, SidecarProcess};

// =============================================================================================
// Shared helpers
// =============================================================================================

pub(crate) const MIB: u64 = 1 << 20;

/// A whole config: `[proxy]` and `[admin]` on ephemeral loopback ports, `proxy_extra` added
/// to `[proxy]`, then `rest` (tokens, routes, `[tls]`).
pub(crate) fn config(proxy_extra: &str, rest: &str) -> String {
    format!("[proxy]\nlisten = \"127.0.0.1:0\"\n{proxy_extra}\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n{rest}\n")
}

/// An RS256 token signed with the demo RSA key (copied into the config folder by
/// [`ConfigDir`]); its `sub` claim is its name.
pub(crate) fn rs256_token(name: &str, ttl: &str) -> String {
    format!(
        "[tokens.{name}]\nalgorithm = \"RS256\"\nkey_type = \"RsaPem\"\nkey_file = \"keys/demo-rsa.key.pem\"\n\
         kid = \"demo-rsa-2026\"\nttl = \"{ttl}\"\n\n[tokens.{name}.claims]\niss = \"security-tests\"\nsub = \"{name}\"\n\n"
    )
}

/// A plain-HTTP route to `127.0.0.1:port` binding `tokens`; `extra` may add sub-tables.
pub(crate) fn http_route(port: u16, tokens: &[&str], extra: &str) -> String {
    let tokens: Vec<String> = tokens.iter().map(|t| format!("{t:?}")).collect();
    format!(
        "[[routes]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {port}\ntokens = [{}]\n{extra}\n\n",
        tokens.join(", ")
    )
}

/// Writes `text` as `sidecar.toml` in a fresh config folder and starts the real binary on it.
pub(crate) async fn start(text: &str) -> (ConfigDir, SidecarProcess) {
    let dir = ConfigDir::new();
    let path = dir.write_config(text);
    let sidecar = SidecarProcess::start(&path, "info").await;
    (dir, sidecar)
}

/// The resident set size of a process, in bytes.
pub(crate) fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib << 10
}

/// `tx_queue` and `rx_queue` of the IPv4 TCP socket bound to `local` and connected to
/// `remote`, from `/proc/net/tcp`.
pub(crate) fn tcp_queues(local: SocketAddr, remote: SocketAddr) -> Option<(u64, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let parse_addr = |text: &str| -> Option<SocketAddr> {
        let (ip, port) = text.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?;
        let port = u16::from_str_radix(port, 16).ok()?;
        Some(SocketAddr::from((Ipv4Addr::from(ip.to_le_bytes()), port)))
    };
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 5 || parse_addr(fields[1])? != local || parse_addr(fields[2])? != remote {
            return None;
        }
        let (tx, rx) = fields[4].split_once(':')?;
        Some((u64::from_str_radix(tx, 16).ok()?, u64::from_str_radix(rx, 16).ok()?))
    })
}

/// Whether everything written on `client` (a connection to `server`) has been read by the
/// process at `server`: nothing waits in the client's send queue or the server's receive queue.
pub(crate) fn absorbed(client: SocketAddr, server: SocketAddr) -> bool {
    matches!(tcp_queues(client, server), Some((0, _))) && matches!(tcp_queues(server, client), Some((_, 0)))
}

/// Waits until the sidecar has read everything sent on `stream` (see [`absorbed`]).
pub(crate) async fn wait_absorbed(stream: &TcpStream, deadline: Duration) -> bool {
    let local = stream.local_addr().expect("local addr");
    let peer = stream.peer_addr().expect("peer addr");
    harness::wait_until(deadline, async || absorbed(local, peer)).await
}

/// Seconds since the epoch, as a float.
pub(crate) fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).expect("after the epoch").as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// A recording upstream

/// What the upstream saw of one request, as it arrived.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    /// When the request head arrived.
    pub arrived: SystemTime,
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    /// Each body data frame with the moment it arrived.
    pub frames: Vec<(SystemTime, Bytes)>,
    pub trailers: Option<HeaderMap>,
    /// The body ended cleanly (not cut by an error or a dropped connection).
    pub complete: bool,
    /// The body ended, cleanly or not.
    pub ended: bool,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn body(&self) -> Vec<u8> {
        self.frames.iter().flat_map(|(_, b)| b.iter().copied()).collect()
    }

    /// Every JWT the upstream received in this request (target, headers, body, trailers)
    /// with the moment the bytes that completed it arrived.
    pub fn jwts(&self) -> Vec<(String, SystemTime)> {
        let mut out = Vec::new();
        let mut head = self.uri.clone();
        for (name, value) in &self.headers {
            head.push_str(&format!("\n{name}: {}", String::from_utf8_lossy(value.as_bytes())));
        }
        out.extend(harness::find_jwts(&head).into_iter().map(|t| (t, self.arrived)));
        let body = self.body();
        let text = String::from_utf8_lossy(&body);
        for token in harness::find_jwts(&text) {
            let end = text.find(&token).expect("found in the text") + token.len();
            let mut seen = 0;
            let at = self
                .frames
                .iter()
                .find(|(_, b)| {
                    seen += b.len();
                    seen >= end
                })
                .map_or(SystemTime::now(), |(t, _)| *t);
            out.push((token, at));
        }
        if let Some(trailers) = &self.trailers {
            for value in trailers.values() {
                let at = self.frames.last().map_or(self.arrived, |(t, _)| *t);
                out.extend(harness::find_jwts(&String::from_utf8_lossy(value.as_bytes())).into_iter().map(|t| (t, at)));
            }
        }
        out
    }
}

struct RecorderState {
    /// Bytes read from every connection the upstream accepted.
    bytes: AtomicU64,
    /// Requests whose head arrived and that have not been answered yet.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    requests: Mutex<Vec<Recorded>>,
    /// When set, each request waits for a permit before it is answered.
    gate: Option<Semaphore>,
}

/// An HTTP/1.1 upstream on 127.0.0.1 that records each request as its bytes arrive, counts
/// every byte it reads, and answers 200 "upstream ok" once the request body has ended (and,
/// for a gated upstream, once the test hands out a permit).
pub(crate) struct Recorder {
    pub addr: SocketAddr,
    state: Arc<RecorderState>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    pub async fn start() -> Recorder {
        Recorder::build(None).await
    }

    /// An upstream that holds every request until [`Recorder::release`] lets it answer.
    pub async fn gated() -> Recorder {
        Recorder::build(Some(Semaphore::new(0))).await
    }

    async fn build(gate: Option<Semaphore>) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(RecorderState {
            bytes: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            gate,
        });
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let io = Counting { inner: stream, state: Arc::clone(&state) };
                    let service = service_fn(move |req: Request<Incoming>| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(record(state, req).await) }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service).await;
                });
            }
        });
        Recorder { addr, state, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Bytes read so far, over all connections.
    pub fn bytes(&self) -> u64 {
        self.state.bytes.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Lets `n` held requests answer.
    pub fn release(&self, n: usize) {
        self.state.gate.as_ref().expect("a gated upstream").add_permits(n);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Decrements the in-flight count however the request ends.
struct InFlight(Arc<RecorderState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Marks a request's body as ended however reading it stops (hyper drops the service future
/// when the connection breaks).
struct Ended(Arc<RecorderState>, usize);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.requests.lock().unwrap()[self.1].ended = true;
    }
}

async fn record(state: Arc<RecorderState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _in_flight = InFlight(Arc::clone(&state));
    let (parts, mut body) = req.into_parts();
    let index = {
        let mut requests = state.requests.lock().unwrap();
        requests.push(Recorded {
            arrived: SystemTime::now(),
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            headers: parts.headers,
            frames: Vec::new(),
            trailers: None,
            complete: false,
            ended: false,
        });
        requests.len() - 1
    };
    let ended = Ended(Arc::clone(&state), index);
    loop {
        match body.frame().await {
            None => {
                state.requests.lock().unwrap()[index].complete = true;
                break;
            }
            Some(Err(_)) => break,
            Some(Ok(frame)) => {
                let mut requests = state.requests.lock().unwrap();
                match frame.into_data() {
                    Ok(data) => requests[index].frames.push((SystemTime::now(), data)),
                    Err(frame) => requests[index].trailers = frame.into_trailers().ok(),
                }
            }
        }
    }
    drop(ended);
    if let Some(gate) = &state.gate {
        gate.acquire().await.expect("gate open").forget();
    }
    Response::new(Full::new(Bytes::from_static(b"upstream ok")))
}

/// A TCP stream that counts the bytes read from it.
struct Counting {
    inner: TcpStream,
    state: Arc<RecorderState>,
}

impl AsyncRead for Counting {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.state.bytes.fetch_add(read as u64, Ordering::SeqCst);
        result
    }
}

impl tokio::io::AsyncWrite for Counting {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1

/// A response read off a raw socket.
#[derive(Debug, Clone)]
pub(crate) struct RawReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The code of an error the sidecar generated itself (`x-token-sidecar-error`).
    pub fn sidecar_error(&self) -> Option<&str> {
        self.header(token_sidecar::error::ERROR_HEADER)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `status code (error code): body`, for assertion messages.
    pub fn describe(&self) -> String {
        format!("{} ({:?}): {}", self.status, self.sidecar_error(), self.text())
    }
}

async fn read_line<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed mid-line"));
        }
        line.push(byte[0]);
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

/// Reads one HTTP/1.1 response (the head byte by byte, so nothing past it is consumed). A
/// response to HEAD (`head_request`) has no body.
pub(crate) async fn read_reply<S: AsyncRead + Unpin>(stream: &mut S, head_request: bool) -> std::io::Result<RawReply> {
    let status_line = String::from_utf8_lossy(&read_line(stream).await?).into_owned();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not a status line: {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(stream).await?;
        if line.is_empty() {
            break;
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        let (k, v) = line.split_once(':').ok_or_else(|| std::io::Error::other(format!("bad header {line:?}")))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut reply = RawReply { status, headers, body: Vec::new() };
    if head_request || status == 204 || status == 304 {
        return Ok(reply);
    }
    let chunked = reply.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            let size_line = String::from_utf8_lossy(&read_line(stream).await?).into_owned();
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|e| std::io::Error::other(format!("chunk size {size_line:?}: {e}")))?;
            if size == 0 {
                while !read_line(stream).await?.is_empty() {}
                break;
            }
            let mut chunk = vec![0u8; size];
            stream.read_exact(&mut chunk).await?;
            reply.body.extend_from_slice(&chunk);
            read_line(stream).await?;
        }
    } else if let Some(length) = reply.header("content-length") {
        let length: usize = length.parse().map_err(|e| std::io::Error::other(format!("content-length: {e}")))?;
        reply.body = vec![0u8; length];
        stream.read_exact(&mut reply.body).await?;
    } else {
        stream.read_to_end(&mut reply.body).await?;
    }
    Ok(reply)
}

/// [`read_reply`] with a deadline; panics with `what` if it fails.
pub(crate) async fn expect_reply<S: AsyncRead + Unpin>(stream: &mut S, what: &str) -> RawReply {
    match tokio::time::timeout(Duration::from_secs(8), read_reply(stream, false)).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => panic!("{what}: no response ({e})"),
        Err(_) => panic!("{what}: no response within 8 s"),
    }
}

/// Waits up to `deadline` for the peer to close `stream` (EOF or an error), discarding
/// whatever it sends first; returns how long that took.
pub(crate) async fn closed_within<S: AsyncRead + Unpin>(stream: &mut S, deadline: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = vec![0u8; 16 << 10];
    let result = tokio::time::timeout(deadline, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    result.ok().map(|()| started.elapsed())
}

/// Connects to `addr`, writes `bytes` and returns the stream.
pub(crate) async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the sidecar");
    let _ = stream.set_nodelay(true);
    stream.write_all(bytes).await.expect("write the request");
    stream
}

/// The JWT claims of `token`, without checking the signature.
pub(crate) fn exp_of(token: &str) -> f64 {
    harness::claims(token)["exp"].as_f64().unwrap_or_else(|| panic!("no exp claim in {token}"))
}

/// Checks a token was signed by the demo RSA key and has not expired; returns its claims.
pub(crate) fn verify_demo(token: &str) -> serde_json::Value {
    let pem = std::fs::read(harness::repo_root().join("examples/keys/demo-rsa.pub.pem")).expect("public key");
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&pem).expect("RSA public key");
    harness::verify(token, &key, jsonwebtoken::Algorithm::RS256).unwrap_or_else(|e| panic!("{e}: {token}"))
}

// =============================================================================================
// Finding 5: header and URI amplification
// =============================================================================================

/// The default `max_header_bytes` and `max_uri_bytes` (the configs below leave them unset).
const MAX_HEADER_BYTES: usize = 64 << 10;
const MAX_URI_BYTES: usize = 16 << 10;

/// A route binding `tok` under the alias `t`, so a 4-byte `{/t}` becomes a whole RS256 JWT.
async fn amplification_world() -> (Recorder, ConfigDir, SidecarProcess, usize) {
    let upstream = Recorder::start().await;
    let text = config(
        "",
        &format!(
            "{}{}",
            rs256_token("tok", "15m"),
            http_route(upstream.port(), &["tok"], "[routes.placeholders]\nt = \"tok\"")
        ),
    );
    let (dir, sidecar) = start(&text).await;
    // How long one token is, as the upstream receives it.
    let mut stream = send_raw(
        sidecar.proxy,
        format!("GET {} HTTP/1.1\r\nHost: {}\r\nX-Probe: {{/t}}\r\n\r\n", upstream.url("/probe"), upstream.addr)
            .as_bytes(),
    )
    .await;
    let reply = expect_reply(&mut stream, "probe").await;
    assert_eq!(reply.status, 200, "probe: {}", reply.describe());
    let token = upstream.requests()[0].header("x-probe").expect("x-probe").to_string();
    verify_demo(&token);
    (upstream, dir, sidecar, token.len())
}

/// A raw request head to `url` with `headers` (name, value) after Host.
fn head(method: &str, url: &str, host: SocketAddr, headers: &[(String, String)]) -> Vec<u8> {
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
    let (upstream, _dir, sidecar, token_len) = amplification_world().await;
    let per = 8;

    // Control: a head that is just under the limit once substituted is forwarded whole.
    let under = headers_for(MAX_HEADER_BYTES - 2048, per, token_len);
    let mut stream =
        send_raw(sidecar.proxy, &head("GET", &upstream.url("/under"), upstream.addr, &padded_headers(under, per)))
            .await;
    let reply = expect_reply(&mut stream, "head just under max_header_bytes").await;
    assert_eq!(reply.status, 200, "a head {} bytes under the limit was refused: {}", 2048, reply.describe());
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
        send_raw(sidecar.proxy, &head("GET", &upstream.url("/over"), upstream.addr, &padded_headers(over, per))).await;
    let reply = expect_reply(&mut stream, "head just over max_header_bytes").await;
    assert_eq!(reply.status, 431, "{}", reply.describe());
    assert_eq!(reply.sidecar_error(), Some("headers_too_large"), "{}", reply.describe());
    assert_eq!(upstream.bytes(), before, "the upstream received bytes of a refused request");
    assert!(!reply.text().contains("eyJ"), "the error response carries a token: {}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amplified_headers_do_not_pin_memory() {
    let (upstream, _dir, sidecar, _token_len) = amplification_world().await;
    // 95 headers of 1000 x `{/t}`: 380 KB on the wire, ~60 MB once substituted.
    let attack = head("GET", &upstream.url("/amplify"), upstream.addr, &padded_headers(95, 1000));
    let before_bytes = upstream.bytes();
    let baseline = rss(sidecar.pid);
    let mut answers = Vec::new();
    for i in 0..20 {
        let mut stream = TcpStream::connect(sidecar.proxy).await.expect("connect");
        // The sidecar may answer (and close) before it has read the whole head: write and read
        // at once, and accept a closed connection as a refusal too.
        let (mut reader, mut writer) = stream.split();
        let (written, reply) = tokio::join!(writer.write_all(&attack), async {
            tokio::time::timeout(Duration::from_secs(8), read_reply(&mut reader, false)).await
        });
        match reply {
            Ok(Ok(reply)) => answers.push(reply),
            // Closed (or reset) before an answer: refused too, as long as nothing went upstream.
            Ok(Err(e)) => eprintln!("attack {i}: connection closed without an answer ({e}; write: {written:?})"),
            Err(_) => panic!("attack {i}: no answer within 8 s"),
        }
    }
    let grown = rss(sidecar.pid).saturating_sub(baseline);
    eprintln!("RSS growth after 20 amplified heads: {} KiB", grown >> 10);
    assert!(grown < 16 * MIB, "RSS grew by {} MiB over 20 amplified requests", grown >> 20);
    assert_eq!(upstream.bytes(), before_bytes, "the upstream received bytes of the amplified requests");
    for reply in answers {
        assert_eq!(reply.status, 431, "{}", reply.describe());
        // hyper's own 431 (a head over its buffer) has no code; the sidecar's says which limit.
        if let Some(code) = reply.sidecar_error() {
            assert_eq!(code, "headers_too_large", "{}", reply.describe());
        }
    }
}

#[tokio::test]
async fn substituted_uri_over_max_uri_bytes_is_refused_with_414() {
    let (upstream, _dir, sidecar, token_len) = amplification_world().await;
    let target = |n: usize| format!("{}?q={}", upstream.url("/items"), "%7B%2Ft%7D".repeat(n));

    // Control: just under the limit once substituted.
    let under = (MAX_URI_BYTES - 1024) / token_len;
    let mut stream = send_raw(sidecar.proxy, &head("GET", &target(under), upstream.addr, &[])).await;
    let reply = expect_reply(&mut stream, "target just under max_uri_bytes").await;
    assert_eq!(reply.status, 200, "{}", reply.describe());
    let seen = upstream.requests().pop().expect("the control request reached the upstream");
    assert!(!seen.uri.contains("%7B"), "a placeholder was left in {}", seen.uri);
    assert!(seen.uri.len() > under * token_len, "the target was not substituted: {} bytes", seen.uri.len());

    let over = (MAX_URI_BYTES + 1024) / token_len + 1;
    let before = upstream.bytes();
    let mut stream = send_raw(sidecar.proxy, &head("GET", &target(over), upstream.addr, &[])).await;
    let reply = expect_reply(&mut stream, "target over max_uri_bytes").await;
    assert_eq!(reply.status, 414, "{}", reply.describe());
    assert_eq!(reply.sidecar_error(), Some("uri_too_long"), "{}", reply.describe());
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
    let upstream = Recorder::start().await;
    let text = config(
        "max_buffered_body = \"1MiB\"",
        &format!("{}{}", rs256_token("tok", "15m"), http_route(upstream.port(), &["tok"], "")),
    );
    let (_dir, sidecar) = start(&text).await;
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
    let mut stream = send_raw(sidecar.proxy, &warm).await;
    let reply = expect_reply(&mut stream, "warm-up").await;
    assert_eq!(reply.status, 200, "warm-up: {}", reply.describe());
    drop(stream);
    let baseline = rss(sidecar.pid);

    let mut stream = send_raw(sidecar.proxy, request_head("/tiny").as_bytes()).await;
    let chunks = one_byte_chunks(&body);
    for part in chunks.chunks(256 << 10) {
        stream.write_all(part).await.expect("write chunks");
    }
    assert!(
        wait_absorbed(&stream, Duration::from_secs(8)).await,
        "the sidecar stopped reading a {BODY}-byte body (under max_buffered_body) before its end"
    );
    let held = rss(sidecar.pid).saturating_sub(baseline);
    eprintln!("RSS growth holding {BODY} one-byte chunks: {} KiB", held >> 10);
    assert_eq!(upstream.count(), 1, "the upstream got the buffered request before its end");

    stream.write_all(b"0\r\n\r\n").await.expect("write the last chunk");
    let reply = expect_reply(&mut stream, "one-byte chunks").await;
    assert_eq!(reply.status, 200, "{}", reply.describe());
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
    let upstream = Recorder::start().await;
    let text = config(
        "max_buffered_body = \"1MiB\"\nmax_buffered_total = \"8MiB\"\nmax_streams_per_connection = 100\n\
         body_timeout = \"30s\"",
        &format!("{}{}", rs256_token("tok", "15m"), http_route(upstream.port(), &["tok"], "")),
    );
    let (_dir, sidecar) = start(&text).await;

    let stream = TcpStream::connect(sidecar.proxy).await.expect("connect");
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
    let baseline = rss(sidecar.pid);

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
    let held = rss(sidecar.pid).saturating_sub(baseline);
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
    let upstream = Recorder::gated().await;
    let text = config(
        "max_streams_per_connection = 10",
        &format!("{}{}", rs256_token("tok", "15m"), http_route(upstream.port(), &["tok"], "")),
    );
    let (_dir, sidecar) = start(&text).await;
    let stream = TcpStream::connect(sidecar.proxy).await.expect("connect");
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
    assert!(harness::wait_until(Duration::from_secs(5), async || upstream.in_flight() == 0).await);

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
        harness::wait_until(Duration::from_secs(5), async || upstream.in_flight() >= LIMIT).await,
        "only {} of {LIMIT} streams reached the upstream",
        upstream.in_flight()
    );
    // The 11th stream must not be in progress while ten are: watch for a while.
    let exceeded = harness::wait_until(Duration::from_millis(700), async || upstream.in_flight() > LIMIT).await;
    assert!(
        !exceeded && upstream.max_in_flight() == LIMIT,
        "{} streams of one connection were in progress at once (max_streams_per_connection = {LIMIT})",
        upstream.max_in_flight()
    );
    // Once one finishes, the waiting one goes through.
    upstream.release(1);
    assert!(
        harness::wait_until(Duration::from_secs(5), async || upstream.count() == LIMIT + 2).await,
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
