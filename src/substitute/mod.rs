//! Placeholder substitution: turns `{/NAME}` in outbound requests into signed tokens.
//!
//! Agent functions never see real tokens; they write a placeholder such as
//! `{/auth_token}` into a header, the request target or the body, and the sidecar
//! swaps in the current token on the way out. This module only knows the grammar
//! and how to rewrite bytes; which name maps to which token (and whether the matched
//! route may use it) is decided by a [`Resolve`] implementation supplied per request.
//!
//! Grammar: `{/` + NAME + `}` where NAME is 1 to 64 bytes of `[A-Za-z0-9_.-]`, plus the
//! encoded spellings clients produce from it, each recognised only where a client produces
//! it (see `grammar.rs` and [`Syntax`]). Anything that does not match exactly is ordinary
//! text and passes through unchanged, so payloads that merely contain braces and slashes
//! (JSON, regexes, templating languages) are never mangled. An inserted value is escaped for
//! where it lands (percent-encoded in a URI or form, JSON-escaped in JSON).
//!
//! Entry points:
//! - [`substitute`] for header values (borrowed result when nothing changed), and
//!   [`substitute_header_map`] for a whole header section, which also fills placeholders
//!   inside `Authorization: Basic` credentials,
//! - [`substitute_uri`] for the request target (raw and percent-encoded forms,
//!   inserted values are percent-encoded),
//! - [`substitute_as`] for any buffer in any [`Syntax`],
//! - [`BodySubstituter`] / [`SubstitutingBody`] for streaming bodies with bounded
//!   memory and zero-copy pass-through, in the syntax their `Content-Type` selects.

mod basic;
mod body;
mod escape;
mod grammar;
mod headers;
mod redact;
mod rewrite;
mod scan;
#[cfg(test)]
mod stream_tests;

pub use basic::basic_from_userinfo;
pub use body::{BodySubstituter, SubstitutingBody, MAX_TRAILERS};
pub use grammar::Syntax;
pub use headers::{substitute_header_map, substitute_header_map_by_name};
pub use redact::{RedactingBody, Redactions};
pub use scan::{substitute, substitute_as, substitute_uri, substitute_uri_within, substitute_within, Bounded};

/// Whether `name` can be written as a placeholder: `[A-Za-z0-9_.-]{1,64}`. Token names and
/// aliases must pass this, or no function could ever refer to them.
pub fn is_valid_name(name: &str) -> bool {
    (1..=grammar::MAX_NAME).contains(&name.len()) && name.bytes().all(grammar::is_name_byte)
}

/// The names of every complete placeholder in `text`, in order: config checks use it to
/// find which tokens a template needs.
pub fn placeholder_names(text: &[u8]) -> impl Iterator<Item = &str> + '_ {
    scan::placeholders(text).map(|p| p.name)
}

/// What a placeholder name stands for in the current request.
///
/// Three outcomes rather than an `Option` because an unknown name (plain text that
/// happens to look like a placeholder) must be left alone, while a configured token
/// that the route does not bind is a policy violation that must stop the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Replace the placeholder with these bytes.
    Value(bytes::Bytes),
    /// Not a configured token: leave the text as written.
    Unknown,
    /// A configured token that the matched route does not bind: the request must be refused.
    Forbidden,
    /// A bound token with no current value (never minted, or expired): the request must wait
    /// for a refresh rather than carry a stale token.
    Unavailable,
    /// A bound token that cannot be written here, for the reason given.
    Refused(RefusalKind),
}

/// Resolvers that judge a whole body by region mark regions with an index; this one is
/// everything outside the marked regions.
pub const OUTSIDE_REGIONS: usize = usize::MAX;

/// Looks placeholder names up against one consistent token snapshot.
///
/// One resolver is used for the whole request (headers, target and body), so every
/// placeholder in a request sees the same token generation even if tokens rotate
/// while the body is still streaming.
pub trait Resolve: Send + Sync + 'static {
    /// Resolves one placeholder name (already validated against the grammar).
    fn resolve(&self, name: &str) -> Resolution;

    /// For a body read whole: the regions whose placeholders this resolver judges
    /// differently (the JSON strings a route's `substitute_in` names), in order and covering
    /// the body, each with its index (or [`OUTSIDE_REGIONS`]). A placeholder never crosses a
    /// region's edge. `None`: the body is one region.
    fn body_regions(&self, _body: &[u8]) -> Option<Vec<(std::ops::Range<usize>, usize)>> {
        None
    }

    /// Told before the placeholders of a region are resolved, and with
    /// [`OUTSIDE_REGIONS`] after the last one.
    fn enter_region(&self, _region: usize) {}
}

/// Lets callers share one resolver between the header pass and the body stream
/// (including `Arc<dyn Resolve>`) without wrapping it again.
impl<R: Resolve + ?Sized> Resolve for std::sync::Arc<R> {
    fn resolve(&self, name: &str) -> Resolution {
        (**self).resolve(name)
    }

    fn body_regions(&self, body: &[u8]) -> Option<Vec<(std::ops::Range<usize>, usize)>> {
        (**self).body_regions(body)
    }

    fn enter_region(&self, region: usize) {
        (**self).enter_region(region)
    }
}

/// Why a placeholder stopped the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The token exists but the matched route does not bind it (403).
    NotBound,
    /// The token is bound but has no unexpired value right now (503).
    Unavailable,
    /// The token is bound, but not to this place in the request (403).
    NotAllowedHere,
    /// A token signed for each request, written where it cannot be (the request target or the
    /// body, which its claims cover): only headers may carry it (400).
    Misplaced,
    /// A token signed for each request whose claims need something this request lacks, such
    /// as an access token in `Authorization` for `ath` (400).
    Unsignable,
}

/// A placeholder that must not be filled in: the request is refused, nothing is forwarded.
///
/// Returned (or, from [`SubstitutingBody`], boxed as the body error) so the caller
/// can refuse the request instead of leaking the placeholder or the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The placeholder name as written in the request.
    pub name: String,
    pub kind: RefusalKind,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            RefusalKind::NotBound => {
                write!(f, "placeholder {{/{}}} names a token that this route does not bind", self.name)
            }
            RefusalKind::Unavailable => {
                write!(f, "token for placeholder {{/{}}} is not available (not minted yet or expired)", self.name)
            }
            RefusalKind::NotAllowedHere => write!(
                f,
                "placeholder {{/{}}} is not allowed in this part of the request (the route's substitute_in)",
                self.name
            ),
            RefusalKind::Misplaced => write!(
                f,
                "placeholder {{/{}}} names a token signed for each request over its method, target and body; \
                 it can only be written into request headers",
                self.name
            ),
            RefusalKind::Unsignable => write!(
                f,
                "token for placeholder {{/{}}} signs a hash of the access token in the Authorization header, \
                 and this request has none",
                self.name
            ),
        }
    }
}

impl std::error::Error for Refused {}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::Bytes;
    use std::borrow::Cow;
    use std::collections::HashMap;

    /// Map-backed resolver used by the tests of all submodules.
    #[derive(Default)]
    pub(crate) struct MapResolver(pub(crate) HashMap<String, Resolution>);

    impl MapResolver {
        pub(crate) fn value(mut self, name: &str, value: &'static [u8]) -> Self {
            self.0.insert(name.to_owned(), Resolution::Value(Bytes::from_static(value)));
            self
        }
        pub(crate) fn forbidden(mut self, name: &str) -> Self {
            self.0.insert(name.to_owned(), Resolution::Forbidden);
            self
        }
    }

    impl Resolve for MapResolver {
        fn resolve(&self, name: &str) -> Resolution {
            self.0.get(name).cloned().unwrap_or(Resolution::Unknown)
        }
    }

    fn resolver() -> MapResolver {
        MapResolver::default()
            .value("auth_token", b"TOKEN")
            .value("a", b"A")
            .value("b", b"BB")
            .value("empty", b"")
            .value("x.y-z_9", b"XYZ")
            .value("q", b"a b/c&d=~e")
            .forbidden("secret")
    }

    fn sub(input: &str) -> Result<String, Refused> {
        substitute(input.as_bytes(), &resolver()).map(|c| String::from_utf8(c.into_owned()).expect("utf8"))
    }

    #[test]
    fn header_replaces_known_placeholder() {
        assert_eq!(sub("Bearer {/auth_token}").unwrap(), "Bearer TOKEN");
        assert_eq!(sub("{/x.y-z_9}").unwrap(), "XYZ");
        assert_eq!(sub("k={/empty};").unwrap(), "k=;");
    }

    #[test]
    fn header_unknown_left_as_text() {
        assert_eq!(sub("Bearer {/nope}").unwrap(), "Bearer {/nope}");
        assert_eq!(sub("{/nope}{/a}").unwrap(), "{/nope}A");
    }

    #[test]
    fn header_forbidden_is_error() {
        let err = sub("x {/a} {/secret} {/b}").unwrap_err();
        assert_eq!(err, Refused { name: "secret".into(), kind: RefusalKind::NotBound });
        assert_eq!(err.to_string(), "placeholder {/secret} names a token that this route does not bind");
    }

    #[test]
    fn header_invalid_names_untouched() {
        let long65 = format!("{{/{}}}", "a".repeat(65));
        let long64 = format!("{{/{}}}", "a".repeat(64));
        for s in [
            "{/}",
            "{/a b}",
            "{/a",
            "{/",
            "{",
            "{a}",
            "/a}",
            "{ /a}",
            "{/a/b}",
            long65.as_str(),
            long64.as_str(),
            "{/é}",
        ] {
            let out = substitute(s.as_bytes(), &resolver()).unwrap();
            assert!(matches!(out, Cow::Borrowed(_)), "{s:?}");
            assert_eq!(&*out, s.as_bytes());
        }
        // A 64-byte name is valid and is replaced when known.
        let name = "n".repeat(64);
        let r = MapResolver::default().value(&name, b"V");
        assert_eq!(&*substitute(long_ph(&name).as_bytes(), &r).unwrap(), b"V");
    }

    fn long_ph(name: &str) -> String {
        format!("{{/{name}}}")
    }

    #[test]
    fn header_multiple_adjacent_start_end() {
        assert_eq!(sub("{/a}{/b}{/a}").unwrap(), "ABBA");
        assert_eq!(sub("{/a} mid {/b}").unwrap(), "A mid BB");
        assert_eq!(sub("{/a}tail").unwrap(), "Atail");
        assert_eq!(sub("head{/b}").unwrap(), "headBB");
        assert_eq!(sub("{/a}").unwrap(), "A");
    }

    #[test]
    fn header_nesting_behaves_sensibly() {
        // Outer braces are text; the inner placeholder is replaced.
        assert_eq!(sub("{{/a}}").unwrap(), "{A}");
        assert_eq!(sub("{/{/a}}").unwrap(), "{/A}");
        assert_eq!(sub("{/a{/b}").unwrap(), "{/aBB");
        // Values are inserted verbatim and never rescanned.
        let r = MapResolver::default().value("a", b"{/b}").value("b", b"NO");
        assert_eq!(&*substitute(b"{/a}", &r).unwrap(), b"{/b}");
    }

    #[test]
    fn header_borrowed_when_untouched() {
        let input = b"Bearer {/unknown} {/} plain { / }".as_slice();
        let out = substitute(input, &resolver()).unwrap();
        match out {
            Cow::Borrowed(b) => assert_eq!(b.as_ptr(), input.as_ptr()),
            Cow::Owned(_) => panic!("allocated without a replacement"),
        }
        assert!(matches!(substitute(b"", &resolver()).unwrap(), Cow::Borrowed(b"")));
    }

    #[test]
    fn arc_resolver_is_a_resolver() {
        let shared: std::sync::Arc<dyn Resolve> = std::sync::Arc::new(resolver());
        let twice = std::sync::Arc::new(shared.clone());
        assert_eq!(&*substitute(b"{/a}", &shared).unwrap(), b"A");
        assert_eq!(&*substitute(b"{/a}", &twice).unwrap(), b"A");
    }

    fn uri(input: &str) -> Result<Cow<'_, str>, Refused> {
        substitute_uri(input, &resolver())
    }

    #[test]
    fn uri_raw_and_encoded_forms() {
        assert_eq!(uri("/v1/{/a}/x?t={/b}").unwrap(), "/v1/A/x?t=BB");
        assert_eq!(uri("/v1/%7B%2Fa%7D/x?t=%7B%2Fb%7D").unwrap(), "/v1/A/x?t=BB");
        assert_eq!(uri("/%7B%2Fa%7D%7B%2Fb%7D{/a}").unwrap(), "/ABBA");
    }

    #[test]
    fn uri_hex_is_case_insensitive() {
        assert_eq!(uri("/%7b%2fa%7d").unwrap(), "/A");
        assert_eq!(uri("/%7B/a%7D?x=%7b/b%7d").unwrap(), "/A?x=BB");
        assert_eq!(uri("/%7B%2fa%7d?x=%7b%2Fb%7D").unwrap(), "/A?x=BB");
    }

    #[test]
    fn uri_values_are_percent_encoded() {
        assert_eq!(uri("/s?q={/q}").unwrap(), "/s?q=a%20b%2Fc%26d%3D~e");
        let r = MapResolver::default().value("v", b"\x00\xff-._~Az9");
        assert_eq!(substitute_uri("{/v}", &r).unwrap(), "%00%FF-._~Az9");
    }

    #[test]
    fn uri_untouched_and_errors() {
        for s in [
            "/plain/path?x=1",
            "/%7B%2Fnope%7D",
            "/{/nope}",
            "/%7B%2F%7D",
            "/%7B%2Fa",
            "/%7B%2Fa%7",
            "/%7B%2Fa b%7D",
            "/{%2Fa}",
            "/%7B/a}",
            "/{/a%7D",
            "/%257B%252Fa%257D",
            "/%",
            "/%7",
            "/%7B%2",
            "/ünï/%C3%BC",
        ] {
            let out = uri(s).unwrap();
            assert!(matches!(out, Cow::Borrowed(_)), "{s:?}");
            assert_eq!(out, s);
        }
        assert_eq!(uri("/%7B%2Fsecret%7D").unwrap_err().name, "secret".to_owned());
        assert_eq!(uri("/%7b/secret%7D").unwrap_err().name, "secret".to_owned());
        assert_eq!(uri("/{/secret}").unwrap_err().name, "secret".to_owned());
        // Non-ASCII text around a replacement survives.
        assert_eq!(uri("/ü{/a}ü").unwrap(), "/üAü");
        let n65 = format!("/%7B%2F{}%7D", "a".repeat(65));
        assert_eq!(uri(&n65).unwrap(), n65);
    }
}
