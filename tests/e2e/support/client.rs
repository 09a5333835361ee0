//! Clients: a hyper HTTP/1.1 client that talks to the proxy in absolute form (or origin form to
//! a reverse listener or the admin port), one reply type, and the command builder every process
//! the suite starts goes through (curl, python3, openssl, kill and the sidecar binary), which
//! clears the proxy environment.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Command, Output};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::jwt::assert_no_jwt;

// ---------------------------------------------------------------------------------------------
// Processes

/// The proxy variables clients honour. curl reads `NO_PROXY` even with `-x`, and Python
/// requests lets `NO_PROXY` override explicit `proxies=`; a test run with any of these set in
/// its environment must behave exactly like one without.
const PROXY_ENV: [&str; 8] =
    ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"];

/// A command for `program` with the proxy environment cleared. Every process the suite starts
/// is built here; a test sets what it means to test (`.env("http_proxy", ...)`) afterwards.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    for var in PROXY_ENV {
        c.env_remove(var);
    }
    c
}

/// `curl` with the proxy environment cleared.
pub fn curl() -> Command {
    command("curl")
}

/// `python3` with the proxy environment cleared.
pub fn python() -> Command {
    command("python3")
}

/// Runs a command to completion off the async runtime (so in-process sidecars and upstreams on
/// the runtime keep serving it) and returns its output.
pub async fn run_command(mut command: Command) -> Output {
    let shown = format!("{command:?}");
    tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("command task")
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("utf-8 stderr")
}

// ---------------------------------------------------------------------------------------------
// Replies

/// A whole response as the client saw it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.text()))
    }

    /// The code of an error the sidecar generated itself (`x-token-sidecar-error`).
    pub fn sidecar_error(&self) -> Option<&str> {
        self.headers.get(token_sidecar::error::ERROR_HEADER).and_then(|v| v.to_str().ok())
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

// ---------------------------------------------------------------------------------------------
// Requests

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Builds a request. `url` is absolute (`http://host:port/path`) for the forward proxy, or
/// origin-form (`/path`) for a reverse listener or the admin port. Host is set from an
/// absolute URL when sent, unless `headers` names one.
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

async fn handshake<B>(addr: SocketAddr) -> Result<SendRequest<B>, String>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect to {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn exchange<B>(sender: &mut SendRequest<B>, mut req: Request<B>) -> Result<Reply, String>
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
    sender.ready().await.map_err(|e| format!("connection not ready: {e}"))?;
    let response = sender.send_request(req).await.map_err(|e| format!("sending the request: {e}"))?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| format!("reading the response: {e}"))?.to_bytes();
    Ok(Reply { status: parts.status, headers: parts.headers, body })
}

/// Sends `req` over a fresh connection to `addr` and reads the whole response.
async fn try_send<B>(addr: SocketAddr, req: Request<B>) -> Result<Reply, String>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut sender = handshake(addr).await?;
    exchange(&mut sender, req).await
}

/// Like [`try_send`], panicking on transport errors.
pub async fn send<B>(addr: SocketAddr, req: Request<B>) -> Reply
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    try_send(addr, req).await.unwrap_or_else(|e| panic!("{e}"))
}

/// GET `url` through the proxy (or listener) at `addr`, on a fresh connection.
pub async fn get(addr: SocketAddr, url: &str, headers: &[(&str, &str)]) -> Reply {
    send(addr, request("GET", url, headers, Bytes::new())).await
}

/// POST `body` to `url` through the proxy (or listener) at `addr`, on a fresh connection.
pub async fn post(addr: SocketAddr, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
    send(addr, request("POST", url, headers, body)).await
}

/// GET `path` on the admin listener.
pub async fn admin_get(admin: SocketAddr, path: &str) -> Reply {
    get(admin, path, &[("host", &admin.to_string())]).await
}

/// One keep-alive HTTP/1.1 connection (to the proxy, sending absolute-form requests as a
/// client with `HTTP_PROXY` set does). Reconnects if the connection was closed.
pub struct Client {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, sender: None }
    }

    /// Sends `method url` with the given headers and body.
    pub async fn send(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Reply, String> {
        let req = request(method, url, headers, body.to_string());
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.sender = Some(handshake(self.addr).await?);
        }
        let sender = self.sender.as_mut().expect("connected");
        let reply = exchange(sender, req).await;
        if reply.is_err() {
            self.sender = None;
        }
        reply
    }

    pub async fn get(&mut self, url: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
        self.send("GET", url, headers, "").await
    }
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
