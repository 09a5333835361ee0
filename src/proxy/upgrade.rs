//! HTTP/1.1 `Upgrade` (WebSocket and the like): the upgrade request is routed, bound and
//! substituted like any request; when the upstream answers `101 Switching Protocols`, the
//! client gets the 101 and the two connections are spliced byte for byte.
//!
//! Only the upgrade request is examined: what flows after the switch is the new protocol's
//! (WebSocket frames), forwarded untouched. The splice ends when either side closes, when
//! no byte moved either way for `[proxy] idle_timeout`, or when shutdown's grace period is
//! over (like a blind tunnel, it holds the shutdown open until then). It keeps the client
//! connection's share of `max_connections`.
//!
//! `Upgrade: h2c` is not carried: it would turn the upstream connection into h2 that no
//! request of the client's goes through. h2 has no `Upgrade`; WebSocket over h2 (RFC 8441
//! extended CONNECT) is not offered, so h2 clients use HTTP/1.1 for WebSockets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::headers::strip_hop_by_hop;
use super::listen::{ConnectionPermit, Drain};
use super::ProxyBody;
use crate::error::ProxyError;

/// A client's request to switch protocols, taken from the request before it is forwarded.
pub struct Upgrade {
    /// The `Upgrade` header as the client sent it.
    protocols: HeaderValue,
    client: OnUpgrade,
    permit: Option<ConnectionPermit>,
    drain: Option<Drain>,
}

impl Upgrade {
    /// The upgrade `parts` asks for, if it is one the proxy carries: HTTP/1.1, `Connection`
    /// naming `upgrade`, an `Upgrade` header that does not ask for h2c.
    pub fn take(parts: &mut http::request::Parts) -> Option<Upgrade> {
        // The connection's slot and drain handle come with any request naming `Upgrade`;
        // only a carried upgrade keeps them, never the request sent upstream.
        let permit = parts.extensions.remove::<ConnectionPermit>();
        let drain = parts.extensions.remove::<Drain>();
        if parts.version != Version::HTTP_11 || !connection_names_upgrade(&parts.headers) {
            return None;
        }
        let protocols = single_upgrade_header(&parts.headers)?;
        let asks_h2c =
            protocols.to_str().map_or(true, |v| v.split(',').any(|p| p.trim().to_ascii_lowercase().starts_with("h2c")));
        if asks_h2c {
            return None;
        }
        let client = parts.extensions.remove::<OnUpgrade>()?;
        Some(Upgrade { protocols, client, permit, drain })
    }

    /// Puts the upgrade back on a request whose hop-by-hop headers were stripped.
    pub fn restore(&self, headers: &mut HeaderMap) {
        headers.insert(header::UPGRADE, self.protocols.clone());
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }

    /// The label for `proxy_upgrades_total`: `websocket`, or `other` (a client must not be
    /// able to create label values).
    fn protocol_label(&self) -> &'static str {
        let first = self.protocols.to_str().ok().and_then(|v| v.split(['/', ',']).next()).unwrap_or_default();
        if first.trim().eq_ignore_ascii_case("websocket") {
            "websocket"
        } else {
            "other"
        }
    }
}

/// Finishes a response to a request that may have asked for an upgrade. On a 101 to an
/// upgrade, the splice starts (once both sides switched) and the 101 goes to the client;
/// any other answer goes to the client as it is, and the client's connection stays HTTP. A
/// 101 to a request that asked for no upgrade is the upstream's error.
pub fn finish(
    upgrade: Option<Upgrade>,
    mut response: Response<ProxyBody>,
    route: &str,
    idle_timeout: Duration,
    authority: &str,
) -> Result<Response<ProxyBody>, ProxyError> {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(response);
    }
    let Some(upgrade) = upgrade else {
        return Err(ProxyError::UpstreamFailed(authority.to_string()));
    };
    let Some(upstream) = response.extensions_mut().remove::<OnUpgrade>() else {
        return Err(ProxyError::UpstreamFailed(authority.to_string()));
    };
    metrics::counter!("proxy_upgrades_total", "route" => route.to_string(), "protocol" => upgrade.protocol_label())
        .increment(1);
    let Upgrade { client, permit, drain, .. } = upgrade;
    tokio::spawn(async move {
        let _permit = permit;
        // Shutdown waits for the splice (up to the grace period), as for a blind tunnel.
        let _drain = drain.as_ref().and_then(Drain::take);
        match tokio::join!(client, upstream) {
            (Ok(client), Ok(upstream)) => splice(TokioIo::new(client), TokioIo::new(upstream), idle_timeout).await,
            (Err(e), _) | (_, Err(e)) => tracing::debug!(error = %e, "upgrade did not complete"),
        }
    });
    Ok(response)
}

/// The hop-by-hop headers of an upstream response removed; a 101 keeps the `Upgrade` it
/// switched to, with `Connection: upgrade`.
pub fn strip_response_headers(status: StatusCode, headers: &mut HeaderMap) {
    let switched = (status == StatusCode::SWITCHING_PROTOCOLS).then(|| headers.get(header::UPGRADE).cloned()).flatten();
    strip_hop_by_hop(headers);
    if let Some(protocol) = switched {
        headers.insert(header::UPGRADE, protocol);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

fn connection_names_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// The one `Upgrade` header; two are ambiguous and not carried.
fn single_upgrade_header(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut all = headers.get_all(header::UPGRADE).iter();
    let first = all.next()?;
    all.next().is_none().then(|| first.clone())
}

/// Copies bytes both ways until either side closes or nothing moved for `idle`.
async fn splice<A, B>(client: A, upstream: B, idle: Duration)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Moving { inner: client, started, last: Arc::clone(&last) };
    let mut upstream = Moving { inner: upstream, started, last: Arc::clone(&last) };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    loop {
        let deadline = started + Duration::from_nanos(last.load(Ordering::Relaxed)) + idle;
        tokio::select! {
            _ = &mut copy => return,
            _ = tokio::time::sleep_until(deadline) => {
                let now = started + Duration::from_nanos(last.load(Ordering::Relaxed)) + idle;
                if now <= Instant::now() {
                    tracing::debug!(?idle, "closing an upgraded connection: idle");
                    return;
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A stream that notes when bytes were last read from it.
    struct Moving<I> {
        #[pin]
        inner: I,
        started: Instant,
        last: Arc<AtomicU64>,
    }
}

impl<I: AsyncRead> AsyncRead for Moving<I> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            let since = u64::try_from(this.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            this.last.store(since, Ordering::Relaxed);
        }
        polled
    }
}

impl<I: AsyncWrite> AsyncWrite for Moving<I> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = http::Request::get("http://example.test/ws");
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn only_upgrades_with_connection_upgrade_and_no_h2c_are_taken() {
        // Without hyper's OnUpgrade nothing is taken; these check the header rules first.
        assert!(Upgrade::take(&mut parts(&[("upgrade", "websocket")])).is_none());
        assert!(Upgrade::take(&mut parts(&[("connection", "upgrade"), ("upgrade", "h2c")])).is_none());
        assert!(Upgrade::take(&mut parts(&[("connection", "keep-alive, Upgrade")])).is_none());
        assert!(connection_names_upgrade(&parts(&[("connection", "keep-alive, Upgrade")]).headers));
    }

    #[test]
    fn a_101_keeps_its_upgrade_other_answers_do_not() {
        let mut h = HeaderMap::new();
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("connection", "Upgrade".parse().unwrap());
        strip_response_headers(StatusCode::SWITCHING_PROTOCOLS, &mut h);
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert_eq!(h.get("connection").unwrap(), "upgrade");
        strip_response_headers(StatusCode::OK, &mut h);
        assert!(h.is_empty());
    }
}
