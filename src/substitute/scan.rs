//! Substitution over a whole buffer (header values, the request target, a body read whole),
//! in any [`Syntax`]: the grammar says where placeholders are, the syntax's escaping says
//! what replaces them.

use std::borrow::Cow;

use bytes::Bytes;

use crate::substitute::escape::{escaped_len, write_escaped};
use crate::substitute::grammar::Placeholder;
use crate::substitute::{RefusalKind, Refused, Resolution, Resolve, Syntax};

/// All complete raw `{/NAME}` placeholders in `hay`, in order.
pub(crate) fn placeholders(hay: &[u8]) -> impl Iterator<Item = Placeholder<'_>> + '_ {
    Syntax::Plain.grammar().placeholders(hay)
}

/// Asks the resolver about `name`: `Some(value)` to replace, `None` to keep the text.
#[inline]
pub(crate) fn lookup(resolver: &dyn Resolve, name: &str) -> Result<Option<Bytes>, Refused> {
    match resolver.resolve(name) {
        Resolution::Value(v) => Ok(Some(v)),
        Resolution::Unknown => Ok(None),
        Resolution::Forbidden => Err(Refused { name: name.to_owned(), kind: RefusalKind::NotBound }),
        Resolution::Unavailable => Err(Refused { name: name.to_owned(), kind: RefusalKind::Unavailable }),
        Resolution::Refused(kind) => Err(Refused { name: name.to_owned(), kind }),
    }
}

/// Replaces placeholders in a header value.
///
/// Header values are small and complete, so this works on the whole slice. It
/// returns `Cow::Borrowed` (no allocation) when nothing was replaced, which is the
/// case for almost every header. Unknown names stay as written.
///
/// # Errors
///
/// [`Refused`] for the first placeholder naming a token the route does not bind,
/// so the caller can refuse the request.
pub fn substitute<'a>(input: &'a [u8], resolver: &dyn Resolve) -> Result<Cow<'a, [u8]>, Refused> {
    without_limit(substitute_within(input, resolver, usize::MAX))
}

/// Like [`substitute`], but stops with [`Bounded::TooLong`] as soon as the result would
/// exceed `max_len` bytes, so a head full of placeholders never allocates its amplified size.
pub fn substitute_within<'a>(
    input: &'a [u8],
    resolver: &dyn Resolve,
    max_len: usize,
) -> Result<Cow<'a, [u8]>, Bounded> {
    substitute_as(input, Syntax::Plain, resolver, max_len)
}

/// Replaces every placeholder spelled as `syntax` recognises it, escaping each value for
/// `syntax`, and stops with [`Bounded::TooLong`] once the result would exceed `max_len`.
/// A value that cannot be written in `syntax` (not UTF-8, in JSON) leaves its placeholder as
/// written. Returns `Cow::Borrowed` when nothing was replaced.
///
/// # Errors
///
/// [`Bounded::Refused`] for the first placeholder, in any spelling, naming a token the request
/// may not use; [`Bounded::TooLong`] as above.
pub fn substitute_as<'a>(
    input: &'a [u8],
    syntax: Syntax,
    resolver: &dyn Resolve,
    max_len: usize,
) -> Result<Cow<'a, [u8]>, Bounded> {
    let grammar = syntax.grammar();
    if !grammar.may_contain(input) {
        return Ok(Cow::Borrowed(input));
    }
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    for ph in grammar.placeholders(input) {
        let Some(value) = lookup(resolver, ph.name)? else { continue };
        let grown = out.as_ref().map_or(0, Vec::len) + (ph.start - copied) + escaped_len(&value, syntax);
        if grown.saturating_add(input.len() - ph.end) > max_len {
            return Err(Bounded::TooLong);
        }
        let buf = out.get_or_insert_with(|| Vec::with_capacity(input.len() + value.len()));
        buf.extend_from_slice(&input[copied..ph.start]);
        if !write_escaped(&value, syntax, buf) {
            // Cannot be written here: the placeholder stays as written.
            buf.extend_from_slice(&input[ph.start..ph.end]);
        }
        copied = ph.end;
    }
    Ok(match out {
        None => Cow::Borrowed(input),
        Some(mut buf) => {
            buf.extend_from_slice(&input[copied..]);
            Cow::Owned(buf)
        }
    })
}

/// Why a bounded substitution stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bounded {
    /// A placeholder the request may not use.
    Refused(Refused),
    /// The result would be longer than allowed.
    TooLong,
}

impl From<Refused> for Bounded {
    fn from(r: Refused) -> Self {
        Bounded::Refused(r)
    }
}

/// The result of a substitution bounded by `usize::MAX`, which no result can exceed (the
/// check saturates), so only a refusal can come back.
fn without_limit<T>(result: Result<T, Bounded>) -> Result<T, Refused> {
    result.map_err(|e| match e {
        Bounded::Refused(r) => r,
        Bounded::TooLong => unreachable!("no substitution result is longer than usize::MAX bytes"),
    })
}

/// Replaces placeholders in a request target (path and query).
///
/// Clients and URL builders percent-encode `{` and often `/`, so besides the raw
/// `{/NAME}` this also recognises `%7B%2FNAME%7D` and `%7B/NAME%7D` with hex digits in
/// either case ([`Syntax::Uri`]). Inserted values are percent-encoded (everything but
/// RFC 3986 unreserved bytes becomes `%XX`) so the result is still a valid target whatever
/// the token holds. Returns `Cow::Borrowed` when nothing was replaced.
///
/// # Errors
///
/// [`Refused`] for the first placeholder (in any spelling) naming a token the
/// route does not bind.
pub fn substitute_uri<'a>(input: &'a str, resolver: &dyn Resolve) -> Result<Cow<'a, str>, Refused> {
    without_limit(substitute_uri_within(input, resolver, usize::MAX))
}

/// Like [`substitute_uri`], but stops with [`Bounded::TooLong`] once the result would
/// exceed `max_len` bytes.
pub fn substitute_uri_within<'a>(
    input: &'a str,
    resolver: &dyn Resolve,
    max_len: usize,
) -> Result<Cow<'a, str>, Bounded> {
    Ok(match substitute_as(input.as_bytes(), Syntax::Uri, resolver, max_len)? {
        Cow::Borrowed(_) => Cow::Borrowed(input),
        // Text was cut only at ASCII bytes and only ASCII was inserted, so this is UTF-8.
        Cow::Owned(bytes) => {
            Cow::Owned(String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::substitute::tests::MapResolver;

    fn resolver() -> MapResolver {
        MapResolver::default().value("a", b"A").value("v", "a\"b&c ü".as_bytes()).forbidden("no")
    }

    fn sub(input: &str, syntax: Syntax) -> Result<String, Bounded> {
        substitute_as(input.as_bytes(), syntax, &resolver(), usize::MAX)
            .map(|c| String::from_utf8(c.into_owned()).unwrap())
    }

    #[test]
    fn each_context_escapes_its_own_way() {
        assert_eq!(sub("x={/v}", Syntax::Plain).unwrap(), "x=a\"b&c ü");
        assert_eq!(sub("x=%7B%2Fv%7D", Syntax::Form).unwrap(), "x=a%22b%26c%20%C3%BC");
        assert_eq!(sub("x={/v}", Syntax::Form).unwrap(), "x=a%22b%26c%20%C3%BC");
        assert_eq!(sub(r#"{"x":"{\/v}"}"#, Syntax::Json).unwrap(), r#"{"x":"a\"b&c ü"}"#);
        assert_eq!(sub(r#"{"x":"{/v}"}"#, Syntax::Json).unwrap(), r#"{"x":"a\"b&c ü"}"#);
    }

    #[test]
    fn refusals_in_every_spelling_of_every_context() {
        for (syntax, spellings) in [
            (Syntax::Plain, &["{/no}"][..]),
            (Syntax::Uri, &["{/no}", "%7B%2Fno%7D", "%7b/no%7d", "%7B/no%7D"][..]),
            (Syntax::Form, &["{/no}", "%7B%2Fno%7D", "%7b%2fno%7D"][..]),
            (Syntax::Json, &["{/no}", "{\\/no}"][..]),
        ] {
            for s in spellings {
                let err = sub(&format!("k={s}&a={{/a}}"), syntax).unwrap_err();
                assert_eq!(err, Bounded::Refused(Refused { name: "no".into(), kind: RefusalKind::NotBound }), "{s}");
            }
        }
    }

    #[test]
    fn a_value_json_cannot_hold_leaves_the_placeholder() {
        let r = MapResolver::default().value("bin", b"\xff").value("a", b"A");
        let out = substitute_as(b"[\"{/bin}\", \"{/a}\"]", Syntax::Json, &r, usize::MAX).unwrap();
        assert_eq!(&*out, b"[\"{/bin}\", \"A\"]");
    }

    #[test]
    fn the_bound_counts_escaped_values() {
        // `v` is 8 bytes, 18 once percent-encoded.
        assert_eq!(substitute_as(b"{/v}", Syntax::Uri, &resolver(), 17), Err(Bounded::TooLong));
        assert_eq!(substitute_as(b"{/v}", Syntax::Uri, &resolver(), 18).unwrap().len(), 18);
    }
}
