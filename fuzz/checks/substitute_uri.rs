// Shared by fuzz/fuzz_targets/substitute_uri.rs and tests/e2e/security/fuzz_replay.rs (via
// `include!`), so the checked-in corpus is replayed on stable by `cargo test`.
//
// `substitute_uri` on arbitrary text:
// - never panics, and equals a naive reference: raw `{/NAME}`, `%7B%2FNAME%7D` and
//   `%7B/NAME%7D` (hex in either case) are placeholders, values are inserted with every byte but RFC 3986
//   unreserved ones `%XX`-encoded, refusals name the first refused placeholder;
// - when the input is a valid `http::uri::PathAndQuery`, so is the output, and its path part
//   is only changed where placeholders were.
//
// Input: the request target as UTF-8 (other inputs are ignored).

use std::borrow::Cow;

use bytes::Bytes;
use token_sidecar::substitute::{substitute_uri, RefusalKind, Refused, Resolution, Resolve};

/// Values with reserved, non-ASCII, control and placeholder-like bytes, so an unencoded
/// insertion would break the target or smuggle a second placeholder in.
struct UriResolver;

impl Resolve for UriResolver {
    fn resolve(&self, name: &str) -> Resolution {
        let value: &'static [u8] = match name {
            "tok" | "auth_token" => b"eyJhbGciOiJIUzI1NiJ9.e30.c2ln-_~",
            "q" => b"a b/c&d=~e?f#g",
            "bin" => b"\x00\xff\r\n{/a}%7B%2Fa%7D%",
            "meta" => b"{/a}",
            "empty" => b"",
            "a" => b"A",
            "secret" | "forbidden" => return Resolution::Forbidden,
            "later" | "unavailable" => return Resolution::Unavailable,
            _ => return Resolution::Unknown,
        };
        Resolution::Value(Bytes::from_static(value))
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

fn encode(value: &[u8], out: &mut Vec<u8>) {
    for &b in value {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
}

/// A placeholder starting at `at`, raw or encoded: (length, name).
fn placeholder_at(input: &[u8], at: usize) -> Option<(usize, &str)> {
    let rest = &input[at..];
    let (open, close): (usize, &[u8]) = if rest.starts_with(b"{/") {
        (2, b"}")
    } else if rest.len() >= 6 && rest[..6].eq_ignore_ascii_case(b"%7B%2F") {
        (6, b"%7D")
    } else if rest.len() >= 4 && rest[..4].eq_ignore_ascii_case(b"%7B/") {
        (4, b"%7D")
    } else {
        return None;
    };
    let name_len = rest[open..].iter().take_while(|&&b| is_name_byte(b)).count();
    let after = &rest[open + name_len..];
    if !(1..=64).contains(&name_len) || after.len() < close.len() || !after[..close.len()].eq_ignore_ascii_case(close) {
        return None;
    }
    let name = std::str::from_utf8(&rest[open..open + name_len]).ok()?;
    Some((open + name_len + close.len(), name))
}

fn reference(input: &str, resolver: &dyn Resolve) -> Result<String, Refused> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some((len, name)) = placeholder_at(bytes, i) {
            match resolver.resolve(name) {
                Resolution::Value(v) => {
                    encode(&v, &mut out);
                    i += len;
                    continue;
                }
                Resolution::Unknown => {
                    // Unknown: the whole placeholder is text; it holds no other opener.
                    out.extend_from_slice(&bytes[i..i + len]);
                    i += len;
                    continue;
                }
                Resolution::Forbidden => {
                    return Err(Refused { name: name.to_owned(), kind: RefusalKind::NotBound });
                }
                Resolution::Unavailable => {
                    return Err(Refused { name: name.to_owned(), kind: RefusalKind::Unavailable });
                }
                Resolution::Refused(kind) => return Err(Refused { name: name.to_owned(), kind }),
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Ok(String::from_utf8(out).expect("only ASCII was inserted"))
}

pub fn check(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let resolver = UriResolver;
    let got = substitute_uri(input, &resolver);
    let want = reference(input, &resolver);
    assert_eq!(got.as_deref().map_err(Clone::clone), want.as_deref().map_err(Clone::clone), "input {input:?}");
    let Ok(out) = got else { return };
    if matches!(out, Cow::Borrowed(_)) {
        assert_eq!(out, input, "borrowed but changed");
    }
    if let Ok(before) = http::uri::PathAndQuery::try_from(input) {
        let after = http::uri::PathAndQuery::try_from(out.as_ref())
            .unwrap_or_else(|e| panic!("{input:?} is a valid target but {out:?} is not: {e}"));
        if before.as_str() == input {
            assert_eq!(after.as_str(), out, "the output does not parse back to itself");
        }
        // Encoded values never add a `?` or `#`: the query starts where it did, shifted only by
        // what was replaced before it.
        assert_eq!(before.query().is_some(), after.query().is_some(), "a value opened or closed a query");
    }
}
