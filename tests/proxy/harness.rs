//! Shared helpers for the end-to-end proxy tests: a recording upstream, config builders, a
//! client that talks to the proxy in absolute form, JWT verification with the demo public
//! key, polling with a deadline, and a guard for the real binary run as a child process.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use token_sidecar::config::Config;
use token_sidecar::server::Sidecar;
use token_sidecar::store::Mint;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

pub const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// Absolute path of a file in `examples/keys/`.
pub fn key_path(file: &str) -> String {
    Path::new(MANIFEST_DIR).join("examples/keys").join(file).to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------------------------
// Config builders
// ---------------------------------------------------------------------------------------------

/// A whole config: `[proxy]` and `[admin]` on ephemeral loopback ports, `proxy_extra` added to
/// `[proxy]`, then `rest` (tokens, routes, listeners).
pub fn config(proxy_extra: &str, rest: &str) -> String {
    format!("[proxy]\nlisten = \"127.0.0.1:0\"\n{proxy_extra}\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n{rest}\n")
}

/// An RS256 token signed with the demo RSA key.
pub fn rs256_token(name: &str, ttl: &str, refresh_before: Option<&str>) -> String {
    let refresh = refresh_before.map(|r| format!("refresh_before = \"{r}\"\n")).unwrap_or_default();
    format!(
        "[tokens.{name}]\nkind = \"jwt\"\nalgorithm = \"RS256\"\nkey_type = \"RsaPem\"\nkey_file = {key:?}\n\
         kid = \"demo-rsa-2026\"\nttl = \"{ttl}\"\n{refresh}\n[tokens.{name}.claims]\niss = \"proxy-tests\"\n\
         sub = \"{name}\"\n\n",
        key = key_path("demo-rsa.key.pem"),
    )
}

/// A plain-HTTP route to `127.0.0.1:port` binding `tokens`; `extra` may add sub-tables such
/// as `[routes.placeholders]` or `[routes.set_headers]`.
pub fn route(port: u16, tokens: &[&str], extra: &str) -> String {
    let tokens: Vec<String> = tokens.iter().map(|t| format!("{t:?}")).collect();
    format!(
        "[[routes]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {port}\ntokens = [{}]\n{extra}\n\n",
        tokens.join(", ")
    )
}

/// Parses config text as if it were a file in `tests/proxy/`.
pub fn parse_config(toml: &str) -> Config {
    let path = Path::new(MANIFEST_DIR).join("tests/proxy/generated.toml");
    Config::from_text(&path, toml).unwrap_or_else(|e| panic!("config rejected:\n{e}\n--- config ---\n{toml}"))
}

/// Starts an in-process sidecar.
pub async fn start(toml: &str) -> Sidecar {
    Sidecar::start(parse_config(toml)).await.unwrap_or_else(|e| panic!("sidecar did not start: {e}"))
}

/// Starts an in-process sidecar with some tokens minted by test minters.
pub async fn start_with(toml: &str, minters: &HashMap<String, Arc<dyn Mint>>) -> Sidecar {
    Sidecar::start_with(parse_config(toml), minters).await.unwrap_or_else(|e| panic!("sidecar did not start: {e}"))
}

/// Loopback ports that were free a moment ago (bound to port 0, then released together so
/// they are distinct). For configs that must name fixed ports, such as the real binary's.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> =
        (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0")).collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local addr").port())
}

// ---------------------------------------------------------------------------------------------
// Recording upstream
// ---------------------------------------------------------------------------------------------

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// False when the body ended with an error (the sender aborted it).
    pub body_complete: bool,
    /// When the request head arrived.
    pub received_at: SystemTime,
    /// When the first body byte arrived, if any did.
    pub first_body_byte_at: Option<Instant>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("header is not ASCII"))
    }

    pub fn body_text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("body is not UTF-8")
    }

    /// The token in `Authorization: Bearer TOKEN`.
    pub fn bearer(&self) -> String {
        let auth = self.header("authorization").expect("no Authorization header reached the upstream");
        auth.strip_prefix("Bearer ").unwrap_or_else(|| panic!("not a bearer header: {auth:?}")).to_string()
    }
}

struct UpstreamState {
    arrivals: AtomicUsize,
    records: Mutex<Vec<Recorded>>,
    delay: Mutex<Duration>,
    status: AtomicU16,
}

/// An HTTP/1.1 server on 127.0.0.1:0 that records every request and answers `200 upstream ok`
/// (status and a delay before answering are configurable).
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<UpstreamState>,
    accept: AbortHandle,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(UpstreamState {
            arrivals: AtomicUsize::new(0),
            records: Mutex::new(Vec::new()),
            delay: Mutex::new(Duration::ZERO),
            status: AtomicU16::new(200),
        });
        let shared = Arc::clone(&state);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |req| record(Arc::clone(&state), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        })
        .abort_handle();
        Upstream { addr, state, accept }
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

    /// How many request heads arrived (counted before the body is read).
    pub fn arrivals(&self) -> usize {
        self.state.arrivals.load(Ordering::SeqCst)
    }

    /// Requests whose body has been read to the end (or to an error).
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.records.lock().unwrap().clone()
    }

    /// The only request received so far.
    pub fn single(&self) -> Recorded {
        let all = self.requests();
        assert_eq!(all.len(), 1, "expected exactly one request at the upstream, got {}", all.len());
        all.into_iter().next().unwrap_or_else(|| unreachable!())
    }

    /// Asserts that not even a request head reached the upstream.
    pub fn assert_nothing_received(&self, context: &str) {
        assert_eq!(self.arrivals(), 0, "{context}: the upstream received a request: {:?}", self.requests());
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn record(state: Arc<UpstreamState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let received_at = SystemTime::now();
    state.arrivals.fetch_add(1, Ordering::SeqCst);
    let (parts, mut body) = req.into_parts();
    let mut data = BytesMut::new();
    let mut first_body_byte_at = None;
    let mut body_complete = true;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(chunk) = frame.data_ref() {
                    if first_body_byte_at.is_none() && !chunk.is_empty() {
                        first_body_byte_at = Some(Instant::now());
                    }
                    data.extend_from_slice(chunk);
                }
            }
            Err(_) => {
                body_complete = false;
                break;
            }
        }
    }
    state.records.lock().unwrap().push(Recorded {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body: data.freeze(),
        body_complete,
        received_at,
        first_body_byte_at,
    });
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut response = Response::new(Full::new(Bytes::from_static(b"upstream ok")));
    *response.status_mut() = StatusCode::from_u16(state.status.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK);
    Ok(response)
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// A response as the client saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.text()))
    }

    /// Asserts a sidecar-generated error: status, JSON `{"error": code, "message": ...}`, the
    /// `x-token-sidecar-error` header, and no token in the body.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.text());
        let json = self.json();
        assert_eq!(json["error"], code, "unexpected error body: {json}");
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()), "error without a message: {json}");
        assert_eq!(
            self.headers.get(token_sidecar::error::ERROR_HEADER).map(HeaderValue::as_bytes),
            Some(code.as_bytes()),
            "missing or wrong {} header",
            token_sidecar::error::ERROR_HEADER
        );
        assert_no_jwt(&self.text(), "error body");
    }

    /// Asserts a 200 relayed from the recording upstream.
    pub fn assert_upstream_ok(&self) {
        assert_eq!(self.status, StatusCode::OK, "expected the upstream's 200; got body: {}", self.text());
        assert_eq!(self.body.as_ref(), b"upstream ok", "the response did not come from the upstream");
    }
}

/// Asserts that `text` holds nothing that looks like a JWT (they all start with `eyJ`).
pub fn assert_no_jwt(text: &str, what: &str) {
    assert!(!text.contains("eyJ"), "{what} contains something like a JWT: {text}");
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Builds a request. `url` is absolute (`http://host:port/path`) for the forward proxy, or
/// origin-form (`/path`) for a reverse listener. Host is set from an absolute URL unless
/// `headers` names one.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(body.into()));
    *req.method_mut() = method.parse().expect("method");
    *req.uri_mut() = url.parse().unwrap_or_else(|e| panic!("bad test URL {url:?}: {e}"));
    for (name, value) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    req
}

/// Sends `req` over a fresh connection to `addr` and reads the whole response.
pub async fn try_send<B>(addr: SocketAddr, mut req: Request<B>) -> Result<Reply, String>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if !req.headers().contains_key(http::header::HOST) {
        if let Some(authority) = req.uri().authority() {
            let host = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
            req.headers_mut().insert(http::header::HOST, host);
        }
    }
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect to {addr}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let response = sender.send_request(req).await.map_err(|e| format!("sending the request: {e}"))?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| format!("reading the response: {e}"))?.to_bytes();
    Ok(Reply { status: parts.status, headers: parts.headers, body })
}

/// Like [`try_send`], panicking on transport errors.
pub async fn send<B>(addr: SocketAddr, req: Request<B>) -> Reply
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    try_send(addr, req).await.unwrap_or_else(|e| panic!("{e}"))
}

/// GET `url` through the proxy at `proxy`.
pub async fn get(proxy: SocketAddr, url: &str, headers: &[(&str, &str)]) -> Reply {
    send(proxy, request("GET", url, headers, Bytes::new())).await
}

/// POST `body` to `url` through the proxy at `proxy`.
pub async fn post(proxy: SocketAddr, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
    send(proxy, request("POST", url, headers, body)).await
}

/// A request body fed chunk by chunk from a channel; sent chunked (no Content-Length).
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

/// A streaming body and the sender that feeds it; dropping the sender ends the body.
pub fn channel_body(capacity: usize) -> (mpsc::Sender<Bytes>, ChannelBody) {
    let (tx, rx) = mpsc::channel(capacity);
    (tx, ChannelBody { rx })
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

/// Decodes `token` with the demo RSA public key (RS256), validating the signature and `exp`
/// against the current time (no leeway), and returns its claims.
pub fn verify(token: &str) -> serde_json::Value {
    decode(token, true)
}

/// The claims of `token` after checking its signature, whether or not it has expired.
pub fn signed_claims(token: &str) -> serde_json::Value {
    decode(token, false)
}

/// Like [`verify`], but checks `exp` strictly against `at` (when the upstream received the
/// token) instead of now, so tokens recorded earlier can be checked afterwards.
pub fn verify_at(token: &str, at: SystemTime) -> serde_json::Value {
    let claims = decode(token, false);
    assert_valid_at(&claims, at, "token");
    claims
}

fn decode(token: &str, validate_exp: bool) -> serde_json::Value {
    let pem = std::fs::read(key_path("demo-rsa.pub.pem")).expect("read demo-rsa.pub.pem");
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&pem).expect("parse demo-rsa.pub.pem");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.leeway = 0;
    validation.validate_exp = validate_exp;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iat"]);
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .unwrap_or_else(|e| panic!("token does not verify with demo-rsa.pub.pem: {e}: {token:?}"))
        .claims
}

pub fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs_f64()
}

/// Asserts that `claims` were valid at `at` in the strict sense of RFC 7519: `at` is before
/// `exp` (to the sub-second, not rounded down to whole seconds) and not before `iat`'s second.
pub fn assert_valid_at(claims: &serde_json::Value, at: SystemTime, what: &str) {
    let exp = claims["exp"].as_f64().unwrap_or_else(|| panic!("{what}: no numeric exp in {claims}"));
    let iat = claims["iat"].as_f64().unwrap_or_else(|| panic!("{what}: no numeric iat in {claims}"));
    let at = unix_secs(at);
    assert!(at < exp, "{what}: token already expired when the upstream received it (exp {exp}, received {at:.3})");
    assert!(iat <= at.floor() + 1.0, "{what}: token issued in the future (iat {iat}, received {at:.3})");
}

// ---------------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------------

/// Polls `condition` every 20 ms until it holds; panics naming `what` if it still does not
/// hold after `within`.
pub async fn wait_until(within: Duration, what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if condition().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------------------------

/// The `token-sidecar` binary running as a child process; killed when dropped, so a failing
/// test never leaves it behind.
pub struct ChildSidecar {
    child: std::process::Child,
    pub log: PathBuf,
}

impl ChildSidecar {
    /// Runs `token-sidecar run --config CONFIG`, logging to `log`.
    pub fn spawn(config: &Path, log: PathBuf) -> ChildSidecar {
        let log_file = std::fs::File::create(&log).expect("create the child's log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_token-sidecar"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(log_file.try_clone().expect("clone log handle"))
            .stderr(log_file)
            .spawn()
            .expect("start the token-sidecar binary");
        ChildSidecar { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait on the child")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak resident set size (VmHWM) of the child, in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc/PID/status");
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("no VmHWM line");
        let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmHWM value");
        kib * 1024
    }

    /// Waits until the admin endpoint at `admin` answers `/readyz` with 200.
    pub async fn wait_ready(&mut self, admin: SocketAddr, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                panic!("token-sidecar exited early ({status}); log:\n{}", self.log_text());
            }
            let probe = request("GET", "/readyz", &[("host", &admin.to_string())], Bytes::new());
            if try_send(admin, probe).await.is_ok_and(|r| r.status == StatusCode::OK) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("token-sidecar not ready after {within:?}; log:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ChildSidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a blocking command off the async runtime and returns its output.
pub async fn run_command(mut command: std::process::Command) -> std::process::Output {
    let shown = format!("{command:?}");
    tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("command task")
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}
