//! One recording upstream for every test.
//!
//! [`Upstream::start`] listens on 127.0.0.1:0 and speaks HTTP/1.1 and h2c (prior knowledge);
//! with [`UpstreamBuilder::tls`] it speaks HTTPS (h2 and HTTP/1.1 over ALPN) with a certificate
//! for `localhost` and `127.0.0.1` from a [`TestCa`]. It answers `200 upstream ok` (status and
//! a delay are adjustable), or an echo of the request ([`UpstreamBuilder::echo`]), or raw bytes
//! a closure returns ([`UpstreamBuilder::raw`], for hostile answers); a gated upstream holds each
//! request until the test releases it.
//!
//! Every request is recorded when its head arrives, then its body frames (each with its arrival
//! time), its trailers and how it ended. Every byte read from every connection is counted, so a
//! test can assert that not even part of a refused request reached the upstream.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::ca::TestCa;
use super::jwt::find_jwts;

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub version: Version,
    pub method: Method,
    /// The request target's path and query, as received.
    pub uri: String,
    /// The authority the target named, if any: an h2 request's `:authority`.
    pub authority: Option<String>,
    pub headers: HeaderMap,
    /// When the request head arrived (wall clock, to compare with token claims).
    pub arrived: SystemTime,
    /// When the request head arrived (monotonic, to measure latencies).
    pub at: Instant,
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

    /// Every host the request named: its `Host` header values, then the authority of its
    /// target (an h2 request names its host in `:authority` alone).
    pub fn hosts(&self) -> Vec<String> {
        let headers = self.headers.get_all("host").iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        headers.chain(self.authority.clone()).collect()
    }

    /// The path of the target, without the query.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }

    /// The body received so far.
    pub fn body(&self) -> Bytes {
        match self.frames.as_slice() {
            [] => Bytes::new(),
            [(_, only)] => only.clone(),
            frames => {
                let mut all = BytesMut::with_capacity(frames.iter().map(|(_, b)| b.len()).sum());
                for (_, b) in frames {
                    all.extend_from_slice(b);
                }
                all.freeze()
            }
        }
    }

    pub fn body_text(&self) -> String {
        String::from_utf8(self.body().to_vec()).expect("body is not UTF-8")
    }

    /// When the first body byte arrived, if any did.
    pub fn first_body_byte_at(&self) -> Option<SystemTime> {
        self.frames.iter().find(|(_, b)| !b.is_empty()).map(|(t, _)| *t)
    }

    /// The credential of `Authorization: Bearer ...`, if any.
    pub fn bearer(&self) -> Option<&str> {
        self.header("authorization").and_then(|a| a.strip_prefix("Bearer "))
    }

    /// The bearer credential, if it is a JWT (not a placeholder left as text).
    pub fn jwt(&self) -> Option<&str> {
        self.bearer().filter(|t| t.split('.').count() == 3 && !t.contains('{'))
    }

    /// The bearer credential; panics if the request carried none.
    pub fn token(&self) -> &str {
        let auth = self.header("authorization").expect("no Authorization header reached the upstream");
        auth.strip_prefix("Bearer ").unwrap_or_else(|| panic!("not a bearer header: {auth:?}"))
    }

    /// Every JWT the upstream received in this request (target, headers, body, trailers) with
    /// the moment the bytes that completed it arrived.
    pub fn jwts(&self) -> Vec<(String, SystemTime)> {
        let mut out = Vec::new();
        let mut head = self.uri.clone();
        for (name, value) in &self.headers {
            head.push_str(&format!("\n{name}: {}", String::from_utf8_lossy(value.as_bytes())));
        }
        out.extend(find_jwts(&head).into_iter().map(|t| (t, self.arrived)));
        let body = self.body();
        let text = String::from_utf8_lossy(&body);
        let mut from = 0;
        for token in find_jwts(&text) {
            let end = text[from..].find(&token).expect("found in the text") + from + token.len();
            from = end;
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
            let at = self.frames.last().map_or(self.arrived, |(t, _)| *t);
            for value in trailers.values() {
                out.extend(find_jwts(&String::from_utf8_lossy(value.as_bytes())).into_iter().map(|t| (t, at)));
            }
        }
        out
    }

    fn new(version: Version, method: Method, uri: String, headers: HeaderMap) -> Recorded {
        Recorded {
            version,
            method,
            uri,
            authority: None,
            headers,
            arrived: SystemTime::now(),
            at: Instant::now(),
            frames: Vec::new(),
            trailers: None,
            complete: false,
            ended: false,
        }
    }
}

/// Writes a raw answer to one request: the pieces are written (and flushed) one at a time.
type Responder = dyn Fn(&Recorded) -> Vec<Vec<u8>> + Send + Sync;

enum Answer {
    /// `upstream ok`, with the configured status.
    Ok,
    /// A JSON description of the request; the Authorization header is echoed back both as the
    /// response header `x-echo-authorization` and in the body (as a debugging endpoint or an
    /// error page that reflects the request would).
    Echo,
    /// Raw bytes on the connection; then the connection is closed, or held open.
    Raw { respond: Arc<Responder>, hold_open: bool },
}

struct State {
    requests: Mutex<Vec<Recorded>>,
    /// Bytes read from every connection the upstream accepted.
    bytes: AtomicU64,
    /// Requests whose head arrived and that have not been answered yet.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    delay: Mutex<Duration>,
    status: AtomicU16,
    /// When set, each request waits for a permit before it is answered.
    gate: Option<Semaphore>,
    answer: Answer,
    /// Connections accepted, and those still open.
    connections: AtomicUsize,
    open: AtomicUsize,
}

/// Counts a connection as open until its task ends.
struct OpenConnection(Arc<State>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How an [`Upstream`] serves; [`UpstreamBuilder::start`] starts it.
pub struct UpstreamBuilder {
    tls: Option<Arc<rustls::ServerConfig>>,
    delay: Duration,
    gated: bool,
    answer: Answer,
}

impl UpstreamBuilder {
    /// HTTPS with a certificate for `localhost` and `127.0.0.1` from `ca`.
    pub fn tls(mut self, ca: &TestCa) -> Self {
        self.tls = Some(ca.server_config(&["localhost", "127.0.0.1"]));
        self
    }

    /// Answers each request `delay` after its body ended.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Holds every request until [`Upstream::release`] lets it answer.
    pub fn gated(mut self) -> Self {
        self.gated = true;
        self
    }

    /// Answers with a JSON description of the request (see the module docs).
    pub fn echo(mut self) -> Self {
        self.answer = Answer::Echo;
        self
    }

    /// For each connection: reads one request head (and a `Content-Length` body), records it,
    /// writes the pieces `respond` returns one write (and flush) at a time, and closes the
    /// connection (see [`UpstreamBuilder::hold_open`]). Plain TCP only.
    pub fn raw(mut self, respond: impl Fn(&Recorded) -> Vec<Vec<u8>> + Send + Sync + 'static) -> Self {
        self.answer = Answer::Raw { respond: Arc::new(respond), hold_open: false };
        self
    }

    /// A raw upstream keeps the connection open after its answer, sending nothing more.
    pub fn hold_open(mut self) -> Self {
        match &mut self.answer {
            Answer::Raw { hold_open, .. } => *hold_open = true,
            _ => panic!("hold_open applies to raw upstreams"),
        }
        self
    }

    pub async fn start(self) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let raw = matches!(self.answer, Answer::Raw { .. });
        assert!(!(raw && self.tls.is_some()), "a raw upstream speaks plain TCP");
        let state = Arc::new(State {
            requests: Mutex::new(Vec::new()),
            bytes: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            delay: Mutex::new(self.delay),
            status: AtomicU16::new(200),
            gate: self.gated.then(|| Semaphore::new(0)),
            answer: self.answer,
            connections: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
        });
        let shared = Arc::clone(&state);
        let acceptor = self.tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&shared);
                let acceptor = acceptor.clone();
                state.connections.fetch_add(1, Ordering::SeqCst);
                state.open.fetch_add(1, Ordering::SeqCst);
                let open = OpenConnection(Arc::clone(&state));
                tokio::spawn(async move {
                    let _open = open;
                    let io = Counting { inner: stream, state: Arc::clone(&state) };
                    if raw {
                        serve_raw(state, io).await;
                    } else if let Some(acceptor) = acceptor {
                        let Ok(tls) = acceptor.accept(io).await else { return };
                        serve_http(state, tls).await;
                    } else {
                        serve_http(state, io).await;
                    }
                });
            }
        })
        .abort_handle();
        Upstream { addr, state, task }
    }
}

/// A recording upstream on 127.0.0.1; stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::AbortHandle,
}

impl Upstream {
    pub fn builder() -> UpstreamBuilder {
        UpstreamBuilder { tls: None, delay: Duration::ZERO, gated: false, answer: Answer::Ok }
    }

    /// Plain HTTP (HTTP/1.1 and h2c), answering `200 upstream ok`.
    pub async fn start() -> Upstream {
        Upstream::builder().start().await
    }

    /// Like [`Upstream::start`], answering each request `delay` after it arrived.
    pub async fn with_delay(delay: Duration) -> Upstream {
        Upstream::builder().delay(delay).start().await
    }

    /// HTTPS (h2 and HTTP/1.1) with a certificate from `ca`, answering `200 upstream ok`.
    pub async fn tls(ca: &TestCa) -> Upstream {
        Upstream::builder().tls(ca).start().await
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT` + `path_and_query`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// Every request whose head has arrived, in order (bodies as received so far).
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// How many request heads have arrived.
    pub fn count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    pub fn last(&self) -> Option<Recorded> {
        self.state.requests.lock().unwrap().last().cloned()
    }

    /// The only request received so far.
    pub fn single(&self) -> Recorded {
        let all = self.requests();
        assert_eq!(all.len(), 1, "expected exactly one request at the upstream, got {}", all.len());
        all.into_iter().next().unwrap_or_else(|| unreachable!())
    }

    /// The first request that arrived at or after `from` and satisfies `pred`.
    pub fn first_since(&self, from: Instant, pred: impl Fn(&Recorded) -> bool) -> Option<Recorded> {
        self.state.requests.lock().unwrap().iter().find(|s| s.at >= from && pred(s)).cloned()
    }

    /// Asserts that not even a request head reached the upstream.
    pub fn assert_nothing_received(&self, context: &str) {
        assert_eq!(self.count(), 0, "{context}: the upstream received a request: {:?}", self.requests());
    }

    /// Every distinct JWT the upstream received, in headers, targets, bodies or trailers.
    pub fn jwts(&self) -> Vec<String> {
        let mut out: Vec<String> = self.requests().iter().flat_map(|r| r.jwts()).map(|(t, _)| t).collect();
        out.sort();
        out.dedup();
        out
    }

    /// Bytes read so far, over all connections.
    pub fn bytes(&self) -> u64 {
        self.state.bytes.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Connections open now (closed by either side once their task ends).
    pub fn open_connections(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Lets `n` held requests of a gated upstream answer.
    pub fn release(&self, n: usize) {
        self.state.gate.as_ref().expect("a gated upstream").add_permits(n);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_http<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(state: Arc<State>, io: S) {
    let service = service_fn(move |req: Request<Incoming>| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(record(state, req).await) }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// Decrements the in-flight count however the request ends.
struct InFlight(Arc<State>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Marks a request's body as ended however reading it stops (hyper drops the service future
/// when the connection breaks).
struct Ended(Arc<State>, usize);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.requests.lock().unwrap()[self.1].ended = true;
    }
}

async fn record(state: Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _in_flight = InFlight(Arc::clone(&state));
    let (parts, mut body) = req.into_parts();
    let uri = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_else(|| parts.uri.to_string());
    let index = {
        let mut requests = state.requests.lock().unwrap();
        let mut recorded = Recorded::new(parts.version, parts.method, uri, parts.headers);
        recorded.authority = parts.uri.authority().map(ToString::to_string);
        requests.push(recorded);
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
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(gate) = &state.gate {
        gate.acquire().await.expect("gate open").forget();
    }
    let mut response = match state.answer {
        Answer::Echo => echo(&state.requests.lock().unwrap()[index]),
        _ => Response::new(Full::new(Bytes::from_static(b"upstream ok"))),
    };
    *response.status_mut() = StatusCode::from_u16(state.status.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK);
    response
}

fn echo(seen: &Recorded) -> Response<Full<Bytes>> {
    let headers: serde_json::Map<String, Value> =
        seen.headers.iter().map(|(k, v)| (k.to_string(), Value::from(String::from_utf8_lossy(v.as_bytes())))).collect();
    let auth = seen.header("authorization").unwrap_or_default().to_string();
    let body = serde_json::json!({
        "method": seen.method.as_str(),
        "uri": seen.uri,
        "authorization": auth,
        "headers": headers,
        "body": String::from_utf8_lossy(&seen.body()),
    });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&auth) {
        response.headers_mut().insert("x-echo-authorization", v);
    }
    response
}

async fn serve_raw(state: Arc<State>, mut stream: Counting) {
    let Answer::Raw { respond, hold_open } = &state.answer else { unreachable!() };
    let Some(seen) = read_request(&mut stream).await else { return };
    state.requests.lock().unwrap().push(seen.clone());
    for piece in respond(&seen) {
        if stream.write_all(&piece).await.is_err() || stream.flush().await.is_err() {
            return;
        }
    }
    if *hold_open {
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    } else {
        let _ = stream.shutdown().await;
    }
}

/// Reads one HTTP/1.1 request head and its `Content-Length` body off a raw stream.
async fn read_request(stream: &mut Counting) -> Option<Recorded> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = Method::from_bytes(request_line.next().unwrap_or_default().as_bytes()).ok()?;
    let uri = request_line.next().unwrap_or_default().to_string();
    let mut headers = HeaderMap::new();
    for (k, v) in lines.filter_map(|l| l.split_once(':')) {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.trim().as_bytes()), HeaderValue::from_str(v.trim())) {
            headers.append(k, v);
        }
    }
    let mut seen = Recorded::new(Version::HTTP_11, method, uri, headers);
    let mut body = buf[end + 4..].to_vec();
    if let Some(len) = seen.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while body.len() < len {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    if !body.is_empty() {
        seen.frames.push((SystemTime::now(), Bytes::from(body)));
    }
    seen.complete = true;
    seen.ended = true;
    Some(seen)
}

/// A TCP stream that counts the bytes read from it.
struct Counting {
    inner: TcpStream,
    state: Arc<State>,
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

impl AsyncWrite for Counting {
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
