//! Placeholder recognition on byte slices, shared by the header, URI and body paths.
//!
//! The grammar has a property the streaming code relies on: after its opening `{`
//! a placeholder contains no further `{`. So placeholders never overlap, every `{/`
//! can be judged on its own, and at the end of a buffer only the *last* `{` can
//! start an unfinished placeholder.

use std::borrow::Cow;
use std::sync::OnceLock;

use bytes::Bytes;
use memchr::memmem::Finder;

use crate::substitute::{RefusalKind, Refused, Resolution, Resolve};

/// Longest allowed placeholder name.
pub(crate) const MAX_NAME: usize = 64;
/// Longest possible unfinished placeholder (`{/` + 64 name bytes, no `}` yet): the
/// most a stream ever has to hold back.
pub(crate) const MAX_CARRY: usize = MAX_NAME + 2;

/// Bytes allowed in a placeholder name: `[A-Za-z0-9_.-]`. A table keeps the check
/// branch-free on the short name runs we inspect.
static NAME_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-';
        b += 1;
    }
    table
};

/// Whether `b` may appear in a placeholder name.
#[inline]
pub(crate) fn is_name_byte(b: u8) -> bool {
    NAME_BYTE[usize::from(b)]
}

/// The `{/` searcher, built once: constructing a SIMD searcher per header value or
/// per body would cost more than scanning a typical header.
fn opener() -> &'static Finder<'static> {
    static OPENER: OnceLock<Finder<'static>> = OnceLock::new();
    OPENER.get_or_init(|| Finder::new(b"{/"))
}

/// How the text after a `{/` continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A full placeholder ending just before `end` (exclusive index past the `}`).
    Complete { end: usize },
    /// Valid so far but the buffer ends before the closing `}`.
    Unfinished,
    /// Cannot become a placeholder.
    Invalid,
}

/// Classifies the placeholder candidate starting at `at`, where `hay[at..]` begins
/// with `{/`. Looks at no more than 65 bytes past the opener.
pub(crate) fn shape_at(hay: &[u8], at: usize) -> Shape {
    let name_start = at + 2;
    let limit = hay.len().min(name_start + MAX_NAME + 1);
    let window = hay.get(name_start..limit).unwrap_or_default();
    match window.iter().position(|&b| !is_name_byte(b)) {
        Some(0) => Shape::Invalid,
        Some(n) if window[n] == b'}' => Shape::Complete { end: name_start + n + 1 },
        Some(_) => Shape::Invalid,
        None if window.len() > MAX_NAME => Shape::Invalid,
        None => Shape::Unfinished,
    }
}

/// One complete placeholder found in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placeholder<'a> {
    /// Index of the `{`.
    pub(crate) start: usize,
    /// Index just past the `}`.
    pub(crate) end: usize,
    /// The validated name.
    pub(crate) name: &'a str,
}

/// All complete placeholders in `hay`, in order. Runs at `memmem` speed between
/// candidates; unfinished ones at the end of `hay` are not reported.
pub(crate) fn placeholders(hay: &[u8]) -> impl Iterator<Item = Placeholder<'_>> + '_ {
    opener().find_iter(hay).filter_map(move |at| match shape_at(hay, at) {
        Shape::Complete { end } => Some(Placeholder {
            start: at,
            end,
            // Name bytes are ASCII, so this never fails; treat failure as text.
            name: std::str::from_utf8(hay.get(at + 2..end - 1)?).ok()?,
        }),
        Shape::Unfinished | Shape::Invalid => None,
    })
}

/// Index where an unfinished placeholder (`{`, `{/` or `{/` + up to 64 name bytes)
/// begins at the very end of `hay`, or `hay.len()` if there is none. Only the last
/// 66 bytes are inspected, with one `memrchr`.
pub(crate) fn unfinished_tail(hay: &[u8]) -> usize {
    let from = hay.len().saturating_sub(MAX_CARRY);
    let Some(i) = memchr::memrchr(b'{', &hay[from..]) else {
        return hay.len();
    };
    let at = from + i;
    let unfinished = match hay.get(at + 1) {
        None => true,
        Some(b'/') => shape_at(hay, at) == Shape::Unfinished,
        Some(_) => false,
    };
    if unfinished {
        at
    } else {
        hay.len()
    }
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
    // Header values are short: one memchr for `{` settles almost all of them, cheaper than
    // setting up a substring search.
    if memchr::memchr(b'{', input).is_none() {
        return Ok(Cow::Borrowed(input));
    }
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    for ph in placeholders(input) {
        if let Some(value) = lookup(resolver, ph.name)? {
            let grown = out.as_ref().map_or(0, Vec::len) + (ph.start - copied) + value.len();
            if grown.saturating_add(input.len() - ph.end) > max_len {
                return Err(Bounded::TooLong);
            }
            let buf = out.get_or_insert_with(|| Vec::with_capacity(input.len() + value.len()));
            buf.extend_from_slice(&input[copied..ph.start]);
            buf.extend_from_slice(&value);
            copied = ph.end;
        }
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
/// Clients and URL builders often percent-encode `{` and `/`, so besides the raw
/// `{/NAME}` this also recognises `%7B%2FNAME%7D` with hex digits in either case.
/// Inserted values are percent-encoded (everything but RFC 3986 unreserved bytes
/// becomes `%XX`) so the result is still a valid target whatever the token holds.
/// Returns `Cow::Borrowed` when nothing was replaced.
///
/// # Errors
///
/// [`Refused`] for the first placeholder (in either form) naming a token the
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
    let bytes = input.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut pos = 0;
    while let Some(i) = memchr::memchr2(b'{', b'%', &bytes[pos..]) {
        let at = pos + i;
        let found = if bytes[at] == b'{' { raw_at(bytes, at) } else { encoded_at(bytes, at) };
        let Some((end, name)) = found else {
            pos = at + 1;
            continue;
        };
        if let Some(value) = lookup(resolver, name)? {
            // Worst case every byte of the value is percent-encoded.
            let grown = out.as_ref().map_or(0, String::len) + (at - copied) + encoded_len(&value);
            if grown.saturating_add(input.len() - end) > max_len {
                return Err(Bounded::TooLong);
            }
            let buf = out.get_or_insert_with(|| String::with_capacity(input.len() + 3 * value.len()));
            // `copied` and `at` sit on ASCII bytes, so both are char boundaries.
            buf.push_str(&input[copied..at]);
            percent_encode_into(&value, buf);
            copied = end;
        }
        pos = end;
    }
    Ok(match out {
        None => Cow::Borrowed(input),
        Some(mut buf) => {
            buf.push_str(&input[copied..]);
            Cow::Owned(buf)
        }
    })
}

/// RFC 3986 unreserved bytes, which need no percent-encoding anywhere in a URI.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The length of `value` once percent-encoded by [`percent_encode_into`].
fn encoded_len(value: &[u8]) -> usize {
    value.iter().map(|&b| if is_unreserved(b) { 1 } else { 3 }).sum()
}

/// A raw `{/NAME}` at `at` (where `bytes[at] == b'{'`): end index and name.
fn raw_at(bytes: &[u8], at: usize) -> Option<(usize, &str)> {
    if bytes.get(at + 1) != Some(&b'/') {
        return None;
    }
    match shape_at(bytes, at) {
        Shape::Complete { end } => Some((end, std::str::from_utf8(&bytes[at + 2..end - 1]).ok()?)),
        Shape::Unfinished | Shape::Invalid => None,
    }
}

/// An encoded `%7B%2FNAME%7D` at `at` (where `bytes[at] == b'%'`): end index and name.
fn encoded_at(bytes: &[u8], at: usize) -> Option<(usize, &str)> {
    const OPEN: &[u8] = b"%7B%2F";
    const CLOSE: &[u8] = b"%7D";
    let rest = bytes.get(at..)?;
    if !rest.get(..OPEN.len())?.eq_ignore_ascii_case(OPEN) {
        return None;
    }
    let after_open = &rest[OPEN.len()..];
    let window = &after_open[..after_open.len().min(MAX_NAME + 1)];
    let n = window.iter().position(|&b| !is_name_byte(b))?;
    if n == 0 || !after_open[n..].get(..CLOSE.len())?.eq_ignore_ascii_case(CLOSE) {
        return None;
    }
    let name = std::str::from_utf8(&after_open[..n]).ok()?;
    Some((at + OPEN.len() + n + CLOSE.len(), name))
}

/// Appends `value` to `out`, keeping RFC 3986 unreserved bytes and `%XX`-encoding
/// everything else (upper-case hex, as the RFC recommends).
fn percent_encode_into(value: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let unreserved = is_unreserved;
    // Runs of unreserved bytes (all of a JWT) are copied at once.
    let mut rest = value;
    while !rest.is_empty() {
        let run = rest.iter().position(|&b| !unreserved(b)).unwrap_or(rest.len());
        let (plain, tail) = rest.split_at(run);
        // Unreserved bytes are ASCII, so this never fails.
        out.push_str(std::str::from_utf8(plain).unwrap_or_default());
        if let Some((&b, after)) = tail.split_first() {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
            rest = after;
        } else {
            rest = tail;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_bytes() {
        for b in 0..=255u8 {
            let expected = b.is_ascii_alphanumeric() || b"_.-".contains(&b);
            assert_eq!(is_name_byte(b), expected, "byte {b}");
        }
    }

    #[test]
    fn shapes() {
        assert_eq!(shape_at(b"{/a}", 0), Shape::Complete { end: 4 });
        assert_eq!(shape_at(b"xx{/ab}yy", 2), Shape::Complete { end: 7 });
        assert_eq!(shape_at(b"{/", 0), Shape::Unfinished);
        assert_eq!(shape_at(b"{/abc", 0), Shape::Unfinished);
        assert_eq!(shape_at(b"{/}", 0), Shape::Invalid);
        assert_eq!(shape_at(b"{/a b}", 0), Shape::Invalid);
        assert_eq!(shape_at(b"{/a{", 0), Shape::Invalid);
        let n64 = format!("{{/{}", "n".repeat(64));
        let n65 = format!("{{/{}", "n".repeat(65));
        assert_eq!(shape_at(n64.as_bytes(), 0), Shape::Unfinished);
        assert_eq!(shape_at(n65.as_bytes(), 0), Shape::Invalid);
        assert_eq!(shape_at(format!("{n64}}}").as_bytes(), 0), Shape::Complete { end: 67 });
        assert_eq!(shape_at(format!("{n65}}}").as_bytes(), 0), Shape::Invalid);
    }

    #[test]
    fn placeholder_iteration() {
        let hay = b"{/a}{{/b}}{/}{/c d}{/e";
        let found: Vec<_> = placeholders(hay).map(|p| (p.start, p.end, p.name)).collect();
        assert_eq!(found, vec![(0, 4, "a"), (5, 9, "b")]);
    }

    #[test]
    fn unfinished_tails() {
        assert_eq!(unfinished_tail(b""), 0);
        assert_eq!(unfinished_tail(b"abc"), 3);
        assert_eq!(unfinished_tail(b"abc{"), 3);
        assert_eq!(unfinished_tail(b"abc{/"), 3);
        assert_eq!(unfinished_tail(b"abc{/na.me"), 3);
        assert_eq!(unfinished_tail(b"abc{/name}"), 10);
        assert_eq!(unfinished_tail(b"abc{x"), 5);
        assert_eq!(unfinished_tail(b"{/a b"), 5);
        assert_eq!(unfinished_tail(b"{/a{"), 3);
        let n64 = format!("..{{/{}", "n".repeat(64));
        assert_eq!(unfinished_tail(n64.as_bytes()), 2);
        let n65 = format!("..{{/{}", "n".repeat(65));
        assert_eq!(unfinished_tail(n65.as_bytes()), n65.len());
    }

    #[test]
    fn percent_encoding() {
        let mut s = String::new();
        percent_encode_into(b"aZ09-._~ /%{}\x7f\x80", &mut s);
        assert_eq!(s, "aZ09-._~%20%2F%25%7B%7D%7F%80");
    }
}
