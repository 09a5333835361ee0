//! One view of a routed request's path, decided before any token is loaded (invariant 8).
//!
//! Servers disagree about what a path means. nginx decodes `%2F` before matching locations,
//! Node's WHATWG URL reads `\` as `/`, Tomcat and Jetty drop `;parameters` from segments (so
//! `..;` is `..`), some stacks decode twice, and old ones accept overlong UTF-8 for `.` and
//! `/`. A token bound to `/v1` must not reach `/admin` under any of those readings, so:
//!
//! - Routes are matched on the [`match_view`]: percent-encoded *unreserved* characters
//!   decoded (RFC 3986 section 6.2.2.2, which every server agrees on), nothing else changed.
//!   That same text is what a routed request sends upstream.
//! - [`check_routed`] then reads the path the most aggressive way any common server does
//!   (decode repeatedly, `\` as `/`, fullwidth look-alikes as ASCII, `;params` dropped,
//!   repeated slashes merged). If that reading has a `.` or `..` segment, overlong UTF-8, or
//!   no longer starts with the route's prefix, the request is refused.
//!
//! Query strings are not paths and are never examined here.

use std::borrow::Cow;

/// How many rounds of percent-decoding the strict reading applies (double encoding is a
/// known bypass; nothing decodes three times in practice, one more round is cheap).
const DECODE_ROUNDS: usize = 3;

/// Why a routed path was refused. The text is safe to show: it never holds token values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRefusal {
    /// A `.` or `..` segment under some server's reading.
    DotSegment,
    /// Overlong UTF-8 (`%C0%AE` for `.`), which lenient decoders turn into ASCII.
    Overlong,
    /// Under some server's reading the path is outside the route's prefix.
    OutsidePrefix,
}

impl std::fmt::Display for PathRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathRefusal::DotSegment => {
                "has a '.' or '..' segment once decoded ('%2e', '%2f', '\\' and ';' parameters included)"
            }
            PathRefusal::Overlong => "holds overlong UTF-8, which some servers decode to '.' or '/'",
            PathRefusal::OutsidePrefix => "leaves the route's path prefix once decoded",
        })
    }
}

/// The path routes are matched on and routed requests send: `%XX` escapes of unreserved
/// characters (`A-Z a-z 0-9 - . _ ~`) decoded, everything else byte for byte. Borrowed when
/// nothing changes (the usual case). `path` must be the path alone, without the query.
pub fn match_view(path: &str) -> Cow<'_, str> {
    let bytes = path.as_bytes();
    let Some(first) = memchr::memchr(b'%', bytes) else {
        return Cow::Borrowed(path);
    };
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = first;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(byte) = hex_pair(bytes.get(i + 1..i + 3)) {
                if is_unreserved(byte) {
                    let buf = out.get_or_insert_with(|| Vec::with_capacity(bytes.len()));
                    buf.extend_from_slice(&bytes[copied..i]);
                    buf.push(byte);
                    copied = i + 3;
                    i += 3;
                    continue;
                }
            }
        }
        i += 1;
    }
    match out {
        None => Cow::Borrowed(path),
        Some(mut buf) => {
            buf.extend_from_slice(&bytes[copied..]);
            // Only ASCII bytes were substituted for ASCII escapes, so UTF-8 is preserved.
            Cow::Owned(String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
        }
    }
}

/// Checks a routed path (the [`match_view`], without the query) against its route's
/// `prefix` under the strictest common reading.
pub fn check_routed(prefix: &str, path: &str) -> Result<(), PathRefusal> {
    // Fast path: nothing that any server decodes or reinterprets, and no dots.
    if !path.bytes().any(|b| matches!(b, b'%' | b'.' | b'\\' | b';') || b >= 0x80) {
        return Ok(());
    }
    let decoded = strict_decode(path.as_bytes());
    if has_overlong(&decoded) {
        return Err(PathRefusal::Overlong);
    }
    let segments = strict_segments(&decoded);
    if segments.iter().any(|s| is_dot_segment(s)) {
        return Err(PathRefusal::DotSegment);
    }
    let prefix_segments: Vec<&[u8]> = prefix.as_bytes().split(|&b| b == b'/').filter(|s| !s.is_empty()).collect();
    let inside = segments.len() >= prefix_segments.len()
        && prefix_segments.iter().zip(&segments).all(|(want, have)| *want == have.as_slice());
    if inside {
        Ok(())
    } else {
        Err(PathRefusal::OutsidePrefix)
    }
}

/// Percent-decodes up to [`DECODE_ROUNDS`] times and maps the look-alikes some servers fold
/// to ASCII (fullwidth `.` `/` `\`, one-dot leader).
fn strict_decode(path: &[u8]) -> Vec<u8> {
    let mut current = path.to_vec();
    for _ in 0..DECODE_ROUNDS {
        if memchr::memchr(b'%', &current).is_none() {
            break;
        }
        current = percent_decode(&current);
    }
    fold_lookalikes(&current)
}

fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            if let Some(byte) = hex_pair(input.get(i + 1..i + 3)) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

/// Replaces U+FF0E (fullwidth full stop), U+2024 (one dot leader), U+FF0F (fullwidth
/// solidus) and U+FF3C (fullwidth reverse solidus) with their ASCII forms.
fn fold_lookalikes(input: &[u8]) -> Vec<u8> {
    const FOLDS: [(&[u8], u8); 4] =
        [(b"\xEF\xBC\x8E", b'.'), (b"\xE2\x80\xA4", b'.'), (b"\xEF\xBC\x8F", b'/'), (b"\xEF\xBC\xBC", b'\\')];
    if !input.iter().any(|&b| b >= 0x80) {
        return input.to_vec();
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    'outer: while i < input.len() {
        for (from, to) in FOLDS {
            if input[i..].starts_with(from) {
                out.push(to);
                i += from.len();
                continue 'outer;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

/// Segments with `\` read as `/`, `;parameters` dropped and empty segments (repeated
/// slashes) removed.
fn strict_segments(decoded: &[u8]) -> Vec<Vec<u8>> {
    decoded
        .split(|&b| b == b'/' || b == b'\\')
        .map(|seg| match memchr::memchr(b';', seg) {
            Some(at) => &seg[..at],
            None => seg,
        })
        .filter(|seg| !seg.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// `.` and `..`, also with trailing spaces or dots stripped the way Windows servers do.
fn is_dot_segment(seg: &[u8]) -> bool {
    // "." and ".." exactly, plus "..." and longer (Windows strips trailing dots down to "..").
    let trimmed = trim_end(seg, |b| b == b' ' || b == b'\t');
    !trimmed.is_empty() && trimmed.iter().all(|&b| b == b'.')
}

fn trim_end(mut s: &[u8], strip: impl Fn(u8) -> bool) -> &[u8] {
    while let Some((&last, rest)) = s.split_last() {
        if !strip(last) {
            break;
        }
        s = rest;
    }
    s
}

/// Overlong encodings: `C0`/`C1` lead bytes, and 3- or 4-byte forms of smaller code points.
fn has_overlong(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| {
        matches!(w[0], 0xC0 | 0xC1)
            || (w[0] == 0xE0 && (0x80..=0x9F).contains(&w[1]))
            || (w[0] == 0xF0 && (0x80..=0x8F).contains(&w[1]))
    }) || bytes.last().is_some_and(|&b| matches!(b, 0xC0 | 0xC1))
}

fn hex_pair(pair: Option<&[u8]>) -> Option<u8> {
    let pair = pair?;
    let hi = (pair[0] as char).to_digit(16)?;
    let lo = (pair[1] as char).to_digit(16)?;
    u8::try_from(hi * 16 + lo).ok()
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_view_decodes_only_unreserved() {
        assert_eq!(match_view("/v1/x"), "/v1/x");
        assert!(matches!(match_view("/v1/x"), Cow::Borrowed(_)));
        assert_eq!(match_view("/%76%31/a%2Fb"), "/v1/a%2Fb");
        assert_eq!(match_view("/%7e%2e%5C%3b"), "/~.%5C%3b");
        assert_eq!(match_view("/%zz%4"), "/%zz%4");
        assert_eq!(match_view("/ü%41"), "/üA");
    }

    #[test]
    fn traversal_in_every_spelling_is_refused() {
        for path in [
            "/v1/../admin",
            "/v1/..%2Fadmin",
            "/v1/..%2fadmin",
            "/v1/%2e%2e%2fadmin",
            "/v1/.%2E%2Fadmin",
            "/v1/x/..%2F..%2Fadmin",
            "/v1/..\\admin",
            "/v1/x\\..\\..\\admin",
            "/v1/..%5Cadmin",
            "/v1/..;/admin",
            "/v1/%2e%2e;x/admin",
            "/v1/%252e%252e%252fadmin",
            "/v1/%25252e%25252e/admin",
            "/v1/%EF%BC%8E%EF%BC%8E/admin",
            "/v1/..%20/admin",
            "/v1/...",
            "/v1/.",
        ] {
            assert_eq!(check_routed("/v1", &match_view(path)), Err(PathRefusal::DotSegment), "{path}");
        }
        assert_eq!(check_routed("/v1", "/v1/%c0%ae%c0%ae%c0%afadmin"), Err(PathRefusal::Overlong));
        assert_eq!(check_routed("/v1", "/v1/%e0%80%ae"), Err(PathRefusal::Overlong));
    }

    #[test]
    fn paths_inside_the_prefix_pass() {
        for path in ["/v1", "/v1/", "/v1/x", "/v1/group%2Fproject", "/v1/a.b/c", "/v1//x", "/v1/..x/.a", "/v1/ü"] {
            assert_eq!(check_routed("/v1", path), Ok(()), "{path}");
        }
        assert_eq!(check_routed("/", "/a%2Fb"), Ok(()));
        assert_eq!(check_routed("", "/anything"), Ok(()));
    }

    #[test]
    fn decoding_that_changes_the_prefix_is_refused() {
        // A prefix with a ';' parameter that Tomcat would drop.
        assert_eq!(check_routed("/v1/users", "/v1/users;x"), Ok(()));
        assert_eq!(check_routed("/v1/users", "/v1/us%3Bers/x"), Err(PathRefusal::OutsidePrefix));
    }
}
