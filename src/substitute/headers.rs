//! Substitution over a whole header section (request headers, and trailers).

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::substitute::basic::substitute_basic;
use crate::substitute::{substitute_within, Bounded, Resolve};

/// Fills placeholders in every value of `headers`, keeping the section (names and values)
/// within `max_bytes` once filled. Header values take the raw `{/NAME}` spelling only (no
/// client percent-encodes a header value, and the sidecar could not know how a header's
/// consumer would decode one), with the value inserted as it is; `Authorization: Basic`
/// credentials are also searched inside their base64. A value whose result is not a valid
/// header value (a token with a newline, say) is left as written rather than forwarded
/// malformed.
///
/// # Errors
///
/// [`Bounded::Refused`] for a placeholder the request may not use, [`Bounded::TooLong`]
/// when the filled section would exceed `max_bytes`; nothing beyond `max_bytes` is ever
/// allocated.
pub fn substitute_header_map(headers: &mut HeaderMap, resolver: &dyn Resolve, max_bytes: usize) -> Result<(), Bounded> {
    substitute_header_map_by_name(headers, &|_| resolver, max_bytes)
}

/// Like [`substitute_header_map`], with each header's placeholders resolved by the resolver
/// `resolver_for` gives for its name (a route may allow a token in some headers only).
///
/// # Errors
///
/// As [`substitute_header_map`].
pub fn substitute_header_map_by_name<'r>(
    headers: &mut HeaderMap,
    resolver_for: &dyn Fn(&HeaderName) -> &'r dyn Resolve,
    max_bytes: usize,
) -> Result<(), Bounded> {
    let mut total: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
    if total > max_bytes {
        return Err(Bounded::TooLong);
    }
    for (name, value) in headers.iter_mut() {
        let room = max_bytes - (total - value.len());
        let resolver = resolver_for(name);
        let basic = if *name == AUTHORIZATION { substitute_basic(value.as_bytes(), resolver, room)? } else { None };
        let replaced = match basic {
            Some(bytes) => bytes,
            None => match substitute_within(value.as_bytes(), resolver, room)? {
                std::borrow::Cow::Borrowed(_) => continue,
                std::borrow::Cow::Owned(bytes) => bytes,
            },
        };
        // From the owned buffer, so the (long) token is not copied again.
        if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(replaced)) {
            total = total - value.len() + v.len();
            *value = v;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::substitute::tests::MapResolver;
    use crate::substitute::{RefusalKind, Refused};

    fn resolver() -> MapResolver {
        MapResolver::default().value("t", b"0123456789").forbidden("other")
    }

    #[test]
    fn fills_every_value_and_counts_the_result() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer {/t}"));
        h.append("x-a", HeaderValue::from_static("{/t}{/t}"));
        substitute_header_map(&mut h, &resolver(), 1000).unwrap();
        assert_eq!(h["authorization"], "Bearer 0123456789");
        assert_eq!(h["x-a"], "01234567890123456789");
    }

    #[test]
    fn amplification_stops_at_the_limit() {
        let mut h = HeaderMap::new();
        let many = "{/t}".repeat(1000);
        for i in 0..10 {
            h.insert(http::HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(), many.parse().unwrap());
        }
        // 10 x 4000 bytes as written fits in 64 KiB; filled it would be 100 KB.
        assert_eq!(substitute_header_map(&mut h, &resolver(), 64 << 10), Err(Bounded::TooLong));
        let mut small = HeaderMap::new();
        small.insert("x", many.parse().unwrap());
        assert_eq!(substitute_header_map(&mut small, &resolver(), 10_001), Ok(()));
        let mut over = HeaderMap::new();
        over.insert("x", many.parse().unwrap());
        assert_eq!(substitute_header_map(&mut over, &resolver(), 10_000), Err(Bounded::TooLong));
        assert_eq!(small["x"].len(), 10_000);
    }

    #[test]
    fn basic_credentials_are_opened_in_authorization_only() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut h = HeaderMap::new();
        h.insert("authorization", format!("Basic {}", b64("u:{/t}")).parse().unwrap());
        h.insert("x-basic", format!("Basic {}", b64("u:{/t}")).parse().unwrap());
        substitute_header_map(&mut h, &resolver(), 1000).unwrap();
        assert_eq!(h["authorization"], format!("Basic {}", b64("u:0123456789")).as_str());
        assert_eq!(h["x-basic"], format!("Basic {}", b64("u:{/t}")).as_str());
        let mut refused = HeaderMap::new();
        refused.insert("authorization", format!("Basic {}", b64("{/other}:")).parse().unwrap());
        assert!(matches!(substitute_header_map(&mut refused, &resolver(), 1000), Err(Bounded::Refused(_))));
    }

    #[test]
    fn refusals_win_over_sizes() {
        let mut h = HeaderMap::new();
        h.insert("x", HeaderValue::from_static("{/other}"));
        assert_eq!(
            substitute_header_map(&mut h, &resolver(), 100),
            Err(Bounded::Refused(Refused { name: "other".into(), kind: RefusalKind::NotBound }))
        );
    }
}
