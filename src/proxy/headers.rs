//! Header hygiene: what must not cross the proxy, in either direction.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one hop (RFC 9110 section 7.6.1) and never go further. `Trailer`
/// is not one: it names the trailer fields end to end, and HTTP/1.1 only sends the trailers
/// it names.
static HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
/// Where `Connection` and `TE` are in [`HOP_BY_HOP`].
const CONNECTION_INDEX: usize = 0;
const TE_INDEX: usize = 3;

/// Removes hop-by-hop headers, those named in `Connection`, and every `Proxy-*` header
/// (credentials for this proxy must never reach an upstream). `TE: trailers` is the one
/// exception kept: gRPC servers require it, and it only says the sender accepts trailers,
/// which the proxy passes through.
///
/// Runs twice per request (request and response), so the usual cases are cheap: one pass
/// over the names finds what is present, and `Connection: keep-alive` or `close` (what
/// upstreams send) names no header to look up.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut hop = [false; 6];
    let mut others = false;
    // A header literally named `close` (which `Connection: close` would name) is rare.
    let mut close_header = false;
    for name in headers.keys() {
        // By text: one lookup of the name's spelling, then a match the compiler turns into
        // length and byte comparisons.
        let index = match name.as_str() {
            "connection" => CONNECTION_INDEX,
            "proxy-authenticate" => 1,
            "proxy-authorization" => 2,
            "te" => TE_INDEX,
            "transfer-encoding" => 4,
            "upgrade" => 5,
            other => {
                others |= other.starts_with("proxy-") || other == "keep-alive";
                close_header |= other == "close";
                continue;
            }
        };
        hop[index] = true;
    }
    if !others && !hop.contains(&true) {
        return;
    }
    let trailers = hop[TE_INDEX] && accepts_trailers(headers);
    let mut remove: Vec<HeaderName> = Vec::new();
    if hop[CONNECTION_INDEX] {
        for value in headers.get_all(header::CONNECTION) {
            let Ok(value) = value.to_str() else { continue };
            for token in value.split(',').map(str::trim) {
                // `keep-alive` is removed below whatever the Connection header says.
                if token.eq_ignore_ascii_case("keep-alive") || (token.eq_ignore_ascii_case("close") && !close_header) {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    remove.push(name);
                }
            }
        }
    }
    if others {
        remove.extend(headers.keys().filter(|name| is_proxy_or_keep_alive(name)).cloned());
    }
    for (name, present) in HOP_BY_HOP.iter().zip(hop) {
        if present {
            headers.remove(name);
        }
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
    fn every_hop_by_hop_header_is_found_by_its_spelling() {
        assert_eq!(HOP_BY_HOP[CONNECTION_INDEX], header::CONNECTION);
        assert_eq!(HOP_BY_HOP[TE_INDEX], header::TE);
        for name in HOP_BY_HOP.iter() {
            let mut h = HeaderMap::new();
            h.insert(name.clone(), "x".parse().unwrap());
            h.insert("x-kept", "1".parse().unwrap());
            strip_hop_by_hop(&mut h);
            assert_eq!(h.keys().collect::<Vec<_>>(), ["x-kept"], "{name}");
        }
    }

    #[test]
    fn keep_alive_and_close_are_dropped_with_what_connection_names() {
        let mut h = HeaderMap::new();
        h.insert("connection", "Keep-Alive, Close, X-Hop".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert("close", "a header named close is named by Connection too".parse().unwrap());
        h.insert("content-length", "3".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["content-length"]);
        let mut untouched = HeaderMap::new();
        untouched.insert("content-type", "text/plain".parse().unwrap());
        strip_hop_by_hop(&mut untouched);
        assert_eq!(untouched.len(), 1);
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
