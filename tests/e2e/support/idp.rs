//! A mock identity provider: a token endpoint (or any scripted HTTP/1.1 server) on 127.0.0.1:0.
//!
//! [`Idp::start`] records every request whole (method, target, headers, body, and the body
//! parsed as a form or as JSON) and answers from a script: first from a queue of [`Reply`]s
//! ([`Idp::push`]), then from a default closure ([`Idp::answer_with`]). Out of the box the
//! default issues `{"access_token": "idp-access-N", "token_type": "Bearer", "expires_in": 3600}`
//! for the Nth request ([`access_token`]), so every exchange yields a distinct token.
//!
//! The endpoint can be down: [`Idp::start_down`] reserves a port that refuses connections until
//! [`Idp::up`]; [`Idp::down`] refuses again (and drops open connections). It doubles as a
//! scripted upstream for tests whose answer depends on the request (a 401 for one token).
//!
//! Waiting is on the count of requests with a deadline ([`Idp::wait_for`]), never a sleep.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::AbortHandle;

use super::ca::TestCa;
use super::wait::wait_until;

/// The access token the default script issues for the `n`th request (1-based).
pub fn access_token(n: usize) -> String {
    format!("idp-access-{n}")
}

/// One answer of the endpoint.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// How long to wait (after the request body ended) before answering.
    pub delay: Duration,
}

impl Reply {
    /// `status` with a JSON body.
    pub fn json(status: u16, body: Value) -> Reply {
        Reply::raw(status, "application/json", body.to_string())
    }

    /// 200 with a JSON body.
    pub fn ok(body: Value) -> Reply {
        Reply::json(200, body)
    }

    /// A standard OAuth 2.0 token answer: `access_token`, `token_type = "Bearer"`, `expires_in`.
    pub fn token(access_token: &str, expires_in: u64) -> Reply {
        Reply::ok(serde_json::json!({ "access_token": access_token, "token_type": "Bearer", "expires_in": expires_in }))
    }

    /// An OAuth 2.0 error answer (RFC 6749 §5.2).
    pub fn oauth_error(status: u16, error: &str, description: &str) -> Reply {
        Reply::json(status, serde_json::json!({ "error": error, "error_description": description }))
    }

    /// `status` with an empty body.
    pub fn status(status: u16) -> Reply {
        Reply { status, headers: Vec::new(), body: Bytes::new(), delay: Duration::ZERO }
    }

    /// `status` with any body and content type.
    pub fn raw(status: u16, content_type: &str, body: impl Into<Bytes>) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    /// Answers `delay` after the request ended.
    pub fn delayed(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// One request as the endpoint received it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// 1-based position among every request the endpoint received.
    pub n: usize,
    pub method: Method,
    /// The request target's path and query, as received.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body as `application/x-www-form-urlencoded` pairs, in order (whatever its content
    /// type; empty if it is not form-shaped text).
    pub form_pairs: Vec<(String, String)>,
    /// The body as JSON, if it is JSON.
    pub json: Option<Value>,
    /// When the whole request had arrived (wall clock, to compare with claims).
    pub arrived: SystemTime,
    /// When the whole request had arrived (monotonic).
    pub at: Instant,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The path of the target, without the query.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The form as a map (a repeated field keeps its last value; see [`Seen::form_pairs`]).
    pub fn form(&self) -> BTreeMap<String, String> {
        self.form_pairs.iter().cloned().collect()
    }

    /// One form field, if present.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form_pairs.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// One form field; panics (showing the form's field names) if it is missing.
    pub fn must(&self, name: &str) -> &str {
        self.field(name).unwrap_or_else(|| {
            let names: Vec<&str> = self.form_pairs.iter().map(|(k, _)| k.as_str()).collect();
            panic!("request {} has no form field {name:?}; fields: {names:?}", self.n)
        })
    }

    /// The form's field names, sorted.
    pub fn field_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.form_pairs.iter().map(|(k, _)| k.clone()).collect();
        names.sort();
        names
    }

    /// The credential of `Authorization: Bearer ...`, if any.
    pub fn bearer(&self) -> Option<&str> {
        self.header("authorization").and_then(|a| a.strip_prefix("Bearer "))
    }

    /// The raw credential of `Authorization: Basic ...` (still base64), if any.
    pub fn basic_raw(&self) -> Option<&str> {
        self.header("authorization").and_then(|a| a.strip_prefix("Basic "))
    }

    /// `Authorization: Basic` decoded as RFC 6749 §2.3.1 says: base64, split at the first
    /// `:`, each side form-urldecoded. `None` without a Basic header; panics on a malformed one.
    pub fn basic(&self) -> Option<(String, String)> {
        let raw = self.basic_raw()?;
        let decoded = STANDARD.decode(raw).unwrap_or_else(|e| panic!("Basic credential is not base64 ({e}): {raw}"));
        let text = String::from_utf8(decoded).expect("Basic credential is UTF-8");
        let (id, secret) = text.split_once(':').unwrap_or_else(|| panic!("Basic credential without ':': {text:?}"));
        Some((form_decode(id), form_decode(secret)))
    }
}

/// Decodes `application/x-www-form-urlencoded` text into pairs (`+` is a space, `%XX` a byte).
pub fn parse_form(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (form_decode(k), form_decode(v)),
            None => (form_decode(pair), String::new()),
        })
        .collect()
}

/// Decodes one `application/x-www-form-urlencoded` component.
pub fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 3 <= bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes one component as `application/x-www-form-urlencoded` (WHATWG URL's byte serializer:
/// ASCII alphanumerics and `*-._` stay, a space becomes `+`, every other byte `%XX`).
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The `Authorization` value of `client_secret_basic` for these credentials (RFC 6749 §2.3.1).
pub fn basic_header(client_id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{}:{}", form_encode(client_id), form_encode(secret))))
}

type Script = dyn Fn(&Seen) -> Reply + Send + Sync;

struct State {
    requests: Mutex<Vec<Seen>>,
    queue: Mutex<VecDeque<Reply>>,
    default: Mutex<Arc<Script>>,
    /// Tasks serving open connections, aborted by [`Idp::down`].
    connections: Mutex<Vec<AbortHandle>>,
    /// Present for an HTTPS endpoint ([`Idp::start_tls`]).
    tls: Option<tokio_rustls::TlsAcceptor>,
}

enum Listening {
    /// Bound, not listening: connections are refused, the port stays ours.
    Refusing(TcpSocket),
    Accepting(AbortHandle),
}

/// A mock token endpoint on 127.0.0.1; stops when dropped.
pub struct Idp {
    pub addr: SocketAddr,
    state: Arc<State>,
    listening: Mutex<Option<Listening>>,
}

fn reserve(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

impl Idp {
    /// Listening, with the default script (see the module docs).
    pub async fn start() -> Idp {
        let idp = Idp::start_down().await;
        idp.up();
        idp
    }

    /// Listening over HTTPS with a certificate for `localhost` and `127.0.0.1` from `ca`
    /// (the sidecar trusts it through `extra_ca_file`); [`Idp::url`] gives `https://` URLs.
    pub async fn start_tls(ca: &TestCa) -> Idp {
        let idp = Idp::reserved(Some(tokio_rustls::TlsAcceptor::from(ca.server_config(&["localhost", "127.0.0.1"]))));
        idp.up();
        idp
    }

    /// A reserved port that refuses connections until [`Idp::up`].
    pub async fn start_down() -> Idp {
        Idp::reserved(None)
    }

    fn reserved(tls: Option<tokio_rustls::TlsAcceptor>) -> Idp {
        let socket = reserve(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind the IdP");
        let addr = socket.local_addr().expect("IdP addr");
        let state = Arc::new(State {
            requests: Mutex::new(Vec::new()),
            queue: Mutex::new(VecDeque::new()),
            default: Mutex::new(Arc::new(|seen: &Seen| {
                Reply::token(&access_token(seen.n), 3600).with_header("cache-control", "no-store")
            })),
            connections: Mutex::new(Vec::new()),
            tls,
        });
        Idp { addr, state, listening: Mutex::new(Some(Listening::Refusing(socket))) }
    }

    /// Starts accepting connections (no-op if it already does).
    pub fn up(&self) {
        let mut listening = self.listening.lock().unwrap();
        let socket = match listening.take() {
            Some(Listening::Refusing(socket)) => socket,
            other => {
                *listening = other;
                return;
            }
        };
        let listener = socket.listen(128).expect("IdP listen");
        let state = Arc::clone(&self.state);
        *listening = Some(Listening::Accepting(tokio::spawn(accept(listener, state)).abort_handle()));
    }

    /// Stops accepting (new connections are refused) and closes every open connection.
    pub async fn down(&self) {
        if let Some(Listening::Accepting(task)) = self.listening.lock().unwrap().take() {
            task.abort();
        }
        for conn in self.state.connections.lock().unwrap().drain(..) {
            conn.abort();
        }
        // The aborted task drops its listener on its next poll; bind again once it has.
        let mut socket = None;
        let bound = wait_until(Duration::from_secs(5), async || {
            socket = reserve(self.addr).ok();
            socket.is_some()
        })
        .await;
        assert!(bound, "could not re-reserve the IdP's port {}", self.addr);
        *self.listening.lock().unwrap() = socket.map(Listening::Refusing);
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT` + `path` (`https://` for [`Idp::start_tls`]).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.state.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Queues one answer; queued answers are used in order before the default script.
    pub fn push(&self, reply: Reply) {
        self.state.queue.lock().unwrap().push_back(reply);
    }

    /// Replaces the default script (used whenever the queue is empty).
    pub fn answer_with(&self, script: impl Fn(&Seen) -> Reply + Send + Sync + 'static) {
        *self.state.default.lock().unwrap() = Arc::new(script);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.requests.lock().unwrap().clone()
    }

    /// How many requests have arrived (whole).
    pub fn count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    pub fn last(&self) -> Option<Seen> {
        self.state.requests.lock().unwrap().last().cloned()
    }

    /// The `n`th request (1-based); panics if it has not arrived.
    pub fn nth(&self, n: usize) -> Seen {
        let all = self.state.requests.lock().unwrap();
        all.get(n.wrapping_sub(1)).cloned().unwrap_or_else(|| panic!("request {n} has not arrived (got {})", all.len()))
    }

    /// Whether at least `n` requests arrive within `deadline`.
    pub async fn reaches(&self, n: usize, deadline: Duration) -> bool {
        wait_until(deadline, async || self.count() >= n).await
    }

    /// Waits until at least `n` requests have arrived and returns the `n`th; panics with
    /// what did arrive after `deadline`.
    pub async fn wait_for(&self, n: usize, deadline: Duration) -> Seen {
        if !self.reaches(n, deadline).await {
            let seen: Vec<String> = self.requests().iter().map(|s| format!("{} {}", s.method, s.uri)).collect();
            panic!("the IdP did not receive {n} requests within {deadline:?}; it received {seen:?}");
        }
        self.nth(n)
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        if let Some(Listening::Accepting(task)) = self.listening.lock().unwrap().take() {
            task.abort();
        }
        for conn in self.state.connections.lock().unwrap().drain(..) {
            conn.abort();
        }
    }
}

async fn accept(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&state);
        let service = service_fn(move |req: Request<Incoming>| {
            let state = Arc::clone(&shared);
            async move { Ok::<_, Infallible>(answer(state, req).await) }
        });
        let tls = state.tls.clone();
        let task = tokio::spawn(async move {
            // HTTP/1.1, and h2 when TLS negotiates it (as real token endpoints do).
            let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            match tls {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
            }
        });
        let mut connections = state.connections.lock().unwrap();
        connections.retain(|t| !t.is_finished());
        connections.push(task.abort_handle());
    }
}

async fn answer(state: Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let uri = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_else(|| parts.uri.to_string());
    let text = std::str::from_utf8(&body).unwrap_or_default();
    let json = serde_json::from_slice(&body).ok();
    let form_pairs = if json.is_none() && !text.contains(char::is_whitespace) { parse_form(text) } else { Vec::new() };
    let reply = {
        let mut requests = state.requests.lock().unwrap();
        let seen = Seen {
            n: requests.len() + 1,
            method: parts.method,
            uri,
            headers: parts.headers,
            body,
            form_pairs,
            json,
            arrived: SystemTime::now(),
            at: Instant::now(),
        };
        // Chosen under the requests lock, so replies are handed out in arrival order.
        let queued = state.queue.lock().unwrap().pop_front();
        let reply = queued.unwrap_or_else(|| {
            let script = Arc::clone(&state.default.lock().unwrap());
            script(&seen)
        });
        requests.push(seen);
        reply
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = Response::new(Full::new(reply.body));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &reply.headers {
        response.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("reply header name"),
            HeaderValue::from_str(value).expect("reply header value"),
        );
    }
    response
}
