// Shared by fuzz/fuzz_targets/substitute_syntax.rs and tests/e2e/security/fuzz_replay.rs (via
// `include!`), so the checked-in corpus is replayed on stable by `cargo test`.
//
// Every placeholder spelling in every syntax (plain, URI, form, JSON):
// - `substitute_as` equals a naive reference of the grammar table: which spellings each syntax
//   recognises (raw `{/NAME}`; `%7B%2FNAME%7D` and `%7B/NAME%7D` in URI and form; `{\/NAME}` in
//   JSON), how values are escaped there (percent-encoded, JSON-escaped, a non-UTF-8 value left
//   out of JSON), and which refusal comes first;
// - `BodySubstituter::with_syntax` gives the same output (or refusal) whatever the chunking:
//   fuzz-chosen chunk lengths, one byte at a time, and (for short inputs) every single cut;
// - it never holds back more than 72 bytes, holds nothing after `finish`, and never emits an
//   empty piece.
//
// Input layout: byte 0 = s; the syntax is `s % 4` (plain, URI, form, JSON), then `(s / 4) % 8`
// chunk lengths (0..=255), then the body.

use std::sync::Arc;

use bytes::Bytes;
use token_sidecar::substitute::{
    substitute_as, Bounded, BodySubstituter, RefusalKind, Refused, Resolution, Resolve, Syntax,
};

/// Longest possible unfinished placeholder: `%7B%2F` + 64 name bytes + `%7`.
const MAX_CARRY: usize = 72;
const ALL_CUTS_UP_TO: usize = 300;
const LONG_NAME: &str = "LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL";

/// Values that need escaping everywhere but in plain text, one JSON cannot hold, and ones that
/// look like placeholders (values are never rescanned).
struct SyntaxResolver;

impl Resolve for SyntaxResolver {
    fn resolve(&self, name: &str) -> Resolution {
        let value: &'static [u8] = match name {
            "tok" | "auth_token" => b"eyJhbGciOiJIUzI1NiJ9.e30.c2ln",
            "hostile" => "q\"u\\o&t=e+ %\u{fc}/?#\n".as_bytes(),
            "bin" => b"\xff\x00{",
            "meta" => b"%7B%2Fa%7D{\\/a}{/a}",
            "a" => b"A",
            "empty" => b"",
            LONG_NAME => b"LONG",
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

/// The spellings (opener, closer) each syntax recognises: the README's table.
fn spellings(syntax: Syntax) -> &'static [(&'static [u8], &'static [u8])] {
    match syntax {
        Syntax::Plain => &[(b"{/", b"}")],
        Syntax::Uri | Syntax::Form => &[(b"{/", b"}"), (b"%7B%2F", b"%7D"), (b"%7B/", b"%7D")],
        Syntax::Json => &[(b"{/", b"}"), (b"{\\/", b"}")],
    }
}

fn starts_with_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.len() >= needle.len() && hay[..needle.len()].eq_ignore_ascii_case(needle)
}

/// A placeholder at the start of `rest`: (length, name).
fn placeholder_at(rest: &[u8], syntax: Syntax) -> Option<(usize, &str)> {
    for (open, close) in spellings(syntax) {
        if !starts_with_ci(rest, open) {
            continue;
        }
        let n = rest[open.len()..].iter().take_while(|&&b| is_name_byte(b)).count();
        if (1..=64).contains(&n) && starts_with_ci(&rest[open.len() + n..], close) {
            let name = std::str::from_utf8(&rest[open.len()..open.len() + n]).ok()?;
            return Some((open.len() + n + close.len(), name));
        }
    }
    None
}

/// `value` escaped for `syntax`; `None` if JSON cannot hold it.
fn escape(value: &[u8], syntax: Syntax) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match syntax {
        Syntax::Plain => out.extend_from_slice(value),
        Syntax::Uri | Syntax::Form => {
            for &b in value {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    out.push(b);
                } else {
                    out.extend_from_slice(format!("%{b:02X}").as_bytes());
                }
            }
        }
        Syntax::Json => {
            let text = std::str::from_utf8(value).ok()?;
            for c in text.chars() {
                match c {
                    '"' => out.extend_from_slice(b"\\\""),
                    '\\' => out.extend_from_slice(b"\\\\"),
                    '\n' => out.extend_from_slice(b"\\n"),
                    '\r' => out.extend_from_slice(b"\\r"),
                    '\t' => out.extend_from_slice(b"\\t"),
                    c if (c as u32) < 0x20 => out.extend_from_slice(format!("\\u{:04X}", c as u32).as_bytes()),
                    c => out.extend_from_slice(c.to_string().as_bytes()),
                }
            }
        }
    }
    Some(out)
}

fn reference(input: &[u8], syntax: Syntax, resolver: &dyn Resolve) -> Result<Vec<u8>, Refused> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if let Some((len, name)) = placeholder_at(&input[i..], syntax) {
            let written = match resolver.resolve(name) {
                Resolution::Value(v) => escape(&v, syntax),
                Resolution::Unknown => None,
                Resolution::Forbidden => return Err(Refused { name: name.to_owned(), kind: RefusalKind::NotBound }),
                Resolution::Unavailable => {
                    return Err(Refused { name: name.to_owned(), kind: RefusalKind::Unavailable })
                }
                Resolution::Refused(kind) => return Err(Refused { name: name.to_owned(), kind }),
            };
            out.extend_from_slice(written.as_deref().unwrap_or(&input[i..i + len]));
            i += len;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    Ok(out)
}

fn stream<'a>(chunks: impl IntoIterator<Item = &'a [u8]>, syntax: Syntax) -> Result<Vec<u8>, Refused> {
    let mut s = BodySubstituter::with_syntax(Arc::new(SyntaxResolver), syntax);
    let mut out = Vec::new();
    for chunk in chunks {
        let before = out.len();
        let pushed = s.push(Bytes::copy_from_slice(chunk), &mut out);
        assert!(s.carry_len() <= MAX_CARRY, "carry of {} bytes", s.carry_len());
        if pushed.is_err() {
            assert_eq!(out.len(), before, "a refused push appended output");
        }
        pushed?;
    }
    s.finish(&mut out);
    assert_eq!(s.carry_len(), 0, "bytes held back after finish");
    assert!(out.iter().all(|piece| !piece.is_empty()), "empty piece emitted");
    Ok(out.concat())
}

pub fn check(data: &[u8]) {
    let Some((&s, rest)) = data.split_first() else { return };
    let syntax = [Syntax::Plain, Syntax::Uri, Syntax::Form, Syntax::Json][usize::from(s % 4)];
    let k = usize::from((s / 4) % 8).min(rest.len());
    let (lengths, body) = rest.split_at(k);

    let expected = reference(body, syntax, &SyntaxResolver);
    let whole = match substitute_as(body, syntax, &SyntaxResolver, usize::MAX) {
        Ok(out) => Ok(out.into_owned()),
        Err(Bounded::Refused(r)) => Err(r),
        Err(Bounded::TooLong) => panic!("an unbounded substitution was too long"),
    };
    assert_eq!(whole, expected, "{syntax:?}: substitute_as disagrees with the reference");

    let mut chunks = Vec::new();
    let mut at = 0;
    for &len in lengths {
        let end = (at + usize::from(len)).min(body.len());
        chunks.push(&body[at..end]);
        at = end;
    }
    chunks.push(&body[at..]);
    assert_eq!(stream(chunks.iter().copied(), syntax), expected, "{syntax:?} chunks {lengths:?}");
    assert_eq!(stream(body.chunks(1), syntax), expected, "{syntax:?} one byte at a time");
    if body.len() <= ALL_CUTS_UP_TO {
        for cut in 0..=body.len() {
            let (a, b) = body.split_at(cut);
            assert_eq!(stream([a, b], syntax), expected, "{syntax:?} cut at {cut}");
        }
    }
}
