//! A Server-Sent Events upstream (plain, or TLS from a [`TestCa`]) that sends one event,
//! then waits for the test's [`SseUpstream::release`] before the next: a client can only
//! see the first event before the release if nothing between them held it back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::sync::{mpsc, Notify};

use super::ca::TestCa;

/// The first event; the second is [`SECOND_EVENT`].
pub const FIRST_EVENT: &str = "event: tick\ndata: one\n\n";
pub const SECOND_EVENT: &str = "event: tick\ndata: two\n\n";

/// An SSE upstream on 127.0.0.1; stops when dropped.
pub struct SseUpstream {
    pub addr: SocketAddr,
    release: Arc<Notify>,
    task: tokio::task::AbortHandle,
}

impl SseUpstream {
    pub async fn plain() -> SseUpstream {
        SseUpstream::start(None).await
    }

    pub async fn tls(ca: &TestCa) -> SseUpstream {
        SseUpstream::start(Some(tokio_rustls::TlsAcceptor::from(ca.server_config(&["localhost", "127.0.0.1"])))).await
    }

    async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> SseUpstream {
        let release = Arc::new(Notify::new());
        let shared = Arc::clone(&release);
        let service = service_fn(move |req| {
            let release = Arc::clone(&shared);
            async move { Ok::<_, Infallible>(events(release, req)) }
        });
        let (addr, task) = super::serve::spawn("SSE upstream", tls, service).await;
        SseUpstream { addr, release, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Lets the waiting stream send its second event.
    pub fn release(&self) {
        self.release.notify_one();
    }
}

impl Drop for SseUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn events(release: Arc<Notify>, _req: Request<Incoming>) -> Response<Events> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        if tx.send(Bytes::from_static(FIRST_EVENT.as_bytes())).await.is_err() {
            return;
        }
        release.notified().await;
        let _ = tx.send(Bytes::from_static(SECOND_EVENT.as_bytes())).await;
    });
    let mut response = Response::new(Events { rx });
    response.headers_mut().insert("content-type", HeaderValue::from_static("text/event-stream"));
    response.headers_mut().insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

/// The event stream's body: each event one frame, as it is produced.
pub struct Events {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|event| event.map(|e| Ok(Frame::data(e))))
    }
}
