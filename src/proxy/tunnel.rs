//! CONNECT: blind TCP tunnels to unrouted hosts; routed hosts are intercepted (see `tls`).

use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{Proxy, ProxyBody};
use crate::config::Unmatched;
use crate::error::ProxyError;
use crate::routes::Scheme;

/// Answers a CONNECT request: intercept, tunnel blind, or refuse.
pub async fn connect(proxy: &Proxy, req: Request<Incoming>) -> Response<ProxyBody> {
    let snapshot = proxy.snapshot();
    let target = req.uri().authority().and_then(|a| Some((a.clone(), a.port_u16()?)));
    let Some((authority, port)) = target else {
        return ProxyError::BadRequest("CONNECT needs a host:port target".into()).into_response();
    };
    let host = authority.host().to_ascii_lowercase();
    if snapshot.routes.has_host(Scheme::Https, &host, port) {
        return crate::tls::intercept(proxy, &snapshot, req, authority, host, port).await;
    }
    if snapshot.config.proxy.unmatched == Unmatched::Deny {
        metrics::counter!("proxy_requests_total", "route" => "none", "status" => "403").increment(1);
        return ProxyError::UnmatchedDenied(authority.to_string()).into_response();
    }
    let connect_timeout = snapshot.config.proxy.connect_timeout;
    drop(snapshot);
    let upstream = match dial(authority.as_str(), connect_timeout).await {
        Ok(stream) => stream,
        Err(error) => return error.into_response(),
    };
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let mut upstream = upstream;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
            Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
        }
    });
    metrics::counter!("proxy_requests_total", "route" => "tunnel", "status" => "200").increment(1);
    ok_empty()
}

/// A `200` with an empty body: the tunnel is open.
pub fn ok_empty() -> Response<ProxyBody> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = StatusCode::OK;
    response
}

async fn dial(addr: &str, timeout: Duration) -> Result<TcpStream, ProxyError> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(_)) => Err(ProxyError::UpstreamUnreachable(addr.to_string())),
        Err(_) => Err(ProxyError::UpstreamTimeout(addr.to_string())),
    }
}
