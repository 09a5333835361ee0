//! The cache key: the request as the function sent it, before any placeholder was filled in.
//!
//! Keying on the unsubstituted request is what lets the cache survive token rotation (the
//! placeholder text is the same before and after a refresh) and what keeps token values out
//! of keys entirely. The key is a SHA-256 over, each length-prefixed: the route's identity,
//! the method, the scheme, host and port, the path and query (the normalised view the route
//! matched), the body, the values of the route's `vary` headers, and the values of every
//! other header that holds a placeholder (two functions writing `{/reader}` and `{/admin}`
//! act as different identities, and must not share answers).

use http::header::{self, HeaderMap, HeaderName};
use http::Method;

use super::identity::RouteId;
use super::store::CacheKey;
use crate::proxy::target::Target;
use crate::routes::Scheme;

/// What a key is made of.
pub struct KeyInput<'a> {
    pub route: RouteId,
    pub method: &'a Method,
    pub target: &'a Target,
    /// The path and query the route matched (normalised as the request path sends it).
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    /// The route's `vary` headers.
    pub vary: &'a [HeaderName],
    /// Headers the route's `set_headers` replace: what the client sent in them is not sent.
    pub replaced: &'a [HeaderName],
    pub body: &'a [u8],
}

/// A key, and the request headers whose values it holds (a response whose `Vary` names any
/// other header is not stored).
#[derive(Debug)]
pub struct Keyed {
    pub key: CacheKey,
    pub covered: Vec<HeaderName>,
}

impl Keyed {
    /// Whether a response's `Vary` may name `name`: its value is in the key, or it is the
    /// same on every request that reaches this key (`Accept-Encoding` is always `identity`;
    /// `set_headers` are the route's own; `Authorization` and `Cookie` are either absent or
    /// hold placeholders, which are keyed, since a literal credential bypasses the cache).
    pub fn covers(&self, name: &HeaderName, replaced: &[HeaderName]) -> bool {
        matches!(*name, header::ACCEPT_ENCODING | header::AUTHORIZATION | header::COOKIE)
            || self.covered.contains(name)
            || replaced.contains(name)
    }
}

/// Computes the key of a request.
pub fn key(input: &KeyInput<'_>) -> Keyed {
    let mut hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut field = |bytes: &[u8]| {
        hash.update(&(bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    field(b"token-sidecar cache key v2");
    field(&input.route.0);
    field(input.method.as_str().as_bytes());
    field(match input.target.scheme {
        Scheme::Http => b"http",
        Scheme::Https => b"https",
    });
    field(input.target.host.as_bytes());
    field(&input.target.port.to_be_bytes());
    field(input.path_and_query.as_bytes());
    field(input.body);

    let mut covered: Vec<HeaderName> = input.vary.iter().filter(|n| !input.replaced.contains(n)).cloned().collect();
    let with_placeholders = input.headers.iter().filter(|(name, value)| {
        memchr::memmem::find(value.as_bytes(), b"{/").is_some()
            && !input.replaced.contains(name)
            && !covered.contains(name)
            && !is_hop_by_hop(name)
    });
    let mut named: Vec<HeaderName> = with_placeholders.map(|(name, _)| name.clone()).collect();
    named.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    named.dedup();
    covered.extend(named);
    for name in &covered {
        field(name.as_str().as_bytes());
        let values = input.headers.get_all(name);
        field(&(values.iter().count() as u64).to_be_bytes());
        for value in values {
            field(value.as_bytes());
        }
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(hash.finish().as_ref());
    Keyed { key: CacheKey { route: input.route, digest }, covered }
}

/// Headers that are not sent upstream (the request path strips them), so not in the key.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        *name,
        header::CONNECTION | header::TE | header::TRAILER | header::TRANSFER_ENCODING | header::UPGRADE | header::HOST
    ) || name.as_str().starts_with("proxy-")
        || name.as_str() == "keep-alive"
}

#[cfg(test)]
mod tests {
    use http::uri::{Authority, PathAndQuery};
    use http::HeaderValue;

    use super::*;

    fn target(host: &str, port: u16) -> Target {
        Target {
            scheme: Scheme::Https,
            authority: Authority::try_from(format!("{host}:{port}")).unwrap(),
            host: host.into(),
            port,
            path_and_query: PathAndQuery::from_static("/"),
        }
    }

    struct Req {
        method: Method,
        target: Target,
        path: &'static str,
        headers: HeaderMap,
        body: &'static [u8],
        route: RouteId,
    }

    fn req() -> Req {
        Req {
            method: Method::GET,
            target: target("api.example.com", 443),
            path: "/v1/items?id=1",
            headers: HeaderMap::new(),
            body: b"",
            route: RouteId([1; 32]),
        }
    }

    fn header(mut r: Req, name: &'static str, value: &'static str) -> Req {
        r.headers.append(name, HeaderValue::from_static(value));
        r
    }

    fn key_of(r: &Req, vary: &[HeaderName], replaced: &[HeaderName]) -> Keyed {
        key(&KeyInput {
            route: r.route,
            method: &r.method,
            target: &r.target,
            path_and_query: r.path,
            headers: &r.headers,
            vary,
            replaced,
            body: r.body,
        })
    }

    fn k(r: &Req) -> CacheKey {
        key_of(r, &[HeaderName::from_static("accept-language")], &[]).key
    }

    #[test]
    fn every_part_of_the_request_that_reaches_the_upstream_changes_the_key() {
        let base = k(&req());
        assert_eq!(base, k(&req()), "deterministic");
        let variants = [
            Req { method: Method::HEAD, ..req() },
            Req { target: target("api2.example.com", 443), ..req() },
            Req { target: target("api.example.com", 8443), ..req() },
            Req { target: Target { scheme: Scheme::Http, ..target("api.example.com", 443) }, ..req() },
            Req { path: "/v1/items?id=2", ..req() },
            Req { body: b"{}", ..req() },
            Req { route: RouteId([2; 32]), ..req() },
            header(req(), "accept-language", "de"),
            header(req(), "x-api-key", "{/reader}"),
            header(req(), "authorization", "Bearer {/auth_token}"),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(k(v), base, "variant {i} must have its own key");
        }
    }

    #[test]
    fn headers_without_placeholders_and_outside_vary_do_not_split_entries() {
        let base = k(&req());
        assert_eq!(k(&header(req(), "user-agent", "python-requests/2.31")), base);
        assert_eq!(k(&header(req(), "x-request-id", "abc")), base);
        assert_eq!(k(&header(req(), "proxy-authorization", "{/x}")), base, "never sent upstream");
    }

    #[test]
    fn placeholders_are_keyed_as_written_whatever_their_order() {
        let ab = header(header(req(), "x-a", "{/one}"), "x-b", "{/two}");
        let ba = header(header(req(), "x-b", "{/two}"), "x-a", "{/one}");
        assert_eq!(k(&ab), k(&ba));
        assert_ne!(k(&header(req(), "x-a", "{/one}")), k(&header(req(), "x-a", "{/two}")));
        // Two values of a header are not the same as one value holding both.
        let two = header(header(req(), "accept-language", "de"), "accept-language", "en");
        assert_ne!(k(&two), k(&header(req(), "accept-language", "deen")));
    }

    #[test]
    fn headers_the_route_replaces_are_not_keyed_but_are_covered() {
        let auth = HeaderName::from_static("authorization");
        let replaced = std::slice::from_ref(&auth);
        let with = key_of(&header(req(), "authorization", "Bearer {/x}"), &[], replaced);
        let without = key_of(&req(), &[], replaced);
        assert_eq!(with.key, without.key);
        assert!(with.covers(&auth, replaced));
        assert!(with.covers(&header::ACCEPT_ENCODING, replaced));
        assert!(without.covers(&header::AUTHORIZATION, &[]) && without.covers(&header::COOKIE, &[]));
        assert!(!with.covers(&HeaderName::from_static("origin"), replaced));
        let keyed = key_of(&header(req(), "x-key", "{/k}"), &[], &[]);
        assert_eq!(keyed.covered, [HeaderName::from_static("x-key")]);
    }

    #[test]
    fn keys_hold_no_header_or_body_bytes() {
        let r = Req { body: b"SECRET-BODY", ..header(req(), "x-key", "{/SECRET}") };
        let text = k(&r).to_string();
        assert!(!text.contains("SECRET") && text.len() == 16 + 1 + 64, "{text}");
    }
}
