//! Connecting only to checked addresses.
//!
//! A host is resolved once, each address it resolved to is checked against the
//! [`NetworkRules`], and the connection is made to one of the checked addresses: there is
//! no second lookup a DNS server could answer differently (DNS rebinding). The pooled
//! upstream client gets this through [`CheckedConnector`] (hyper-util's `HttpConnector`
//! with [`CheckedResolver`], plus a check of IP-literal hosts, which `HttpConnector` never
//! resolves), and blind CONNECT tunnels through [`dial`].

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::networks::{Denied, NetworkRules};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// Every address `host` resolved to is denied: nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressDenied {
    /// The host as the request named it.
    pub host: String,
    /// Why each address was refused (the first few).
    pub denied: Vec<Denied>,
}

/// How many refused addresses a message lists.
const LISTED: usize = 3;

impl std::fmt::Display for AddressDenied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reasons: Vec<String> = self.denied.iter().take(LISTED).map(ToString::to_string).collect();
        write!(
            f,
            "connection to {} denied by [policy] deny_networks: {}; to reach it, list the address or a CIDR in allow_networks ([policy], or the route's)",
            self.host,
            reasons.join("; ")
        )
    }
}

impl std::error::Error for AddressDenied {}

/// Resolves `host` (a name or an IP literal, IPv6 with or without brackets) and keeps the
/// addresses `rules` allow, in resolver order.
///
/// # Errors
///
/// [`AddressDenied`] when every address is denied; the resolver's error when the name does
/// not resolve.
pub async fn resolve_checked(host: &str, port: u16, rules: &NetworkRules) -> Result<Vec<SocketAddr>, BoxError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let resolved: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port)).await?.collect(),
    };
    let mut allowed = Vec::with_capacity(resolved.len());
    let mut denied = Vec::new();
    for addr in resolved {
        match rules.check(addr.ip()) {
            Ok(()) => allowed.push(addr),
            Err(d) => denied.push(d),
        }
    }
    if allowed.is_empty() && !denied.is_empty() {
        return Err(Box::new(AddressDenied { host: host.to_string(), denied }));
    }
    Ok(allowed)
}

/// A resolver for hyper-util's `HttpConnector` that returns only allowed addresses.
#[derive(Clone)]
pub struct CheckedResolver {
    rules: Arc<NetworkRules>,
}

impl tower_service::Service<Name> for CheckedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let rules = Arc::clone(&self.rules);
        // HttpConnector sets the request's port on every address afterwards.
        Box::pin(async move { resolve_checked(name.as_str(), 0, &rules).await.map(Vec::into_iter) })
    }
}

/// hyper-util's `HttpConnector` with checked resolution, refusing denied IP-literal hosts
/// (which it would connect to without asking the resolver).
#[derive(Clone)]
pub struct CheckedConnector {
    http: HttpConnector<CheckedResolver>,
    rules: Arc<NetworkRules>,
}

impl CheckedConnector {
    /// A connector with `rules`, set up as the upstream client needs (any scheme, no Nagle,
    /// the connect timeout).
    pub fn new(rules: Arc<NetworkRules>, connect_timeout: Duration) -> CheckedConnector {
        let mut http = HttpConnector::new_with_resolver(CheckedResolver { rules: Arc::clone(&rules) });
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        CheckedConnector { http, rules }
    }
}

impl tower_service::Service<Uri> for CheckedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        if let Some(host) = uri.host() {
            if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
                if let Err(denied) = self.rules.check(ip) {
                    let error = AddressDenied { host: host.to_string(), denied: vec![denied] };
                    return Box::pin(std::future::ready(Err(Box::new(error) as BoxError)));
                }
            }
        }
        let connecting = self.http.call(uri);
        Box::pin(async move { connecting.await.map_err(Into::into) })
    }
}

/// Why [`dial`] did not connect.
#[derive(Debug)]
pub enum DialError {
    Denied(AddressDenied),
    Unreachable,
    TimedOut,
}

/// Opens a TCP connection to `host:port` for a blind tunnel: resolved once, checked, then
/// each allowed address tried in turn, all within `timeout`.
pub async fn dial(host: &str, port: u16, rules: &NetworkRules, timeout: Duration) -> Result<TcpStream, DialError> {
    let attempt = async {
        let addrs = resolve_checked(host, port, rules).await.map_err(|e| match e.downcast::<AddressDenied>() {
            Ok(denied) => DialError::Denied(*denied),
            Err(_) => DialError::Unreachable,
        })?;
        for addr in addrs {
            if let Ok(stream) = TcpStream::connect(addr).await {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
        }
        Err(DialError::Unreachable)
    };
    tokio::time::timeout(timeout, attempt).await.unwrap_or(Err(DialError::TimedOut))
}

#[cfg(test)]
mod tests {
    use tower_service::Service;

    use super::super::networks::NetSpec;
    use super::*;

    fn deny_loopback() -> Arc<NetworkRules> {
        Arc::new(NetworkRules::new(&[NetSpec::parse("loopback").unwrap()], &[]))
    }

    #[tokio::test]
    async fn names_and_literals_are_checked_after_resolution() {
        let rules = deny_loopback();
        for host in ["localhost", "127.0.0.2", "[::1]", "::ffff:127.0.0.1", "127.1"] {
            let error = resolve_checked(host, 80, &rules).await.expect_err(host);
            let denied = error.downcast_ref::<AddressDenied>().unwrap_or_else(|| panic!("{host}: {error}"));
            assert!(denied.to_string().contains("is in loopback"), "{denied}");
        }
        let open = NetworkRules::new(&[], &[]);
        let addrs = resolve_checked("127.0.0.2", 8080, &open).await.unwrap();
        assert_eq!(addrs, [SocketAddr::from(([127, 0, 0, 2], 8080))]);
    }

    #[tokio::test]
    async fn the_connector_refuses_literal_hosts_the_resolver_never_sees() {
        let mut connector = CheckedConnector::new(deny_loopback(), Duration::from_secs(1));
        for uri in ["http://127.0.0.2:9/", "http://[::1]:9/", "http://[::ffff:127.0.0.1]:9/", "http://localhost:9/"] {
            std::future::poll_fn(|cx| connector.poll_ready(cx)).await.unwrap();
            let error = connector.call(uri.parse().unwrap()).await.expect_err(uri);
            let chain = std::iter::successors(Some(&*error as &(dyn std::error::Error + 'static)), |e| e.source());
            assert!(chain.into_iter().any(|e| e.is::<AddressDenied>()), "{uri}: {error:?}");
        }
    }

    #[test]
    fn messages_name_the_address_and_the_rule() {
        let rules = deny_loopback();
        let denied = rules.check("127.0.0.2".parse().unwrap()).unwrap_err();
        let literal = AddressDenied { host: "127.0.0.2".into(), denied: vec![denied.clone()] };
        assert!(
            literal
                .to_string()
                .starts_with("connection to 127.0.0.2 denied by [policy] deny_networks: 127.0.0.2 is in loopback; "),
            "{literal}"
        );
    }
}
