//! HTTP/2 and gRPC specifics: which HTTP version a request goes upstream with, and which
//! bodies are gRPC messages.
//!
//! gRPC needs h2 end to end (its status arrives in trailers, and calls stream both ways), so
//! a gRPC request always goes upstream over h2: ALPN `h2` for TLS, prior knowledge for a
//! plain-HTTP upstream. A route with `upstream_http2 = true` does the same for every request.
//! A request that upgrades the connection (WebSocket) goes over HTTP/1.1, since h2 has no
//! `Upgrade`. Everything else lets a TLS upstream pick over ALPN.
//!
//! gRPC messages are length-prefixed protobuf: replacing a placeholder inside one would
//! change its length and corrupt the message, so their bodies are forwarded untouched (and
//! streamed as they come, never held back to be read whole).

use http::header::{self, HeaderMap};

use super::upstream::Protocol;

/// The version to speak upstream for a request with `headers`.
pub fn upstream_protocol(headers: &HeaderMap, upgrade: bool, route_wants_h2: bool) -> Protocol {
    if upgrade {
        Protocol::Http1
    } else if route_wants_h2 || needs_h2(headers) {
        Protocol::Http2
    } else {
        Protocol::Negotiated
    }
}

/// The request's media type, without parameters or surrounding spaces (compare it without
/// regard to case). Runs on every request: it allocates nothing.
fn media_type(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::CONTENT_TYPE)?.as_bytes();
    Some(value.split(|&b| b == b';').next().unwrap_or_default().trim_ascii())
}

/// Whether `text` starts with `prefix`, ASCII letters compared without regard to case.
fn starts_with_ignore_case(text: &[u8], prefix: &[u8]) -> bool {
    text.get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// Whether the body is gRPC framing (`application/grpc`, `application/grpc+proto`,
/// `application/grpc-web`...): length-prefixed messages that must not be rewritten.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|t| {
        t.eq_ignore_ascii_case(b"application/grpc")
            || starts_with_ignore_case(t, b"application/grpc+")
            || starts_with_ignore_case(t, b"application/grpc-web")
    })
}

/// Whether the request is gRPC proper (not gRPC-Web, which works over HTTP/1.1).
fn needs_h2(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|t| {
        t.eq_ignore_ascii_case(b"application/grpc") || starts_with_ignore_case(t, b"application/grpc+")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_type(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, value.parse().unwrap());
        h
    }

    #[test]
    fn grpc_goes_over_h2_upgrades_over_http1() {
        for grpc in
            ["application/grpc", "Application/GRPC+proto", "application/grpc; charset=utf-8", " application/grpc "]
        {
            assert!(is_grpc(&with_type(grpc)), "{grpc}");
            assert_eq!(upstream_protocol(&with_type(grpc), false, false), Protocol::Http2, "{grpc}");
        }
        let web = with_type("Application/gRPC-Web+proto");
        assert!(is_grpc(&web));
        assert_eq!(upstream_protocol(&web, false, false), Protocol::Negotiated);
        for other in ["application/json", "application/grpcx", "text/plain"] {
            assert!(!is_grpc(&with_type(other)), "{other}");
            assert_eq!(upstream_protocol(&with_type(other), false, false), Protocol::Negotiated);
        }
        assert_eq!(upstream_protocol(&HeaderMap::new(), false, true), Protocol::Http2);
        assert_eq!(upstream_protocol(&HeaderMap::new(), true, true), Protocol::Http1);
    }
}
