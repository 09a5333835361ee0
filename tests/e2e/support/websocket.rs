//! WebSocket both ways: an upstream ([`WsUpstream`], plain or TLS) that accepts the upgrade,
//! records the upgrade request and answers every text or binary message with `echo:` + the
//! message; and a minimal raw client ([`WsClient`]) for requests libraries would not send
//! (an absolute-form upgrade through HTTP_PROXY). RFC 6455 framing: the client masks, the
//! server does not; pings get pongs; a close is answered and ends the connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::ca::TestCa;
use super::raw::DEADLINE;

const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// The `Sec-WebSocket-Accept` answer to a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{ACCEPT_GUID}").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// One upgrade request as the upstream received it.
#[derive(Clone, Debug)]
pub struct WsRequest {
    pub uri: String,
    pub headers: HeaderMap,
}

impl WsRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<WsRequest>>,
    /// Messages received after upgrades, in order.
    messages: Mutex<Vec<Bytes>>,
}

/// A WebSocket echo upstream on 127.0.0.1; stops when dropped.
pub struct WsUpstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::AbortHandle,
}

impl WsUpstream {
    pub async fn plain() -> WsUpstream {
        WsUpstream::start(None).await
    }

    /// Over TLS, with a certificate for `localhost` from `ca` (HTTP/1.1 only over ALPN, as
    /// WebSocket servers offer).
    pub async fn tls(ca: &TestCa) -> WsUpstream {
        let mut config = (*ca.server_config(&["localhost", "127.0.0.1"])).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        WsUpstream::start(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> WsUpstream {
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        let service = service_fn(move |req| {
            let state = Arc::clone(&shared);
            async move { Ok::<_, Infallible>(upgrade(state, req)) }
        });
        let (addr, task) = super::serve::spawn("WebSocket upstream", tls, service).await;
        WsUpstream { addr, state, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every upgrade request received.
    pub fn requests(&self) -> Vec<WsRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Every message received over upgraded connections.
    pub fn messages(&self) -> Vec<Bytes> {
        self.state.messages.lock().unwrap().clone()
    }
}

impl Drop for WsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn upgrade(state: Arc<State>, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    state.requests.lock().unwrap().push(WsRequest { uri: req.uri().to_string(), headers: req.headers().clone() });
    let is_websocket = req.headers().get("upgrade").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let key = req.headers().get("sec-websocket-key").and_then(|v| v.to_str().ok()).map(str::to_string);
    let (true, Some(key)) = (is_websocket, key) else {
        let mut response = Response::new(Full::new(Bytes::from_static(b"websocket upgrade required")));
        *response.status_mut() = StatusCode::UPGRADE_REQUIRED;
        return response;
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            echo(state, TokioIo::new(upgraded)).await;
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert("upgrade", "websocket".parse().expect("value"));
    headers.insert("connection", "Upgrade".parse().expect("value"));
    headers.insert("sec-websocket-accept", accept_key(&key).parse().expect("value"));
    response
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(state: Arc<State>, mut stream: S) {
    while let Ok((opcode, payload)) = read_frame(&mut stream).await {
        let answer = match opcode {
            TEXT | BINARY => {
                state.messages.lock().unwrap().push(payload.clone());
                let mut echoed = b"echo:".to_vec();
                echoed.extend_from_slice(&payload);
                (opcode, echoed)
            }
            PING => (PONG, payload.to_vec()),
            CLOSE => {
                let _ = write_frame(&mut stream, CLOSE, &payload, None).await;
                return;
            }
            _ => continue,
        };
        if write_frame(&mut stream, answer.0, &answer.1, None).await.is_err() {
            return;
        }
    }
}

/// Reads one frame (unmasking it if masked): its opcode and payload.
pub async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<(u8, Bytes)> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await?;
    let opcode = head[0] & 0x0f;
    let masked = head[1] & 0x80 != 0;
    let len = match head[1] & 0x7f {
        126 => u64::from(stream.read_u16().await?),
        127 => stream.read_u64().await?,
        n => u64::from(n),
    };
    let mut mask = [0u8; 4];
    if masked {
        stream.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; usize::try_from(len).map_err(std::io::Error::other)?];
    stream.read_exact(&mut payload).await?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok((opcode, Bytes::from(payload)))
}

/// Writes one final frame, masked with `mask` (clients) or not (servers).
pub async fn write_frame<S: AsyncWrite + Unpin>(
    stream: &mut S,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> std::io::Result<()> {
    let mut out = vec![0x80 | opcode];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    stream.write_all(&out).await?;
    stream.flush().await
}

/// A raw WebSocket client on any stream: writes an upgrade request as given, reads the
/// response head, then sends masked text and reads frames.
pub struct WsClient<S> {
    stream: S,
}

/// The upgrade request for `target` (absolute or origin form) with `Host: host` and extra
/// header lines.
pub fn upgrade_request(target: &str, host: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut text = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in extra {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.into_bytes()
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsClient<S> {
    /// Sends `request` and reads the response head (status line and headers) within
    /// [`DEADLINE`]; the client is returned only for a 101.
    pub async fn open(mut stream: S, request: &[u8]) -> Result<WsClient<S>, String> {
        stream.write_all(request).await.map_err(|e| format!("write: {e}"))?;
        let head = tokio::time::timeout(DEADLINE, async {
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                if stream.read(&mut byte).await.map_err(|e| format!("read: {e}"))? == 0 {
                    return Err(format!("closed after {:?}", String::from_utf8_lossy(&head)));
                }
                head.push(byte[0]);
            }
            Ok(String::from_utf8_lossy(&head).into_owned())
        })
        .await
        .map_err(|_| "no response head in time".to_string())??;
        if !head.starts_with("HTTP/1.1 101") {
            return Err(head);
        }
        let accept = head.lines().find_map(|l| {
            l.strip_prefix("sec-websocket-accept: ").or_else(|| l.strip_prefix("Sec-WebSocket-Accept: "))
        });
        if accept != Some(&accept_key("dGhlIHNhbXBsZSBub25jZQ==")) {
            return Err(format!("bad Sec-WebSocket-Accept in {head}"));
        }
        Ok(WsClient { stream })
    }

    /// Sends a masked text message.
    pub async fn send_text(&mut self, text: &str) -> std::io::Result<()> {
        write_frame(&mut self.stream, TEXT, text.as_bytes(), Some([0x12, 0x34, 0x56, 0x78])).await
    }

    /// Reads the next message's text within [`DEADLINE`].
    pub async fn recv_text(&mut self) -> Result<String, String> {
        match tokio::time::timeout(DEADLINE, read_frame(&mut self.stream)).await {
            Ok(Ok((_, payload))) => Ok(String::from_utf8_lossy(&payload).into_owned()),
            Ok(Err(e)) => Err(format!("read frame: {e}")),
            Err(_) => Err("no frame in time".into()),
        }
    }

    /// Waits up to `deadline` for the peer to close the connection.
    pub async fn closed_within(&mut self, deadline: Duration) -> bool {
        tokio::time::timeout(deadline, async {
            let mut buf = [0u8; 1024];
            loop {
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }
}
