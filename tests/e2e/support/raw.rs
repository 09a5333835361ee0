//! Raw sockets, for requests a well-behaved client library would not send.
//!
//! [`RawConn`]: any byte stream (TCP to the proxy or a listener, TLS inside a tunnel) on which
//! raw request bytes are written and whole HTTP/1.1 responses are read back with a deadline and
//! parsed ([`RawResponse`]: status, every header in order, the body de-chunked). Plus request
//! byte builders, and `/proc/net/tcp` readers that tell when the sidecar has read everything a
//! client sent.
//!
//! Nothing here sleeps to wait for something: reads end on data, EOF or a deadline.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::jwt::find_jwts;
use super::logs::truncate;
use super::wait::wait_until;

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
        let found = find_jwts(&all);
        assert!(found.is_empty(), "{context}: the response carries a JWT: {found:?}");
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

    /// A TCP connection to `addr` on which `bytes` have been written.
    pub async fn sending(addr: SocketAddr, bytes: &[u8]) -> RawConn<TcpStream> {
        let mut conn = RawConn::tcp(addr).await;
        conn.send(bytes).await.unwrap_or_else(|e| panic!("{} to {addr}: {e}", first_line(bytes)));
        conn
    }

    /// Waits until the peer has read everything sent on this connection (see [`absorbed`]).
    pub async fn wait_absorbed(&self, deadline: Duration) -> bool {
        let local = self.stream.local_addr().expect("local addr");
        let peer = self.stream.peer_addr().expect("peer addr");
        wait_until(deadline, async || absorbed(local, peer)).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawConn<S> {
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
}

impl<S: AsyncRead + Unpin> RawConn<S> {
    /// Reads from `stream` (which may be only the read half of a connection).
    pub fn new(stream: S) -> RawConn<S> {
        RawConn { stream, buf: Vec::new(), eof: false }
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

    /// Reads the response to a request (not HEAD, not CONNECT); panics naming `what` if none
    /// arrives whole within [`DEADLINE`].
    pub async fn expect_response(&mut self, what: &str) -> RawResponse {
        self.read_response(Answering::Request).await.unwrap_or_else(|e| panic!("{what}: no response ({e})"))
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

    /// Waits up to `deadline` for the peer to close the connection (EOF or an error),
    /// discarding whatever it sends first; returns how long that took.
    pub async fn closed_within(&mut self, deadline: Duration) -> Option<Duration> {
        let started = Instant::now();
        let result = tokio::time::timeout(deadline, async {
            while !self.eof {
                if self.fill().await.is_err() {
                    break;
                }
                self.buf.clear();
            }
        })
        .await;
        result.ok().map(|()| started.elapsed())
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
            let mut response = RawResponse { status, head, headers, body: Vec::new() };
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
                    let size_text = size_line.split(';').next().unwrap_or_default().trim();
                    let size = usize::from_str_radix(size_text, 16)
                        .map_err(|_| format!("bad chunk size line {size_line:?}"))?;
                    if size == 0 {
                        // Trailers up to the empty line.
                        loop {
                            let trailer = self.line().await?;
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
            } else {
                // Close-delimited.
                while self.fill().await? > 0 {}
                response.body = std::mem::take(&mut self.buf);
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

async fn try_exchange(addr: SocketAddr, bytes: &[u8]) -> Result<RawResponse, String> {
    let mut conn = RawConn::tcp(addr).await;
    conn.request(bytes).await
}

/// The request line of raw request bytes, for messages.
fn first_line(bytes: &[u8]) -> String {
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
// What the peer has read

/// `tx_queue` and `rx_queue` of the IPv4 TCP socket bound to `local` and connected to
/// `remote`, from `/proc/net/tcp`.
fn tcp_queues(local: SocketAddr, remote: SocketAddr) -> Option<(u64, u64)> {
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
pub fn absorbed(client: SocketAddr, server: SocketAddr) -> bool {
    matches!(tcp_queues(client, server), Some((0, _))) && matches!(tcp_queues(server, client), Some((_, 0)))
}
