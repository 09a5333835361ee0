//! Accept loops: one per listening socket, serving HTTP/1.1 and h2c with graceful drain.
//!
//! Every connection, on a listener or inside an intercepted tunnel, is served the same way:
//! hyper's limits set from `[proxy]` (header timeout, h2 streams and windows, header list
//! size) and a watchdog that closes it when it never sends a first request
//! (`handshake_timeout`) or sits idle with nothing in flight (`idle_timeout`). All
//! listeners together hold at most `max_connections` client connections.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::malformed::Malformed;
use super::{Entry, Proxy, ProxyBody};
use crate::config::ProxySettings;
use crate::policy::callers::Peer;

/// A listening socket the accept loop serves: TCP, or the Unix-socket proxy listener.
pub trait Accept: Send + 'static {
    type Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;

    /// The next connection, with who is at its other end.
    fn accept_peer(&self) -> impl std::future::Future<Output = std::io::Result<(Self::Stream, Peer)>> + Send;
}

impl Accept for TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept_peer(&self) -> std::io::Result<(Self::Stream, Peer)> {
        let (stream, addr) = self.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, Peer::Tcp(addr)))
    }
}

impl Accept for UnixListener {
    type Stream = tokio::net::UnixStream;

    async fn accept_peer(&self) -> std::io::Result<(Self::Stream, Peer)> {
        let (stream, _) = self.accept().await?;
        // SO_PEERCRED: the kernel's word for which process connected.
        let peer = match stream.peer_cred() {
            Ok(cred) => Peer::Unix { uid: cred.uid(), gid: cred.gid() },
            Err(_) => Peer::Unknown,
        };
        Ok((stream, peer))
    }
}

/// h2 flow-control windows: how much a client may send on one stream, and on one
/// connection, before the proxy reads it. They bound what a stalled h2 client can park in
/// the proxy's buffers.
const H2_STREAM_WINDOW: u32 = 256 << 10;
const H2_CONNECTION_WINDOW: u32 = 1 << 20;

/// A client connection's share of `max_connections`, kept by tunnels opened from it.
#[derive(Clone)]
pub struct ConnectionPermit(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

/// The listener's graceful-shutdown handle, carried into what a connection turns into: an
/// intercepted tunnel's connection is drained like the listener's own, and a blind tunnel or
/// an upgraded (WebSocket) connection holds the shutdown open (up to the grace period) until
/// it ends. Each connection has two: a CONNECT ends the connection's HTTP handling, so one
/// tunnel takes the first, and an upgrade (on the connection, or inside its intercepted
/// tunnel) the second.
#[derive(Clone)]
pub struct Drain(Arc<std::sync::Mutex<Vec<Watcher>>>);

impl Drain {
    fn new(graceful: &GracefulShutdown) -> Drain {
        Drain(Arc::new(std::sync::Mutex::new(vec![graceful.watcher(), graceful.watcher()])))
    }

    /// A watcher, for the tunnel or splice that takes it.
    pub fn take(&self) -> Option<Watcher> {
        self.0.lock().ok().and_then(|mut w| w.pop())
    }
}

/// Serves connections from `listener` until `shutdown` fires, then waits up to the
/// snapshot's grace period for in-flight requests to finish.
pub async fn serve<L: Accept>(
    listener: L,
    proxy: Proxy,
    entry: Entry,
    mut shutdown: watch::Receiver<bool>,
    connections: Arc<Semaphore>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        // Wait for a free connection slot first: beyond the cap, connections stay in the
        // kernel's accept queue rather than costing memory here.
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept_peer() => accepted,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and similar: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let settings = ConnectionSettings::of(&proxy.snapshot().config.proxy);
        let activity = Activity::new();
        let permit = ConnectionPermit(Arc::new(permit));
        let service = ProxyService {
            proxy: proxy.clone(),
            entry: entry.clone(),
            activity: Arc::clone(&activity),
            permit: Some(permit.clone()),
            drain: Some(Drain::new(&graceful)),
            peer,
        };
        let io = Malformed::new(TokioIo::new(stream), Arc::clone(&activity));
        let conn = settings.builder().serve_connection_with_upgrades(io, service).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _open = OpenConnection::new();
            let _permit = permit;
            supervise(conn, &activity, &settings).await;
        });
    }
    drop(listener);
    let grace = proxy.snapshot().config.proxy.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(?grace, "grace period over; closing remaining connections");
    }
}

/// Serves one already-established connection (an intercepted tunnel) to its end, with the
/// same limits and timeouts as a listener's connections.
pub async fn serve_connection<I>(
    io: I,
    proxy: Proxy,
    entry: Entry,
    permit: Option<ConnectionPermit>,
    drain: Option<Drain>,
    peer: Peer,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let settings = ConnectionSettings::of(&proxy.snapshot().config.proxy);
    let activity = Activity::new();
    let watcher = drain.as_ref().and_then(Drain::take);
    // What is left of the drain goes to an upgrade inside the tunnel.
    let service = ProxyService { proxy, entry, activity: Arc::clone(&activity), permit, drain, peer };
    let builder = settings.builder();
    let conn = builder.serve_connection_with_upgrades(Malformed::new(io, Arc::clone(&activity)), service);
    match watcher {
        Some(watcher) => supervise(watcher.watch(conn), &activity, &settings).await,
        None => supervise(conn, &activity, &settings).await,
    }
}

/// The per-connection settings, read once when the connection starts.
struct ConnectionSettings {
    handshake_timeout: Duration,
    header_timeout: Duration,
    idle_timeout: Duration,
    max_streams: u32,
    max_header_list: u32,
}

impl ConnectionSettings {
    fn of(p: &ProxySettings) -> ConnectionSettings {
        ConnectionSettings {
            handshake_timeout: p.handshake_timeout,
            header_timeout: p.header_timeout,
            idle_timeout: p.idle_timeout,
            max_streams: p.max_streams_per_connection,
            // The incoming head, before substitution; what substitution adds is checked
            // against max_header_bytes and max_uri_bytes on the request path.
            max_header_list: u32::try_from(p.max_header_bytes.saturating_add(p.max_uri_bytes)).unwrap_or(u32::MAX),
        }
    }

    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(self.header_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.max_streams)
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .max_header_list_size(self.max_header_list);
        builder
    }
}

/// Runs a connection until it ends, or until it has sent no request within the handshake
/// timeout, or has been idle (no request in flight) for the idle timeout; then drops it.
///
/// The watchdog is one timer per connection that nothing resets per request: when it fires,
/// it reads the connection's [`Activity`] and either closes the connection or sleeps again,
/// never past the earliest moment the connection could be due. That is the deadline its
/// activity implies if it stays as it is, but a request may start and end while the timer
/// sleeps, which makes the connection due an idle timeout after that at the earliest: so
/// the timer also never sleeps longer than one idle timeout. A request costs the watchdog
/// nothing.
async fn supervise<F: std::future::Future>(conn: F, activity: &Activity, settings: &ConnectionSettings) {
    tokio::pin!(conn);
    let first = settings.handshake_timeout.min(settings.idle_timeout);
    let expire = tokio::time::sleep_until(activity.started + first);
    tokio::pin!(expire);
    loop {
        tokio::select! {
            biased;
            _ = &mut conn => return,
            _ = &mut expire => {
                let now = Instant::now();
                let next = now + settings.idle_timeout;
                match activity.deadline(settings) {
                    Some(at) if at <= now => {
                        tracing::debug!(requests = activity.requests(), "closing a connection: no request within the handshake or idle timeout");
                        return;
                    }
                    Some(at) => expire.as_mut().reset(at.min(next)),
                    // Busy: nothing can time out before the last request ends.
                    None => expire.as_mut().reset(next),
                }
            }
        }
    }
}

/// What a connection is doing, for its watchdog: requests seen, requests in flight (until
/// their response body is done), and since when it has been idle; and, for
/// [`super::malformed`], whether it is between messages.
pub(super) struct Activity {
    started: Instant,
    requests: AtomicU64,
    in_flight: AtomicUsize,
    /// Nanoseconds after `started` when the last in-flight request finished.
    idle_since: AtomicU64,
    /// Every response that finished has been flushed to the client since.
    flushed: AtomicBool,
    /// The connection was handed to a tunnel or protocol upgrade: its bytes are not HTTP/1.1
    /// messages of ours any more.
    upgraded: AtomicBool,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: Instant::now(),
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            flushed: AtomicBool::new(true),
            upgraded: AtomicBool::new(false),
        })
    }

    /// The connection's IO completed a flush: nothing of a finished response waits any more.
    pub(super) fn flushed(&self) {
        self.flushed.store(true, Ordering::Release);
    }

    /// No response of ours is being written or waits in a buffer, and the connection still
    /// speaks HTTP/1.1 with us.
    pub(super) fn between_messages(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && self.flushed.load(Ordering::Acquire)
            && !self.upgraded.load(Ordering::Acquire)
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// When the connection should be closed if nothing changes by then; `None` while a
    /// request is in flight.
    fn deadline(&self, settings: &ConnectionSettings) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if self.requests() == 0 {
            return Some(self.started + settings.handshake_timeout);
        }
        Some(self.started + Duration::from_nanos(self.idle_since.load(Ordering::Acquire)) + settings.idle_timeout)
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        // In flight first: the watchdog must never see a counted request as idle.
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }
}

/// One request in flight; finishes when its response body has been sent (or dropped).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let since = u64::try_from(activity.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // The response's last bytes may still sit in hyper's buffer until the next flush.
        activity.flushed.store(false, Ordering::Release);
        activity.idle_since.store(since, Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in flight until it is done.
    pub struct Tracked {
        #[pin]
        inner: ProxyBody,
        _in_flight: Option<InFlight>,
    }
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = super::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The hyper service for one connection: a CONNECT goes to [`Proxy::connect`], `OPTIONS *`
/// to [`Proxy::answer_locally`], every other request to [`Proxy::forward`].
#[derive(Clone)]
struct ProxyService {
    proxy: Proxy,
    entry: Entry,
    activity: Arc<Activity>,
    permit: Option<ConnectionPermit>,
    drain: Option<Drain>,
    /// Who is at the other end, for caller identification.
    peer: Peer,
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for ProxyService {
    type Response = http::Response<Tracked>;
    type Error = Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let connect = req.method() == http::Method::CONNECT;
        if connect || req.headers().contains_key(http::header::UPGRADE) {
            // A tunnel or upgrade opened by this request outlives the connection's HTTP
            // handling: it keeps the connection's slot and is drained on shutdown.
            if let Some(permit) = &self.permit {
                req.extensions_mut().insert(permit.clone());
            }
            if let Some(drain) = &self.drain {
                req.extensions_mut().insert(drain.clone());
            }
        }
        let finish = Finish { activity: Arc::clone(&self.activity), in_flight: Some(self.activity.begin()), connect };
        // One box per request, holding only the future of the kind of request this is.
        if connect {
            let (proxy, entry, peer) = (self.proxy.clone(), self.entry.clone(), self.peer.clone());
            return Box::pin(Responding { inner: async move { proxy.connect(req, &entry, &peer).await }, finish });
        }
        if let Some(answer) = self.proxy.answer_locally(&req, &self.entry) {
            return Box::pin(Responding { inner: std::future::ready(answer), finish });
        }
        let inner = self.proxy.forward(req, self.entry.clone(), self.peer.clone());
        Box::pin(Responding { inner, finish })
    }
}

/// What happens when a request's response is ready: the connection learns whether it was
/// handed to a tunnel or upgrade, and the request stays in flight until its body is sent.
struct Finish {
    activity: Arc<Activity>,
    in_flight: Option<InFlight>,
    connect: bool,
}

pin_project_lite::pin_project! {
    /// A request's future as hyper polls it: the request path's own future, finished by
    /// [`Finish`] (a hand-written future rather than an `async` block, which would store the
    /// request path's future twice: as what it captured and as what it awaits).
    struct Responding<F> {
        #[pin]
        inner: F,
        finish: Finish,
    }
}

impl<F: std::future::Future<Output = http::Response<ProxyBody>>> std::future::Future for Responding<F> {
    type Output = Result<http::Response<Tracked>, Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx));
        let finish = this.finish;
        let status = response.status();
        if status == http::StatusCode::SWITCHING_PROTOCOLS || (finish.connect && status.is_success()) {
            finish.activity.upgraded.store(true, Ordering::Release);
        }
        // Taken once: hyper never polls a finished future again.
        let in_flight = finish.in_flight.take();
        std::task::Poll::Ready(Ok(response.map(|inner| Tracked { inner, _in_flight: in_flight })))
    }
}

/// Keeps the open-connections gauge right however a connection ends.
struct OpenConnection;

impl OpenConnection {
    fn new() -> Self {
        metrics::gauge!("proxy_open_connections").increment(1.0);
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!("proxy_open_connections").decrement(1.0);
    }
}
