//! The accept loop the scripted upstreams share: bind 127.0.0.1:0, then serve every
//! connection (after a TLS handshake when given an acceptor) with hyper-util's auto builder,
//! HTTP/1.1 with upgrades and h2, until the returned task is aborted.

use std::net::SocketAddr;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves `service` (cloned for each connection) on a fresh loopback port, over TLS when
/// `tls` is set; `what` names the server in panics. Returns the address and the accept task.
pub async fn spawn<S, B>(what: &str, tls: Option<tokio_rustls::TlsAcceptor>, service: S) -> (SocketAddr, AbortHandle)
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind {what}: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{what} address: {e}"));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (tls, service) = (tls.clone(), service.clone());
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match tls {
                    Some(acceptor) => {
                        let Ok(tls) = acceptor.accept(stream).await else { return };
                        let _ = builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await;
                    }
                    None => {
                        let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await;
                    }
                }
            });
        }
    })
    .abort_handle();
    (addr, task)
}
