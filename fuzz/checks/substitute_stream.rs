// Shared by fuzz/fuzz_targets/substitute_stream.rs and tests/e2e/security/fuzz_replay.rs (via
// `include!`), so the checked-in corpus is replayed on stable by `cargo test`.
//
// The body scanner, fed the same input whole and in chunks:
// - `substitute` on the whole input equals a naive byte-by-byte reference of the grammar;
// - `BodySubstituter` gives the same output (or the same refusal) whatever the chunking:
//   fuzz-chosen chunk lengths, one byte at a time, and (for short inputs) every single cut;
// - it never holds back more than 66 bytes, holds nothing after `finish`, and never emits an
//   empty piece.
//
// Input layout: byte 0 = k; the next `k % 8` bytes are chunk lengths (0..=255; a 0 pushes an
// empty chunk); the rest is the body. What the lengths do not cover is the last chunk.

use std::sync::Arc;

use bytes::Bytes;
use token_sidecar::substitute::{substitute, BodySubstituter, RefusalKind, Refused, Resolution, Resolve};

/// Longest possible unfinished placeholder: `{/` + 64 name bytes.
const MAX_CARRY: usize = 66;
/// Inputs up to this size are also streamed with every single cut point.
const ALL_CUTS_UP_TO: usize = 300;

/// A few names of each kind. `meta`'s value looks like a placeholder (values are never rescanned),
/// and the 64-byte name is the longest allowed.
struct FuzzResolver;

const LONG_NAME: &str = "LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL";

impl Resolve for FuzzResolver {
    fn resolve(&self, name: &str) -> Resolution {
        match name {
            "tok" | "auth_token" => Resolution::Value(Bytes::from_static(b"eyJhbGciOiJIUzI1NiJ9.e30.c2ln")),
            "a" => Resolution::Value(Bytes::from_static(b"A")),
            "empty" => Resolution::Value(Bytes::new()),
            "meta" => Resolution::Value(Bytes::from_static(b"{/a}")),
            "brace" => Resolution::Value(Bytes::from_static(b"{")),
            LONG_NAME => Resolution::Value(Bytes::from_static(b"LONG")),
            "secret" | "forbidden" => Resolution::Forbidden,
            "later" | "unavailable" => Resolution::Unavailable,
            _ => Resolution::Unknown,
        }
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// The grammar, one byte at a time: `{/` + 1..=64 name bytes + `}`.
fn reference(input: &[u8], resolver: &dyn Resolve) -> Result<Vec<u8>, Refused> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i..].starts_with(b"{/") {
            let name_len = input[i + 2..].iter().take_while(|&&b| is_name_byte(b)).count();
            if (1..=64).contains(&name_len) && input.get(i + 2 + name_len) == Some(&b'}') {
                let name = std::str::from_utf8(&input[i + 2..i + 2 + name_len]).expect("name bytes are ASCII");
                match resolver.resolve(name) {
                    Resolution::Value(v) => {
                        out.extend_from_slice(&v);
                        i += name_len + 3;
                        continue;
                    }
                    Resolution::Unknown => {}
                    Resolution::Forbidden => {
                        return Err(Refused { name: name.to_owned(), kind: RefusalKind::NotBound });
                    }
                    Resolution::Unavailable => {
                        return Err(Refused { name: name.to_owned(), kind: RefusalKind::Unavailable });
                    }
                    Resolution::Refused(kind) => return Err(Refused { name: name.to_owned(), kind }),
                }
            }
        }
        out.push(input[i]);
        i += 1;
    }
    Ok(out)
}

/// Streams `chunks` through a fresh substituter, checking the carry bound after every push.
fn stream<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<u8>, Refused> {
    let mut s = BodySubstituter::new(Arc::new(FuzzResolver));
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
    let Some((&k, rest)) = data.split_first() else { return };
    let k = usize::from(k % 8).min(rest.len());
    let (lengths, body) = rest.split_at(k);

    let resolver = FuzzResolver;
    let expected = reference(body, &resolver);
    let whole = substitute(body, &resolver).map(|c| c.into_owned());
    assert_eq!(whole, expected, "substitute disagrees with the reference");

    // Fuzz-chosen chunking.
    let mut chunks = Vec::new();
    let mut at = 0;
    for &len in lengths {
        let end = (at + usize::from(len)).min(body.len());
        chunks.push(&body[at..end]);
        at = end;
    }
    chunks.push(&body[at..]);
    assert_eq!(stream(chunks.iter().copied()), expected, "chunks {:?}", lengths);

    // One byte at a time: the carry is exercised at every position.
    assert_eq!(stream(body.chunks(1)), expected, "one byte at a time");

    if body.len() <= ALL_CUTS_UP_TO {
        for cut in 0..=body.len() {
            let (a, b) = body.split_at(cut);
            assert_eq!(stream([a, b]), expected, "cut at {cut}");
        }
    }
}
