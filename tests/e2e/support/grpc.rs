//! A gRPC upstream: hyper h2 (TLS with ALPN h2 from a [`TestCa`], or h2c with prior
//! knowledge) speaking gRPC framing, so real gRPC clients (grpcio) can call it through the
//! sidecar with no protobuf compiler: messages are raw bytes.
//!
//! Methods (all echo raw bytes; every answer starts with `x-initial: yes` metadata and ends
//! with trailers `grpc-status: 0`, `x-trailer: done`):
//! - `/test.Echo/Unary` and `/test.Echo/Bidi`: each request message is answered as it
//!   arrives with `echo:` + the message (a bidi ping-pong works only if nothing holds the
//!   request stream back);
//! - `/test.Echo/ServerStream`: answers `one`, waits until `/test.Echo/Release` is called,
//!   answers `two`;
//! - `/test.Echo/Hang`: sends headers and then nothing; it notes when the call is reset
//!   (its response dropped), which is how a client's cancellation or deadline arrives.
//!
//! Every call is recorded with its request headers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, Version};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::sync::{mpsc, Notify};

use super::ca::TestCa;

/// One call as the upstream saw it.
#[derive(Clone, Debug)]
pub struct GrpcCall {
    pub path: String,
    pub version: Version,
    pub headers: HeaderMap,
    /// Request messages received so far.
    pub messages: Vec<Bytes>,
    /// The call was reset before the upstream finished answering.
    pub cancelled: bool,
}

impl GrpcCall {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct State {
    calls: Mutex<Vec<GrpcCall>>,
    release: Notify,
}

/// A gRPC upstream on 127.0.0.1; stops when dropped.
pub struct GrpcUpstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::AbortHandle,
}

impl GrpcUpstream {
    /// gRPC over TLS (certificate for `localhost` from `ca`).
    pub async fn tls(ca: &TestCa) -> GrpcUpstream {
        GrpcUpstream::start(Some(tokio_rustls::TlsAcceptor::from(ca.server_config(&["localhost", "127.0.0.1"])))).await
    }

    /// gRPC over h2c (prior knowledge).
    pub async fn plain() -> GrpcUpstream {
        GrpcUpstream::start(None).await
    }

    async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> GrpcUpstream {
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        let service = service_fn(move |req| {
            let state = Arc::clone(&shared);
            async move { Ok::<_, Infallible>(answer(state, req)) }
        });
        let (addr, task) = super::serve::spawn("gRPC upstream", tls, service).await;
        GrpcUpstream { addr, state, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<GrpcCall> {
        self.state.calls.lock().unwrap().clone()
    }

    /// The calls of `method` (`Unary`, `Bidi`...).
    pub fn calls_to(&self, method: &str) -> Vec<GrpcCall> {
        let path = format!("/test.Echo/{method}");
        self.calls().into_iter().filter(|c| c.path == path).collect()
    }
}

impl Drop for GrpcUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A gRPC length-prefixed message.
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&u32::try_from(message.len()).expect("small message").to_be_bytes());
    out.extend_from_slice(message);
    out.freeze()
}

fn answer(state: Arc<State>, req: Request<Incoming>) -> Response<ChannelBody> {
    let (parts, body) = req.into_parts();
    let index = {
        let mut calls = state.calls.lock().unwrap();
        calls.push(GrpcCall {
            path: parts.uri.path().to_string(),
            version: parts.version,
            headers: parts.headers,
            messages: Vec::new(),
            cancelled: false,
        });
        calls.len() - 1
    };
    let (tx, rx) = mpsc::channel(16);
    let method = parts.uri.path().trim_start_matches("/test.Echo/").to_string();
    tokio::spawn(async move {
        let sent = run_method(&state, index, &method, body, &tx).await;
        if sent.is_none() {
            state.calls.lock().unwrap()[index].cancelled = true;
        }
    });
    let mut response = Response::new(ChannelBody { rx });
    response.headers_mut().insert("content-type", HeaderValue::from_static("application/grpc"));
    response.headers_mut().insert("x-initial", HeaderValue::from_static("yes"));
    response
}

/// Runs one method; `None` when the client went away before the answer was complete.
async fn run_method(
    state: &State,
    index: usize,
    method: &str,
    mut body: Incoming,
    tx: &mpsc::Sender<Frame<Bytes>>,
) -> Option<()> {
    let mut pending = BytesMut::new();
    let mut received = Vec::new();
    let echo_each = matches!(method, "Unary" | "Bidi");
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map(Frame::into_data) else { return None };
        let Ok(data) = data else { continue };
        pending.extend_from_slice(&data);
        while pending.len() >= 5 {
            let len = u32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]]) as usize;
            if pending.len() < 5 + len {
                break;
            }
            pending.advance(5);
            let message = pending.split_to(len).freeze();
            state.calls.lock().unwrap()[index].messages.push(message.clone());
            if echo_each {
                let mut echoed = b"echo:".to_vec();
                echoed.extend_from_slice(&message);
                tx.send(Frame::data(grpc_frame(&echoed))).await.ok()?;
            }
            received.push(message);
        }
    }
    match method {
        "ServerStream" => {
            tx.send(Frame::data(grpc_frame(b"one"))).await.ok()?;
            tokio::select! {
                _ = state.release.notified() => {}
                _ = tx.closed() => return None,
            }
            tx.send(Frame::data(grpc_frame(b"two"))).await.ok()?;
        }
        "Release" => {
            state.release.notify_one();
            tx.send(Frame::data(grpc_frame(b""))).await.ok()?;
        }
        "Hang" => {
            tx.closed().await;
            return None;
        }
        _ => {}
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers.insert("x-trailer", HeaderValue::from_static("done"));
    tx.send(Frame::trailers(trailers)).await.ok()
}

/// A response body fed frame by frame from a channel.
pub struct ChannelBody {
    rx: mpsc::Receiver<Frame<Bytes>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|frame| frame.map(Ok))
    }
}
