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
    /// Inside an intercepted CONNECT tunnel: every request must be for the tunnel's host.
    Tunnel(Arc<TunnelTarget>),
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
    pub authority: Authority,
    pub host: String,
    pub port: u16,
}

/// The resolved destination of one request.
#[derive(Debug)]
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

/// Works out the target of a request that arrived through `entry`.
pub fn target_of(entry: &Entry, parts: &Parts) -> Result<Target, ProxyError> {
    match entry {
        Entry::Proxy(proxy_addr) => {
            let (Some(scheme), Some(authority)) = (parts.uri.scheme(), parts.uri.authority()) else {
                return Err(ProxyError::NotAProxyRequest(proxy_addr.to_string()));
            };
            // `user:password@` never goes into Host, logs or errors.
            let authority = &without_userinfo(authority);
            let scheme = scheme_of(scheme)
                .ok_or_else(|| ProxyError::BadRequest(format!("unsupported scheme {scheme} (use http or https)")))?;
            Ok(Target {
                scheme,
                port: authority.port_u16().unwrap_or(scheme.default_port()),
                host: authority.host().to_ascii_lowercase(),
                authority: authority.clone(),
                path_and_query: path_and_query(&parts.uri),
            })
        }
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
            // header, where present, must name the tunnel's host and port.
            let host_header = parts.headers.get(http::header::HOST).map(|h| h.to_str().unwrap_or("\u{fffd}"));
            let uri_authority = parts.uri.authority().map(Authority::as_str);
            let named: Vec<&str> = [uri_authority, host_header].into_iter().flatten().collect();
            if named.is_empty() {
                return Err(ProxyError::BadRequest("request inside the tunnel names no host".into()));
            }
            for name in named {
                // A Host without a port names the tunnel's host; an explicit port must agree.
                let matches = name.parse::<Authority>().is_ok_and(|a| {
                    a.host().eq_ignore_ascii_case(&tunnel.host) && a.port_u16().is_none_or(|p| p == tunnel.port)
                });
                if !matches {
                    return Err(ProxyError::Misdirected {
                        expected: tunnel.authority.to_string(),
                        found: name.to_string(),
                    });
                }
            }
            Ok(Target {
                scheme: Scheme::Https,
                authority: tunnel.authority.clone(),
                host: tunnel.host.clone(),
                port: tunnel.port,
                path_and_query: path_and_query(&parts.uri),
            })
        }
    }
}

fn without_userinfo(authority: &Authority) -> Authority {
    match authority.as_str().rsplit_once('@') {
        Some((_, host_port)) => host_port.parse().unwrap_or_else(|_| authority.clone()),
        None => authority.clone(),
    }
}

/// Whether a path has `.` or `..` segments (also percent-encoded). Such paths are refused on
/// routed requests: an upstream that normalises `/v1/../admin` would otherwise receive a
/// token bound to `/v1` on a path outside it.
pub fn has_dot_segment(path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    // Fast path: no '.' and no '%' means no dot segment in any spelling.
    if memchr::memchr2(b'.', b'%', path.as_bytes()).is_none() {
        return false;
    }
    path.split('/').any(|seg| {
        let decoded_len_is_dots = |s: &str| {
            let mut rest = s.as_bytes();
            let mut dots = 0;
            while !rest.is_empty() {
                if rest[0] == b'.' {
                    rest = &rest[1..];
                } else if rest.len() >= 3 && rest[0] == b'%' && rest[1] == b'2' && rest[2].eq_ignore_ascii_case(&b'e') {
                    rest = &rest[3..];
                } else {
                    return false;
                }
                dots += 1;
            }
            dots == 1 || dots == 2
        };
        decoded_len_is_dots(seg)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments() {
        assert!(has_dot_segment("/v1/../admin"));
        assert!(has_dot_segment("/v1/%2E%2e/admin"));
        assert!(has_dot_segment("/v1/."));
        assert!(!has_dot_segment("/v1/..x/a.b"));
        assert!(!has_dot_segment("/v1?x=/../"));
    }
}
