//! Raw-socket helpers for attacks that a well-behaved client library would not send.
//!
//! - [`RawConn`]: any byte stream (TCP to the proxy, TLS inside a tunnel) on which raw request
//!   bytes are written and whole HTTP/1.1 responses are read back with a deadline and parsed
//!   (status, every header in order, the body de-chunked, and the raw body framing).
//! - [`open_tunnel`] / [`tls_over`] / [`intercepted`]: CONNECT on the proxy port, then TLS
//!   with tokio-rustls trusting only the given CA (the sidecar's).
//! - [`TestCa`] and [`TlsUpstream`]: an HTTPS upstream (h1 and h2) with its own CA that
//!   records what it received; [`EchoUpstream`]: a plain upstream that echoes the request
//!   back (Authorization included); [`RawUpstream`]: a TCP upstream answering raw bytes.
//! - Config snippets and [`Running`], a config folder plus the real binary started on it.
//!
//! Nothing here sleeps to wait for something: reads end on data, EOF or a deadline.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

use crate::harness::{ConfigDir, SidecarProcess};

/// How long any single exchange may take before a test fails instead of hanging.
pub const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Responses

/// One HTTP/1.1 response as it came off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// The status line and header lines, as received.
    pub head: String,
    /// Every header in order, names lowercased, duplicates kept.
    pub headers: Vec<(String, String)>,
    /// The body after removing the transfer coding (de-chunked).
    pub body: Vec<u8>,
    /// The body bytes as framed on the wire (chunk-size lines included).
    pub wire_body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}):\n{}\n{}", self.head, self.text()))
    }

    /// The code of an error the sidecar generated itself (`x-token-sidecar-error`).
    pub fn sidecar_error(&self) -> Option<&str> {
        self.header("x-token-sidecar-error")
    }

    /// `STATUS CODE` of a sidecar error, or `STATUS (from upstream or parser)`, for messages.
    pub fn summary(&self) -> String {
        match self.sidecar_error() {
            Some(code) => format!("{} {code}", self.status),
            None => format!("{} (no x-token-sidecar-error) body {:?}", self.status, truncate(&self.text(), 200)),
        }
    }

    /// Whether this is the sidecar error `status` / `code` with a JSON body naming the code.
    pub fn is_error(&self, status: u16, code: &str) -> bool {
        self.status == status
            && self.sidecar_error() == Some(code)
            && serde_json::from_slice::<Value>(&self.body).is_ok_and(|j| j["error"] == code && j["message"].is_string())
    }

    /// Asserts a sidecar-generated error: status, `x-token-sidecar-error: code`, JSON body
    /// `{"error": code, "message": ...}`, and no JWT anywhere in the response.
    pub fn assert_error(&self, status: u16, code: &str, context: &str) {
        assert_eq!(self.status, status, "{context}: unexpected status; response:\n{}\n{}", self.head, self.text());
        assert_eq!(self.sidecar_error(), Some(code), "{context}: x-token-sidecar-error; response:\n{}", self.head);
        let json = self.json();
        assert_eq!(json["error"], code, "{context}: error body {json}");
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()), "{context}: no message: {json}");
        self.assert_no_jwt(context);
    }

    /// Asserts that neither the head nor the body holds something shaped like a JWT.
    pub fn assert_no_jwt(&self, context: &str) {
        let all = format!("{}\n{}", self.head, self.text());
        let found = crate::harness::find_jwts(&all);
        assert!(found.is_empty(), "{context}: the response carries a JWT: {found:?}");
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}

/// What the response answers, which decides whether it has a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answering {
    /// Any request but HEAD and CONNECT.
    Request,
    Head,
    /// A CONNECT: a 2xx has no body (the tunnel starts right after the head).
    Connect,
}

// ---------------------------------------------------------------------------------------------
// A raw connection

/// A byte stream on which raw requests are written and responses parsed.
pub struct RawConn<S> {
    stream: S,
    buf: Vec<u8>,
    eof: bool,
}

impl RawConn<TcpStream> {
    /// A TCP connection to `addr`.
    pub async fn tcp(addr: SocketAddr) -> RawConn<TcpStream> {
        let stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let _ = stream.set_nodelay(true);
        RawConn::new(stream)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawConn<S> {
    pub fn new(stream: S) -> RawConn<S> {
        RawConn { stream, buf: Vec::new(), eof: false }
    }

    /// Writes `bytes` and flushes.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream.write_all(bytes).await.map_err(|e| format!("write: {e}"))?;
        self.stream.flush().await.map_err(|e| format!("flush: {e}"))
    }

    /// Writes a request and reads its response.
    pub async fn request(&mut self, bytes: &[u8]) -> Result<RawResponse, String> {
        self.send(bytes).await?;
        self.read_response(request_kind(bytes)).await
    }

    /// Reads one final response (interim 1xx responses are skipped) within [`DEADLINE`].
    pub async fn read_response(&mut self, answering: Answering) -> Result<RawResponse, String> {
        match tokio::time::timeout(DEADLINE, self.read_response_inner(answering)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no complete response within {DEADLINE:?}; received so far: {:?}",
                String::from_utf8_lossy(&self.buf)
            )),
        }
    }

    /// Bytes already read past the last response.
    pub fn leftover(&self) -> &[u8] {
        &self.buf
    }

    /// The stream and any bytes read past the last response.
    pub fn into_parts(self) -> (S, Vec<u8>) {
        (self.stream, self.buf)
    }

    /// Reads until the peer closes (or `deadline`), returning everything after the last
    /// response; `None` if the deadline passed with the connection still open.
    pub async fn rest_until_close(&mut self, deadline: Duration) -> Option<Vec<u8>> {
        let done = tokio::time::timeout(deadline, async {
            while !self.eof {
                if self.fill().await.is_err() {
                    break;
                }
            }
        })
        .await;
        done.ok().map(|()| std::mem::take(&mut self.buf))
    }

    async fn fill(&mut self) -> Result<usize, String> {
        if self.eof {
            return Err("connection closed".into());
        }
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) => {
                self.eof = true;
                Ok(0)
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            // A reset after the peer wrote its answer counts as the end of the stream.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                self.eof = true;
                Ok(0)
            }
            Err(e) => Err(format!("read: {e}")),
        }
    }

    /// Reads until `buf` holds `n` bytes; false on EOF first.
    async fn want(&mut self, n: usize) -> Result<bool, String> {
        while self.buf.len() < n {
            if self.fill().await? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reads a line ending in CRLF (returned without it).
    async fn line(&mut self) -> Result<String, String> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 2);
                return Ok(line);
            }
            if self.fill().await? == 0 {
                return Err(format!(
                    "connection closed in the middle of a line: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ));
            }
        }
    }

    async fn read_response_inner(&mut self, answering: Answering) -> Result<RawResponse, String> {
        loop {
            // The head.
            let end = loop {
                if let Some(pos) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break pos;
                }
                if self.fill().await? == 0 {
                    return Err(if self.buf.is_empty() {
                        "connection closed without a response".to_string()
                    } else {
                        format!("connection closed inside a response head: {:?}", String::from_utf8_lossy(&self.buf))
                    });
                }
            };
            let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
            self.buf.drain(..end + 4);
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap_or_default();
            let mut words = status_line.splitn(3, ' ');
            let version = words.next().unwrap_or_default();
            if !version.starts_with("HTTP/1.") {
                return Err(format!("not an HTTP/1.x response: {status_line:?}"));
            }
            let status: u16 =
                words.next().and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad status line {status_line:?}"))?;
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            let mut response = RawResponse { status, head, headers, body: Vec::new(), wire_body: Vec::new() };
            let bodyless = answering == Answering::Head
                || (answering == Answering::Connect && (200..300).contains(&status))
                || status == 204
                || status == 304
                || status == 101;
            if bodyless {
                return Ok(response);
            }
            let chunked = response
                .header_all("transfer-encoding")
                .iter()
                .any(|v| v.split(',').any(|c| c.trim().eq_ignore_ascii_case("chunked")));
            if chunked {
                loop {
                    let size_line = self.line().await?;
                    response.wire_body.extend_from_slice(size_line.as_bytes());
                    response.wire_body.extend_from_slice(b"\r\n");
                    let size_text = size_line.split(';').next().unwrap_or_default().trim();
                    let size = usize::from_str_radix(size_text, 16)
                        .map_err(|_| format!("bad chunk size line {size_line:?}"))?;
                    if size == 0 {
                        // Trailers up to the empty line.
                        loop {
                            let trailer = self.line().await?;
                            response.wire_body.extend_from_slice(trailer.as_bytes());
                            response.wire_body.extend_from_slice(b"\r\n");
                            if trailer.is_empty() {
                                break;
                            }
                        }
                        break;
                    }
                    if !self.want(size + 2).await? {
                        return Err(format!("connection closed inside a chunk of {size} bytes"));
                    }
                    response.body.extend_from_slice(&self.buf[..size]);
                    response.wire_body.extend_from_slice(&self.buf[..size + 2]);
                    if &self.buf[size..size + 2] != b"\r\n" {
                        return Err("chunk data not followed by CRLF".into());
                    }
                    self.buf.drain(..size + 2);
                }
            } else if let Some(len) = response.header("content-length") {
                let len: usize = len.parse().map_err(|_| format!("bad content-length {len:?}"))?;
                if !self.want(len).await? {
                    return Err(format!(
                        "connection closed after {} of {len} body bytes (content-length)",
                        self.buf.len()
                    ));
                }
                response.body = self.buf.drain(..len).collect();
                response.wire_body = response.body.clone();
            } else {
                // Close-delimited.
                while self.fill().await? > 0 {}
                response.body = std::mem::take(&mut self.buf);
                response.wire_body = response.body.clone();
            }
            return Ok(response);
        }
    }
}

fn request_kind(bytes: &[u8]) -> Answering {
    if bytes.starts_with(b"HEAD ") {
        Answering::Head
    } else if bytes.starts_with(b"CONNECT ") {
        Answering::Connect
    } else {
        Answering::Request
    }
}

/// Sends raw `bytes` on a fresh TCP connection to `addr` and reads the response; panics if no
/// complete response arrives within the deadline.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> RawResponse {
    try_exchange(addr, bytes).await.unwrap_or_else(|e| panic!("{} to {addr}: {e}", first_line(bytes)))
}

/// Like [`exchange`], returning transport errors (e.g. the connection closed without an answer).
pub async fn try_exchange(addr: SocketAddr, bytes: &[u8]) -> Result<RawResponse, String> {
    let mut conn = RawConn::tcp(addr).await;
    conn.request(bytes).await
}

/// The request line of raw request bytes, for messages.
pub fn first_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.split("\r\n").next().unwrap_or_default().to_string()
}

/// A GET request as raw bytes: `GET target HTTP/1.1`, `Host: host`, then `headers`, with
/// `Connection: close`.
pub fn get_bytes(target: &str, host: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    request_bytes("GET", target, &[("Host", host)], headers, b"")
}

/// A request as raw bytes: the request line, `host_headers` then `headers` in order,
/// `Content-Length` when `body` is not empty, and `Connection: close`.
pub fn request_bytes(
    method: &str,
    target: &str,
    host_headers: &[(&str, &str)],
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\n");
    for (k, v) in host_headers.iter().chain(headers) {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

// ---------------------------------------------------------------------------------------------
// CONNECT and TLS

/// Sends `CONNECT target` (with `Host: target`) on the proxy port. `Ok` with the open stream on
/// a 2xx, else the whole refusal.
pub async fn open_tunnel(proxy: SocketAddr, target: &str) -> Result<TcpStream, RawResponse> {
    let mut conn = RawConn::tcp(proxy).await;
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    let response = conn.request(request.as_bytes()).await.unwrap_or_else(|e| panic!("CONNECT {target}: {e}"));
    if (200..300).contains(&response.status) {
        let (stream, leftover) = conn.into_parts();
        assert!(leftover.is_empty(), "bytes after the CONNECT 200 before TLS: {leftover:?}");
        Ok(stream)
    } else {
        Err(response)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A rustls client config trusting only the certificates in `roots_pem`, offering `alpn`.
pub fn client_config(roots_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        store.add(cert.expect("PEM certificate")).expect("root certificate");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS client handshake over `stream` with SNI `sni`, trusting only `roots_pem`.
pub async fn tls_over<S>(stream: S, roots_pem: &str, sni: &str, alpn: &[&[u8]]) -> std::io::Result<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let connector = tokio_rustls::TlsConnector::from(client_config(roots_pem, alpn));
    let name = ServerName::try_from(sni.to_string()).map_err(std::io::Error::other)?;
    tokio::time::timeout(DEADLINE, connector.connect(name, stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// CONNECT `target` and complete TLS inside the tunnel (SNI `sni`, trusting `ca_pem`);
/// panics, saying which step failed, if either step fails.
pub async fn intercepted(
    proxy: SocketAddr,
    target: &str,
    ca_pem: &str,
    sni: &str,
    alpn: &[&[u8]],
) -> TlsStream<TcpStream> {
    let stream = match open_tunnel(proxy, target).await {
        Ok(s) => s,
        Err(r) => panic!("CONNECT {target} refused: {}\n{}", r.head, r.text()),
    };
    tls_over(stream, ca_pem, sni, alpn)
        .await
        .unwrap_or_else(|e| panic!("TLS (SNI {sni}) inside the tunnel to {target} failed: {e}"))
}

/// An h1 keep-alive raw connection inside an intercepted tunnel.
pub async fn intercepted_raw(
    proxy: SocketAddr,
    target: &str,
    ca_pem: &str,
    sni: &str,
) -> RawConn<TlsStream<TcpStream>> {
    RawConn::new(intercepted(proxy, target, ca_pem, sni, &[b"http/1.1"]).await)
}

/// An h2 client over an intercepted tunnel (ALPN h2).
pub async fn intercepted_h2(
    proxy: SocketAddr,
    target: &str,
    ca_pem: &str,
    sni: &str,
) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let tls = intercepted(proxy, target, ca_pem, sni, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "the sidecar did not negotiate h2");
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .expect("h2 handshake inside the tunnel");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

/// Sends one request on an h2 connection; returns status, headers and body.
pub async fn h2_send(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    req: http::Request<Full<Bytes>>,
) -> (u16, http::HeaderMap, Bytes) {
    let response = tokio::time::timeout(DEADLINE, sender.send_request(req))
        .await
        .expect("h2 response in time")
        .expect("h2 response");
    let status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(DEADLINE, body.collect()).await.expect("h2 body in time").expect("h2 body");
    (status, parts.headers, body.to_bytes())
}

// ---------------------------------------------------------------------------------------------
// Upstreams

/// A throwaway CA for TLS test upstreams (the sidecar trusts it through `extra_ca_file`).
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "security test upstream CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa { pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// A leaf certificate chain and key for `names`.
    pub fn issue(&self, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("leaf key");
        let params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("names");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf certificate");
        (vec![cert.der().clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
    }
}

/// What a test upstream received of one request.
#[derive(Debug, Clone)]
pub struct Received {
    pub version: http::Version,
    pub method: String,
    /// Path and query as received.
    pub uri: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every `Host` header value received.
    pub fn hosts(&self) -> Vec<String> {
        self.headers.get_all("host").iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect()
    }

    pub fn bearer(&self) -> Option<&str> {
        self.header("authorization").and_then(|a| a.strip_prefix("Bearer "))
    }

    /// Every JWT in the headers, target and body.
    pub fn jwts(&self) -> Vec<String> {
        let mut out = Vec::new();
        for v in self.headers.values() {
            out.extend(crate::harness::find_jwts(&String::from_utf8_lossy(v.as_bytes())));
        }
        out.extend(crate::harness::find_jwts(&self.uri));
        out.extend(crate::harness::find_jwts(&String::from_utf8_lossy(&self.body)));
        out
    }
}

type Record = Arc<Mutex<Vec<Received>>>;

async fn record_request(record: &Record, req: http::Request<hyper::body::Incoming>) -> Received {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let seen = Received {
        version: parts.version,
        method: parts.method.to_string(),
        uri: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_else(|| parts.uri.to_string()),
        headers: parts.headers,
        body,
    };
    record.lock().unwrap().push(seen.clone());
    seen
}

/// An HTTPS upstream on 127.0.0.1 (certificate for `localhost` and `127.0.0.1`) speaking h2
/// and HTTP/1.1, recording every request and answering `200 upstream ok`.
pub struct TlsUpstream {
    pub addr: SocketAddr,
    seen: Record,
    task: tokio::task::JoinHandle<()>,
}

impl TlsUpstream {
    pub async fn start(ca: &TestCa) -> TlsUpstream {
        TlsUpstream::with_delay(ca, Duration::ZERO).await
    }

    /// Like [`TlsUpstream::start`], answering each request `delay` after it arrived.
    pub async fn with_delay(ca: &TestCa, delay: Duration) -> TlsUpstream {
        let (chain, key) = ca.issue(&["localhost", "127.0.0.1"]);
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind TLS upstream");
        let addr = listener.local_addr().expect("addr");
        let seen: Record = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let service = service_fn(move |req| {
                        let record = Arc::clone(&record);
                        async move {
                            record_request(&record, req).await;
                            tokio::time::sleep(delay).await;
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"upstream ok"))))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsUpstream { addr, seen, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn all(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Option<Received> {
        self.seen.lock().unwrap().last().cloned()
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A plain HTTP/1.1 upstream that answers every request with its own description, echoing
/// the Authorization header back both as the response header `x-echo-authorization` and in
/// a JSON body `{"method", "uri", "authorization", "headers": {...}, "body"}` (as a
/// debugging endpoint or an error page that reflects the request would).
pub struct EchoUpstream {
    pub addr: SocketAddr,
    seen: Record,
    task: tokio::task::JoinHandle<()>,
}

impl EchoUpstream {
    pub async fn start() -> EchoUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo upstream");
        let addr = listener.local_addr().expect("addr");
        let seen: Record = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let record = Arc::clone(&record);
                        async move {
                            let seen = record_request(&record, req).await;
                            let headers: serde_json::Map<String, Value> = seen
                                .headers
                                .iter()
                                .map(|(k, v)| (k.to_string(), Value::from(String::from_utf8_lossy(v.as_bytes()))))
                                .collect();
                            let auth = seen.header("authorization").unwrap_or_default().to_string();
                            let body = serde_json::json!({
                                "method": seen.method,
                                "uri": seen.uri,
                                "authorization": auth,
                                "headers": headers,
                                "body": String::from_utf8_lossy(&seen.body),
                            });
                            let mut response = http::Response::new(Full::new(Bytes::from(body.to_string())));
                            response
                                .headers_mut()
                                .insert("content-type", http::HeaderValue::from_static("application/json"));
                            if let Ok(v) = http::HeaderValue::from_str(&auth) {
                                response.headers_mut().insert("x-echo-authorization", v);
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        EchoUpstream { addr, seen, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn all(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Option<Received> {
        self.seen.lock().unwrap().last().cloned()
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The head of a request a [`RawUpstream`] received.
#[derive(Debug, Clone)]
pub struct RawHead {
    pub request_line: String,
    /// Names lowercased, in order.
    pub headers: Vec<(String, String)>,
}

impl RawHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

type Responder = dyn Fn(&RawHead) -> Vec<Vec<u8>> + Send + Sync;

/// A TCP upstream for hostile answers: for each connection it reads one request head (and a
/// `Content-Length` body), records the head, writes the pieces `respond` returns one write
/// (and flush) at a time, and closes the connection.
pub struct RawUpstream {
    pub addr: SocketAddr,
    heads: Arc<Mutex<Vec<RawHead>>>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RawUpstream {
    pub async fn start(respond: impl Fn(&RawHead) -> Vec<Vec<u8>> + Send + Sync + 'static) -> RawUpstream {
        let respond: Arc<Responder> = Arc::new(respond);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind raw upstream");
        let addr = listener.local_addr().expect("addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (record, count) = (Arc::clone(&heads), Arc::clone(&connections));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let (record, respond) = (Arc::clone(&record), Arc::clone(&respond));
                tokio::spawn(async move {
                    let mut stream = stream;
                    let _ = stream.set_nodelay(true);
                    let Some(head) = read_request_head(&mut stream).await else { return };
                    record.lock().unwrap().push(head.clone());
                    for piece in respond(&head) {
                        if stream.write_all(&piece).await.is_err() || stream.flush().await.is_err() {
                            return;
                        }
                    }
                    let _ = stream.shutdown().await;
                });
            }
        });
        RawUpstream { addr, heads, connections, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn heads(&self) -> Vec<RawHead> {
        self.heads.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_request_head(stream: &mut TcpStream) -> Option<RawHead> {
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
    let request_line = lines.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let head = RawHead { request_line, headers };
    if let Some(len) = head.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        let mut have = buf.len() - (end + 4);
        while have < len {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            have += n;
        }
    }
    Some(head)
}

// ---------------------------------------------------------------------------------------------
// Configs and the running binary

/// `[proxy]` and `[admin]` on ephemeral loopback ports, with `proxy_extra` added to `[proxy]`.
pub fn base_config(proxy_extra: &str) -> String {
    format!("[proxy]\nlisten = \"127.0.0.1:0\"\n{proxy_extra}\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n")
}

/// An RS256 token signed with the demo key (copied by [`ConfigDir`] into `keys/`).
pub fn rs256_token(name: &str) -> String {
    format!(
        "[tokens.{name}]\nalgorithm = \"RS256\"\nkey_type = \"RsaPem\"\nkey_file = \"keys/demo-rsa.key.pem\"\n\
         kid = \"demo-rsa-2026\"\nttl = \"10m\"\n\n[tokens.{name}.claims]\niss = \"security-tests\"\nsub = \"{name}\"\n\n"
    )
}

/// `[tls]` with a CA the sidecar creates at start-up in `ca/` of the config folder.
pub const TLS_SECTION: &str = "[tls]\nca_cert = \"ca/ca.pem\"\nca_key = \"ca/ca.key\"\ngenerate_if_missing = true\n\n";

/// The file (relative to the config folder) holding a TLS upstream's CA, for `extra_ca_file`.
pub const UPSTREAM_CA_FILE: &str = "upstream-ca.pem";

/// A loopback port that was free a moment ago, for listeners the binary must bind by number.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("addr").port()
}

/// A config folder (demo keys in `keys/`) and the real binary running on it.
pub struct Running {
    pub dir: ConfigDir,
    pub sidecar: SidecarProcess,
}

impl Running {
    /// Writes `config` (and `upstream_ca`, if any, as [`UPSTREAM_CA_FILE`]) into a fresh config
    /// folder and starts the binary with `--log log`, waiting until it is ready.
    pub async fn start(config: &str, upstream_ca: Option<&TestCa>, log: &str) -> Running {
        let dir = ConfigDir::new();
        if let Some(ca) = upstream_ca {
            std::fs::write(dir.path(UPSTREAM_CA_FILE), &ca.pem).expect("write upstream CA");
        }
        let path = dir.write_config(config);
        let sidecar = SidecarProcess::start(&path, log).await;
        Running { dir, sidecar }
    }

    pub fn proxy(&self) -> SocketAddr {
        self.sidecar.proxy
    }

    pub fn admin(&self) -> SocketAddr {
        self.sidecar.admin
    }

    /// The sidecar's interception CA certificate (PEM), created at start-up.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path("ca/ca.pem")).expect("the sidecar created its CA in ca/ca.pem")
    }

    /// Every PEM private-key file the sidecar was given (demo keys and its CA key).
    pub fn key_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path("keys"))
            .expect("keys dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| !p.to_string_lossy().contains(".pub.") && !p.to_string_lossy().ends_with(".jwk.json"))
            .collect();
        let ca_key = self.dir.path("ca/ca.key");
        if ca_key.exists() {
            files.push(ca_key);
        }
        files.sort();
        files
    }
}

/// Lines of key files that must never appear in a log: every base64 body line of each PEM
/// file (and the whole content of non-PEM secrets), 16 characters or longer.
pub fn key_material_lines(files: &[PathBuf]) -> Vec<String> {
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
        for line in text.lines().map(str::trim) {
            if line.len() >= 16 && !line.starts_with("-----") {
                out.push(line.to_string());
            }
        }
    }
    out
}

/// Whether `haystack` contains `needle` (memchr's memmem, fast even in a debug build: logs at
/// trace run to hundreds of megabytes).
pub fn contains(haystack: &str, needle: &str) -> bool {
    memchr::memmem::find(haystack.as_bytes(), needle.as_bytes()).is_some()
}

/// Every distinct JWT-shaped string (`eyJ...` in three non-empty base64url segments) in
/// `text`; the same result as `harness::find_jwts`, fast on large logs.
pub fn jwts_in(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let is_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let mut out = Vec::new();
    for start in memchr::memmem::find_iter(bytes, b"eyJ") {
        if start > 0 && is_char(bytes[start - 1]) {
            continue;
        }
        let end = bytes[start..].iter().position(|&b| !is_char(b)).map_or(bytes.len(), |n| start + n);
        let word = &text[start..end];
        if word.split('.').count() == 3 && word.split('.').all(|s| !s.is_empty()) {
            out.push(word.to_string());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// What in `log` must not be there: JWT-shaped strings and lines of key material from
/// `key_files` (one description each, with the offending log line).
pub fn log_leaks(log: &str, key_files: &[PathBuf]) -> Vec<String> {
    let mut leaks = Vec::new();
    for jwt in jwts_in(log) {
        leaks.push(format!("a JWT in: {}", line_with(log, &jwt)));
    }
    for line in key_material_lines(key_files) {
        if contains(log, &line) {
            leaks.push(format!("key material in: {}", line_with(log, &line)));
        }
    }
    leaks
}

/// Asserts that `log` holds no JWT-shaped string and no line of key material from `key_files`.
pub fn assert_log_clean(log: &str, key_files: &[PathBuf], context: &str) {
    let leaks = log_leaks(log, key_files);
    assert!(leaks.is_empty(), "{context}: {} leak(s) in the log; first: {}", leaks.len(), leaks[0]);
}

/// The first log line containing `needle`, for failure messages.
pub fn line_with(log: &str, needle: &str) -> String {
    let Some(at) = memchr::memmem::find(log.as_bytes(), needle.as_bytes()) else { return String::new() };
    let start = log[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = log[at..].find('\n').map_or(log.len(), |i| at + i);
    truncate(&log[start..end], 600)
}
