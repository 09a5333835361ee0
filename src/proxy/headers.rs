//! Header hygiene: what must not cross the proxy, in either direction.

use http::header::{self, HeaderMap, HeaderName};

/// Headers that describe one hop (RFC 9110 section 7.6.1) and never go further.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, those named in `Connection`, and every `Proxy-*` header
/// (credentials for this proxy must never reach an upstream).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds what is present; only that is removed.
    let mut remove: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if HOP_BY_HOP.contains(name) || is_proxy_or_keep_alive(name) {
            remove.push(name.clone());
        }
    }
    if remove.is_empty() {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .filter(|name| headers.contains_key(name));
        remove.extend(named.collect::<Vec<_>>());
    }
    for name in &remove {
        headers.remove(name);
    }
}

fn is_proxy_or_keep_alive(name: &HeaderName) -> bool {
    let name = name.as_str();
    name.starts_with("proxy-") || name == "keep-alive"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_named_and_proxy_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-trace".parse().unwrap());
        h.insert("x-trace", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("proxy-authorization", "Basic abc".parse().unwrap());
        h.insert("proxy-connection", "keep-alive".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("authorization", "Bearer x".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("authorization"));
    }
}
