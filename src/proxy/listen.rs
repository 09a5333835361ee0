//! Accept loops: one per listening socket, serving HTTP/1.1 and h2c with graceful drain.

use std::convert::Infallible;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{Entry, Proxy};

/// Serves connections from `listener` until `shutdown` fires, then waits up to `grace` for
/// in-flight requests to finish.
pub async fn serve(
    listener: TcpListener,
    proxy: Proxy,
    entry: Entry,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let (stream, _peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and similar: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service(proxy.clone(), entry.clone()));
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            let _open = OpenConnection::new();
            let _ = conn.await;
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(?grace, "grace period over; closing remaining connections");
    }
}

/// The hyper service for one connection: every request goes to [`Proxy::handle`].
#[derive(Clone)]
struct ProxyService {
    proxy: Proxy,
    entry: Entry,
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for ProxyService {
    type Response = http::Response<super::ProxyBody>;
    type Error = Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let proxy = self.proxy.clone();
        let entry = self.entry.clone();
        Box::pin(async move { Ok(proxy.handle(req, &entry).await) })
    }
}

fn service(proxy: Proxy, entry: Entry) -> ProxyService {
    ProxyService { proxy, entry }
}

/// Serves one already-established connection (an intercepted tunnel) to its end.
pub async fn serve_connection<I>(io: I, proxy: Proxy, entry: Entry)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let _open = OpenConnection::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder.serve_connection(io, service(proxy, entry)).await {
        tracing::debug!(error = %e, "connection ended with an error");
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
