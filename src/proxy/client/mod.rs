//! The upstream HTTP client: hyper's connection-level HTTP/1.1 and h2 senders, pooled per
//! endpoint by [`pool`].
//!
//! A request takes a pooled connection (the shared h2 one, or the most recently used idle
//! HTTP/1.1 one) or opens one ([`connect`]: checked addresses only, TLS with ALPN), sends,
//! and hands the response back with a body that returns an HTTP/1.1 connection to the pool
//! when read to its end. A request a reused connection could not even start sending (the
//! upstream closed it while it sat idle) is sent again once on another connection. Nothing
//! is spawned per request; each connection has one task.

mod body;
mod connect;
mod error;
mod pool;

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, HOST};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri};
use hyper::client::conn::TrySendError;

pub use body::UpstreamBody;
pub use connect::Connector;
pub use error::{ClientError, Stage};
use pool::{Key, Pool, Sender, Slot};

use super::upstream::Protocol;
use super::ProxyBody;

/// A pooled upstream client speaking one [`Protocol`].
pub struct Client {
    pool: Arc<Pool>,
    connector: Connector,
    protocol: Protocol,
}

impl Client {
    /// A client opening connections with `connector` and dropping them after `idle_timeout`
    /// unused.
    pub fn new(connector: Connector, protocol: Protocol, idle_timeout: Duration) -> Client {
        Client { pool: Pool::new(idle_timeout), connector, protocol }
    }

    /// Sends `req` (absolute URI) to the upstream its URI names.
    ///
    /// # Errors
    ///
    /// [`ClientError`]: no connection could be made (`is_connect`), or the exchange failed.
    pub async fn request(&self, req: Request<ProxyBody>) -> Result<Response<UpstreamBody>, ClientError> {
        let key = key_of(req.uri())?;
        let slot = self.pool.slot(&key);
        let http1_only = self.protocol == Protocol::Http1;
        // Boxed: opening a connection (TLS, handshakes) is a large future, and every
        // request's future would otherwise carry its space.
        exchange(req, &key, &slot, http1_only, || Box::pin(self.open(&key, &slot))).await
    }

    /// A new connection to `key`; h2 ones are shared, and opened one at a time per endpoint
    /// by a client that speaks only h2 (the others wait and share it).
    async fn open(&self, key: &Key, slot: &Slot) -> Result<Sender, ClientError> {
        if self.protocol != Protocol::Http2 {
            let sender = self.connector.open(key).await?;
            if let Sender::Http2(h2) = &sender {
                slot.share_h2(h2);
            }
            return Ok(sender);
        }
        let opening = slot.h2_opening();
        let _opening = opening.lock().await;
        if let Some(sender) = slot.checkout(false) {
            return Ok(sender);
        }
        let sender = self.connector.open(key).await?;
        if let Sender::Http2(h2) = &sender {
            slot.share_h2(h2);
        }
        Ok(sender)
    }
}

/// Sends `req` on a pooled connection of `slot` or on one `open` makes, and once more on
/// another when a pooled one could not start sending it.
async fn exchange<Opening>(
    mut req: Request<ProxyBody>,
    key: &Key,
    slot: &Arc<Slot>,
    http1_only: bool,
    open: impl Fn() -> Opening,
) -> Result<Response<UpstreamBody>, ClientError>
where
    Opening: std::future::Future<Output = Result<Sender, ClientError>>,
{
    loop {
        let (sender, reused) = match slot.checkout(http1_only) {
            Some(sender) => (sender, true),
            None => (open().await?, false),
        };
        let sent = match sender {
            Sender::Http1(mut sender) => {
                for_http1(&mut req, key);
                match sender.try_send_request(req).await {
                    Ok(response) => return Ok(pooled(response, Arc::clone(slot), sender)),
                    Err(e) => e,
                }
            }
            Sender::Http2(mut sender) => match sender.try_send_request(for_h2(req)).await {
                Ok(response) => return Ok(response.map(UpstreamBody::unpooled)),
                Err(e) => e,
            },
        };
        req = retry_or_fail(sent, reused, key)?;
    }
}

/// The response, with a body that returns the connection to its endpoint's slot at its end
/// (unless the connection switched protocols).
fn pooled(
    response: Response<hyper::body::Incoming>,
    slot: Arc<Slot>,
    sender: hyper::client::conn::http1::SendRequest<ProxyBody>,
) -> Response<UpstreamBody> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return response.map(UpstreamBody::unpooled);
    }
    response.map(|body| UpstreamBody::pooled(body, slot, sender))
}

/// The request back, ready to be sent again, when a reused connection failed before sending
/// any of it; the error otherwise.
fn retry_or_fail(
    mut error: TrySendError<Request<ProxyBody>>,
    reused: bool,
    key: &Key,
) -> Result<Request<ProxyBody>, ClientError> {
    match error.take_message() {
        Some(mut req) if reused => {
            tracing::debug!(error = %error.error(), "a pooled connection closed before the request was sent; sending it on another");
            restore_absolute(&mut req, key);
            Ok(req)
        }
        _ => Err(ClientError::send(error.into_error())),
    }
}

/// The pool key of an absolute `http` or `https` URI.
fn key_of(uri: &Uri) -> Result<Key, ClientError> {
    let https = match uri.scheme() {
        Some(s) if *s == Scheme::HTTPS => true,
        Some(s) if *s == Scheme::HTTP => false,
        _ => return Err(ClientError::target("the upstream URI needs an http or https scheme")),
    };
    let authority = uri.authority().ok_or_else(|| ClientError::target("the upstream URI has no host"))?.clone();
    Ok(Key { https, authority })
}

/// An HTTP/1.1 request names its target in origin form (`/path?query`) and its host in
/// `Host` (set from the URI when the request has none).
fn for_http1(req: &mut Request<ProxyBody>, key: &Key) {
    if !req.headers().contains_key(HOST) {
        let default_port = if key.https { 443 } else { 80 };
        let host = match key.authority.port_u16() {
            Some(port) if port != default_port => key.authority.as_str(),
            _ => key.authority.host(),
        };
        if let Ok(value) = HeaderValue::from_str(host) {
            req.headers_mut().insert(HOST, value);
        }
    }
    let path = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(path);
}

/// An h2 request names its host in `:authority` (from the URI) only: nginx, for one, refuses
/// a request that also has a `Host` header ("client sent duplicate host header", 400), and
/// RFC 9113 section 8.3.1 has clients use `:authority` instead.
fn for_h2(mut req: Request<ProxyBody>) -> Request<ProxyBody> {
    req.headers_mut().remove(HOST);
    req
}

/// Puts the scheme and authority back on a request [`for_http1`] turned to origin form.
fn restore_absolute(req: &mut Request<ProxyBody>, key: &Key) {
    if req.uri().authority().is_some() {
        return;
    }
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = Some(if key.https { Scheme::HTTPS } else { Scheme::HTTP });
    parts.authority = Some(key.authority.clone());
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};

    fn request(uri: &str) -> Request<ProxyBody> {
        let body = Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync();
        Request::builder().uri(uri).body(body).unwrap()
    }

    #[test]
    fn http1_requests_get_origin_form_and_a_host_without_the_default_port() {
        for (uri, host, target) in [
            ("http://Example.com/a?b=1", "Example.com", "/a?b=1"),
            ("http://example.com:80", "example.com", "/"),
            ("https://example.com:443/x", "example.com", "/x"),
            ("https://example.com:8443/x", "example.com:8443", "/x"),
            ("http://[::1]:8080/", "[::1]:8080", "/"),
        ] {
            let mut req = request(uri);
            let key = key_of(req.uri()).unwrap();
            for_http1(&mut req, &key);
            assert_eq!(req.headers()[HOST], host, "{uri}");
            assert_eq!(req.uri(), target, "{uri}");
            restore_absolute(&mut req, &key);
            assert_eq!(req.uri().authority(), Some(&key.authority), "{uri}");
            assert_eq!(req.uri().scheme(), Some(if key.https { &Scheme::HTTPS } else { &Scheme::HTTP }));
        }
        let mut req = request("http://example.com/");
        req.headers_mut().insert(HOST, HeaderValue::from_static("kept.example"));
        let key = key_of(req.uri()).unwrap();
        for_http1(&mut req, &key);
        assert_eq!(req.headers()[HOST], "kept.example");
    }

    /// An upstream over in-memory pipes. Each connection answers one request with `200` and
    /// its number, then its far end goes to the test, which closes it by dropping it.
    #[derive(Default)]
    struct Upstream {
        opened: std::sync::atomic::AtomicUsize,
        answered: std::sync::Mutex<Vec<tokio::io::DuplexStream>>,
    }

    impl Upstream {
        /// A connection to this upstream, as the connector would open it.
        async fn open(self: Arc<Self>) -> Result<Sender, ClientError> {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (near, mut far) = tokio::io::duplex(4096);
            let n = self.opened.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match far.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => head.extend_from_slice(&buf[..read]),
                    }
                }
                let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{n}", n.to_string().len());
                far.write_all(answer.as_bytes()).await.unwrap();
                self.answered.lock().unwrap().push(far);
            });
            let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(near))
                .await
                .map_err(ClientError::send)?;
            tokio::spawn(conn);
            Ok(Sender::Http1(sender))
        }
    }

    async fn send(upstream: &Arc<Upstream>, slot: &Arc<Slot>) -> Result<String, ClientError> {
        let req = request("http://example.com/x");
        let key = key_of(req.uri())?;
        let response = exchange(req, &key, slot, false, || Arc::clone(upstream).open()).await?;
        Ok(String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap())
    }

    /// The upstream closed an idle pooled connection, and the client has not seen it yet
    /// when the next request takes the connection: the request, never sent, goes on a new one.
    #[tokio::test]
    async fn a_request_a_closed_pooled_connection_could_not_send_goes_on_a_new_one() {
        let upstream = Arc::new(Upstream::default());
        let slot = Pool::new(Duration::from_secs(60)).slot(&key_of(&"http://example.com/".parse().unwrap()).unwrap());
        assert_eq!(send(&upstream, &slot).await.unwrap(), "1");
        // Closed: the connection's task is woken, but on this single-threaded runtime it
        // runs only after the next request has taken the connection from the pool.
        let far = upstream.answered.lock().unwrap().pop().unwrap();
        drop(far);
        assert_eq!(send(&upstream, &slot).await.expect("sent again on a new connection"), "2");
    }

    /// A connection is back in the pool once its response was read, and not before.
    #[tokio::test]
    async fn a_connection_is_reused_only_after_its_response_was_read() {
        let upstream = Arc::new(Upstream::default());
        let slot = Pool::new(Duration::from_secs(60)).slot(&key_of(&"http://example.com/".parse().unwrap()).unwrap());
        let key = key_of(&"http://example.com/".parse().unwrap()).unwrap();
        let open = || Arc::clone(&upstream).open();
        let unread = exchange(request("http://example.com/x"), &key, &slot, false, open).await.unwrap();
        assert!(slot.checkout(false).is_none(), "pooled while its response is unread");
        let body = unread.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "1");
        assert!(matches!(slot.checkout(false), Some(Sender::Http1(_))), "not pooled once read");
    }

    #[test]
    fn only_absolute_http_targets_have_a_key() {
        for uri in ["/relative", "ftp://example.com/", "example.com:443"] {
            let error = key_of(&uri.parse().unwrap()).expect_err(uri);
            assert_eq!(error.stage(), Stage::Target, "{uri}");
        }
    }
}
