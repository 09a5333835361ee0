//! Header hygiene: what must not cross the proxy, in either direction.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one hop (RFC 9110 section 7.6.1) and never go further. `Trailer`
/// is not one: it names the trailer fields end to end, and HTTP/1.1 only sends the trailers
/// it names.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, those named in `Connection`, and every `Proxy-*` header
/// (credentials for this proxy must never reach an upstream). `TE: trailers` is the one
/// exception kept: gRPC servers require it, and it only says the sender accepts trailers,
/// which the proxy passes through.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds what is present; only that is removed (usually nothing,
    // and then nothing else is looked up: this runs twice per request).
    let mut remove: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if HOP_BY_HOP.contains(name) || is_proxy_or_keep_alive(name) {
            remove.push(name.clone());
        }
    }
    if remove.is_empty() {
        return;
    }
    let trailers = accepts_trailers(headers);
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
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Whether `TE` says "trailers" (alone or among transfer codings, which are dropped).
fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| coding.split(';').next().is_some_and(|c| c.trim().eq_ignore_ascii_case("trailers")))
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

    #[test]
    fn te_trailers_and_trailer_pass_other_codings_do_not() {
        let mut h = HeaderMap::new();
        h.insert("connection", "TE".parse().unwrap());
        h.insert("te", "gzip, Trailers;q=1".parse().unwrap());
        h.insert("trailer", "grpc-status".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get("te").unwrap(), "trailers");
        assert_eq!(h.get("trailer").unwrap(), "grpc-status");
        assert!(!h.contains_key("connection"));

        let mut h = HeaderMap::new();
        h.insert("te", "gzip".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty());
    }
}
