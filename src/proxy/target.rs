//! Where a request is going, decided once from what the client asked the proxy for.
//!
//! Invariant 6 of DESIGN.md lives here: the host a token may be sent to comes from the
//! absolute URI, the CONNECT target, or the reverse listener's upstream — never from a Host
//! header the client could set to anything.

use std::sync::Arc;

use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme as UriScheme};
use http::Uri;

use crate::error::ProxyError;
use crate::routes::Scheme;

/// How a connection reached the proxy, which decides how its requests name their target.
#[derive(Clone, Debug)]
pub enum Entry {
    /// The forward-proxy port: absolute-form requests (HTTP_PROXY) and CONNECT (HTTPS_PROXY).
    /// Carries its bound address for the hint given to clients that forgot to use it as one.
    Proxy(std::net::SocketAddr),
    /// A reverse listener: every request goes to one upstream base URL.
    Reverse(Arc<ReverseTarget>),
    /// Inside a CONNECT tunnel the sidecar serves (intercepted TLS, or plain HTTP sent through
    /// CONNECT): every request must be for the tunnel's host.
    Tunnel(Arc<TunnelTarget>),
    /// The Unix-socket proxy listener: absolute-form requests and CONNECT as on the proxy
    /// port, and also origin-form requests whose `Host` names the target, which is what
    /// clients speaking HTTP over a Unix socket send (curl `--unix-socket`, httpx's `uds`,
    /// Node's `socketPath`). There is no connection to another host the `Host` could
    /// disagree with: it states the target as an absolute URI would. Carries the TCP proxy
    /// address for hints.
    Unix(std::net::SocketAddr),
}

/// The upstream of a reverse listener.
#[derive(Debug)]
pub struct ReverseTarget {
    pub scheme: Scheme,
    pub authority: Authority,
    pub host: String,
    pub port: u16,
    /// The base URL's path without a trailing slash, prepended to every request path.
    pub base_path: String,
}

impl ReverseTarget {
    pub fn from_uri(uri: &Uri) -> Option<ReverseTarget> {
        let scheme = scheme_of(uri.scheme()?)?;
        let authority = uri.authority()?.clone();
        Some(ReverseTarget {
            port: authority.port_u16().unwrap_or(scheme.default_port()),
            host: authority.host().to_ascii_lowercase(),
            authority,
            scheme,
            base_path: uri.path().trim_end_matches('/').to_string(),
        })
    }
}

/// The host and port a CONNECT tunnel was opened to.
#[derive(Debug)]
pub struct TunnelTarget {
    /// `Https` for an intercepted TLS tunnel, `Http` for plain HTTP sent through CONNECT.
    pub scheme: Scheme,
    pub authority: Authority,
    pub host: String,
    pub port: u16,
}

/// The resolved destination of one request.
#[derive(Debug, Clone)]
pub struct Target {
    pub scheme: Scheme,
    pub authority: Authority,
    pub host: String,
    pub port: u16,
    /// Path and query as the upstream should see them (before substitution).
    pub path_and_query: PathAndQuery,
}

fn scheme_of(s: &UriScheme) -> Option<Scheme> {
    if *s == UriScheme::HTTP {
        Some(Scheme::Http)
    } else if *s == UriScheme::HTTPS {
        Some(Scheme::Https)
    } else {
        None
    }
}

fn path_and_query(uri: &Uri) -> PathAndQuery {
    uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"))
}

/// Whether a request is `OPTIONS *` (asterisk form: about the server, not a resource).
pub fn is_asterisk_form(parts: &Parts) -> bool {
    parts.method == http::Method::OPTIONS && parts.uri.scheme().is_none() && parts.uri.path() == "*"
}

/// A host and port a client asked for, validated and in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Lowercase, without a trailing dot; IPv6 literals keep their brackets.
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// The authority sent upstream (Host header and URI): the port is omitted when it is
    /// the scheme's default, as clients write it.
    pub fn authority(&self, scheme: Scheme) -> Result<Authority, ProxyError> {
        let text =
            if self.port == scheme.default_port() { self.host.clone() } else { format!("{}:{}", self.host, self.port) };
        Authority::try_from(text).map_err(|_| ProxyError::BadHost("the host is not a valid URI authority".into()))
    }
}

/// Parses a CONNECT request target. Only `host:port` is accepted: userinfo (`a@host:port`),
/// a scheme, a path or a missing port are refused, so the host a tunnel is intercepted as is
/// the only host the client named.
pub fn parse_connect_target(target: &str) -> Result<HostPort, ProxyError> {
    let refuse = |why: &str| ProxyError::BadConnectTarget(why.to_string());
    if target.contains('@') {
        return Err(refuse("a CONNECT target must not carry userinfo ('user@'); send host:port"));
    }
    if target.contains(['/', '?', '#']) {
        return Err(refuse("a CONNECT target is host:port, without a scheme or path"));
    }
    let (host, port) = match target.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !port.is_empty() => (host, port),
        _ => return Err(refuse("a CONNECT target needs a port: host:port")),
    };
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(refuse("write an IPv6 CONNECT target in brackets: [::1]:443"));
    }
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => p,
        _ => return Err(refuse("the CONNECT port must be a number from 1 to 65535")),
    };
    let host = crate::routes::canonical_host(host).map_err(|why| ProxyError::BadHost(why.to_string()))?;
    Ok(HostPort { host, port })
}

/// The host and port of an absolute URI's authority (userinfo dropped), in canonical form.
fn uri_host_port(authority: &Authority, scheme: Scheme) -> Result<HostPort, ProxyError> {
    let host = crate::routes::canonical_host(authority.host()).map_err(|why| ProxyError::BadHost(why.to_string()))?;
    Ok(HostPort { host, port: authority.port_u16().unwrap_or(scheme.default_port()) })
}

/// Refuses a request with more than one Host header: servers disagree on which one counts.
fn single_host_header(parts: &Parts) -> Result<Option<&http::HeaderValue>, ProxyError> {
    let mut hosts = parts.headers.get_all(http::header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::AmbiguousHost("the request has more than one Host header".into()));
    }
    Ok(first)
}

/// Works out the target of a request that arrived through `entry`.
pub fn target_of(entry: &Entry, parts: &Parts) -> Result<Target, ProxyError> {
    let host_header = single_host_header(parts)?;
    match entry {
        Entry::Unix(_) if parts.uri.authority().is_none() => {
            let Some(name) = host_header.and_then(|h| h.to_str().ok()) else {
                return Err(ProxyError::BadRequest("a request on the Unix socket names its target in Host".into()));
            };
            let target = parse_authority(name, Scheme::Http.default_port())
                .ok_or_else(|| ProxyError::BadHost(format!("{name:?} is not a host[:port]")))?;
            Ok(Target {
                scheme: Scheme::Http,
                authority: target.authority(Scheme::Http)?,
                host: target.host,
                port: target.port,
                path_and_query: path_and_query(&parts.uri),
            })
        }
        Entry::Proxy(proxy_addr) | Entry::Unix(proxy_addr) => {
            let (Some(scheme), Some(authority)) = (parts.uri.scheme(), parts.uri.authority()) else {
                return Err(ProxyError::NotAProxyRequest(proxy_addr.to_string()));
            };
            let scheme = scheme_of(scheme)
                .ok_or_else(|| ProxyError::BadRequest(format!("unsupported scheme {scheme} (use http or https)")))?;
            // Host, URI and logs are rebuilt from the parsed host and port: `user:password@`
            // and odd spellings never reach the upstream.
            let target = uri_host_port(authority, scheme)?;
            // The usual request already names its host canonically: keep its authority.
            let canonical = match authority.as_str().strip_prefix(target.host.as_str()) {
                Some("") => true,
                Some(rest) => {
                    target.port != scheme.default_port()
                        && rest.strip_prefix(':').is_some_and(|p| !p.starts_with('0') && p.parse() == Ok(target.port))
                }
                None => false,
            };
            let authority = if canonical { authority.clone() } else { target.authority(scheme)? };
            let HostPort { host, port } = target;
            Ok(Target { scheme, authority, host, port, path_and_query: path_and_query(&parts.uri) })
        }
        Entry::Reverse(base) if is_asterisk_form(parts) => Ok(Target {
            // `OPTIONS *` is about the upstream server as a whole: no base path.
            scheme: base.scheme,
            authority: base.authority.clone(),
            host: base.host.clone(),
            port: base.port,
            path_and_query: PathAndQuery::from_static("*"),
        }),
        Entry::Reverse(base) => {
            let pq = path_and_query(&parts.uri);
            let pq = if pq.as_str().starts_with('/') { pq.as_str() } else { "/" };
            let joined = PathAndQuery::try_from(format!("{}{pq}", base.base_path))
                .map_err(|_| ProxyError::BadRequest("the request target is not a valid URI".into()))?;
            Ok(Target {
                scheme: base.scheme,
                authority: base.authority.clone(),
                host: base.host.clone(),
                port: base.port,
                path_and_query: joined,
            })
        }
        Entry::Tunnel(tunnel) => {
            // Both the request's authority (h2 `:authority`, or an absolute URI) and its Host
            // header, where present, must name the tunnel's host and port, and each other.
            let host_header = host_header.map(|h| h.to_str().unwrap_or("\u{fffd}"));
            let uri_authority = parts.uri.authority().map(Authority::as_str);
            if let (Some(a), Some(h)) = (uri_authority, host_header) {
                if !same_authority(a, h, tunnel.port) {
                    return Err(ProxyError::AmbiguousHost(format!(
                        "the request's authority {a:?} and its Host header {h:?} disagree"
                    )));
                }
            }
            let Some(name) = uri_authority.or(host_header) else {
                return Err(ProxyError::BadRequest("request inside the tunnel names no host".into()));
            };
            if !names_tunnel(name, tunnel) {
                return Err(ProxyError::Misdirected {
                    expected: tunnel.authority.to_string(),
                    found: name.to_string(),
                });
            }
            Ok(Target {
                scheme: tunnel.scheme,
                authority: tunnel.authority.clone(),
                host: tunnel.host.clone(),
                port: tunnel.port,
                path_and_query: path_and_query(&parts.uri),
            })
        }
    }
}

/// Whether `name` (a Host or `:authority`) names the tunnel's host; a missing port means
/// the tunnel's port, an explicit one must agree.
fn names_tunnel(name: &str, tunnel: &TunnelTarget) -> bool {
    parse_authority(name, tunnel.port).is_some_and(|hp| hp.host == tunnel.host && hp.port == tunnel.port)
}

fn same_authority(a: &str, b: &str, default_port: u16) -> bool {
    matches!((parse_authority(a, default_port), parse_authority(b, default_port)), (Some(x), Some(y)) if x == y)
}

fn parse_authority(name: &str, default_port: u16) -> Option<HostPort> {
    let authority: Authority = name.parse().ok()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let host = crate::routes::canonical_host(authority.host()).ok()?;
    Some(HostPort { host, port: authority.port_u16().unwrap_or(default_port) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_targets_are_host_and_port_only() {
        let ok = |t: &str| parse_connect_target(t).map(|hp| (hp.host, hp.port));
        assert_eq!(ok("api.example:443").ok(), Some(("api.example".to_string(), 443)));
        assert_eq!(ok("API.Example.:8443").ok(), Some(("api.example".to_string(), 8443)));
        assert_eq!(ok("[::1]:443").ok(), Some(("[::1]".to_string(), 443)));
        for bad in [
            "evil.example:1@localhost:8444",
            "user@localhost:443",
            "localhost:443/path",
            "http://localhost:443",
            "localhost",
            "localhost:",
            ":443",
            "localhost:0",
            "localhost:65536",
            "localhost:+443",
            "::1:443",
            "[::::::::11:1]:3",
            "[1::2::3]:443",
            "x..example:443",
            ".example:443",
            "exa mple:443",
        ] {
            assert!(parse_connect_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn absolute_uris_get_a_canonical_authority() {
        let proxy = Entry::Proxy(std::net::SocketAddr::from(([127, 0, 0, 1], 8080)));
        for (uri, authority) in [
            ("http://api.example/x", "api.example"),
            ("http://api.example:8080/x", "api.example:8080"),
            ("http://API.Example.:80/x", "api.example"),
            ("http://user:pw@api.example:8080/x", "api.example:8080"),
            ("http://api.example:08080/x", "api.example:8080"),
            ("https://[::1]:443/x", "[::1]"),
        ] {
            let (parts, ()) = http::Request::get(uri).body(()).unwrap().into_parts();
            let target = target_of(&proxy, &parts).unwrap();
            assert_eq!(target.authority.as_str(), authority, "{uri}");
        }
    }

    #[test]
    fn the_unix_socket_takes_origin_form_targets_from_host() {
        let unix = Entry::Unix(std::net::SocketAddr::from(([127, 0, 0, 1], 8080)));
        let target = |uri: &str, host: Option<&str>| {
            let mut request = http::Request::get(uri);
            if let Some(host) = host {
                request = request.header("host", host);
            }
            let (parts, ()) = request.body(()).unwrap().into_parts();
            target_of(&unix, &parts).map(|t| (t.scheme, t.authority.to_string(), t.path_and_query.to_string())).ok()
        };
        let ok = |authority: &str, path: &str| Some((Scheme::Http, authority.to_string(), path.to_string()));
        assert_eq!(target("/x?q=1", Some("API.example:8080")), ok("api.example:8080", "/x?q=1"));
        assert_eq!(target("/x", Some("api.example:80")), ok("api.example", "/x"));
        assert_eq!(target("http://api.example:81/y", Some("other.example")), ok("api.example:81", "/y"));
        assert!(target("/x", None).is_none());
        assert!(target("/x", Some("user@api.example")).is_none());
        assert!(target("/x", Some("bad host")).is_none());
    }

    #[test]
    fn tunnel_names_are_compared_canonically() {
        let tunnel = TunnelTarget {
            scheme: Scheme::Https,
            authority: "localhost:8444".parse().unwrap(),
            host: "localhost".into(),
            port: 8444,
        };
        assert!(names_tunnel("LOCALHOST.:8444", &tunnel));
        assert!(names_tunnel("localhost", &tunnel));
        assert!(!names_tunnel("localhost:8445", &tunnel));
        assert!(!names_tunnel("evil.example", &tunnel));
        assert!(!names_tunnel("x@localhost:8444", &tunnel));
    }
}
