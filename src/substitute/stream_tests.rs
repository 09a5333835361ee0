//! Streaming in every syntax: a body rewritten chunk by chunk must equal the same body
//! rewritten whole, for every spelling, whatever the chunking, with the carry bounded.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use crate::substitute::grammar::MAX_CARRY;
use crate::substitute::tests::MapResolver;
use crate::substitute::{substitute_as, BodySubstituter, Bounded, Refused, Resolve, Syntax};

const SYNTAXES: [Syntax; 4] = [Syntax::Plain, Syntax::Uri, Syntax::Form, Syntax::Json];

/// Values that need escaping in every syntax but plain, one that JSON cannot hold, one that
/// looks like a placeholder (values are never rescanned), and refusals.
fn resolver() -> Arc<dyn Resolve> {
    Arc::new(
        MapResolver::default()
            .value("tok", b"eyJhbGciOiJIUzI1NiJ9.e30.c2ln")
            .value("a", b"A")
            .value("empty", b"")
            .value("hostile", "q\"u\\o&t=e+ %ü/".as_bytes())
            .value("bin", b"\xff\x00")
            .value("meta", b"%7B%2Fa%7D{\\/a}{/a}")
            .value(&"L".repeat(64), b"LONG")
            .forbidden("secret"),
    )
}

fn whole(body: &[u8], syntax: Syntax, r: &dyn Resolve) -> Result<Vec<u8>, Refused> {
    match substitute_as(body, syntax, r, usize::MAX) {
        Ok(out) => Ok(out.into_owned()),
        Err(Bounded::Refused(refused)) => Err(refused),
        Err(Bounded::TooLong) => unreachable!("unbounded"),
    }
}

fn stream(chunks: &[&[u8]], syntax: Syntax, r: Arc<dyn Resolve>) -> Result<Vec<u8>, Refused> {
    let mut s = BodySubstituter::with_syntax(r, syntax);
    let mut out = Vec::new();
    for c in chunks {
        s.push(Bytes::copy_from_slice(c), &mut out)?;
        assert!(s.carry_len() <= MAX_CARRY, "carry of {} bytes", s.carry_len());
    }
    s.finish(&mut out);
    assert_eq!(s.carry_len(), 0);
    assert!(out.iter().all(|b| !b.is_empty()), "empty piece emitted");
    Ok(out.concat())
}

/// Every spelling of `name`, recognised or not in a given syntax.
fn spellings(name: &str) -> [String; 6] {
    [
        format!("{{/{name}}}"),
        format!("%7B%2F{name}%7D"),
        format!("%7b/{name}%7d"),
        format!("%7B%2f{name}%7D"),
        format!("{{\\/{name}}}"),
        format!("%7B%2F{name}}}"),
    ]
}

#[test]
fn every_spelling_across_every_two_cuts() {
    let r = resolver();
    let mut body = String::from("{\"k\":\"");
    for name in ["tok", "hostile", "nope", "bin", "empty"] {
        for s in spellings(name) {
            body.push_str(&s);
            body.push('&');
        }
    }
    body.push_str("%7B%7B%2Fa%7D%7B%");
    let body = body.as_bytes();
    for syntax in SYNTAXES {
        let expected = whole(body, syntax, &*r).unwrap();
        for cut1 in (0..=body.len()).step_by(3) {
            for cut2 in cut1..=body.len() {
                let chunks = [&body[..cut1], &body[cut1..cut2], &body[cut2..]];
                assert_eq!(stream(&chunks, syntax, Arc::clone(&r)).unwrap(), expected, "{syntax:?} {cut1} {cut2}");
            }
        }
        let ones: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(stream(&ones, syntax, Arc::clone(&r)).unwrap(), expected, "{syntax:?} one byte at a time");
    }
}

#[test]
fn what_each_syntax_makes_of_each_spelling() {
    let r = resolver();
    let out = |syntax: Syntax, text: &str| String::from_utf8(whole(text.as_bytes(), syntax, &*r).unwrap()).unwrap();
    let all = spellings("hostile").join(" ");
    assert_eq!(
        out(Syntax::Plain, &all),
        "q\"u\\o&t=e+ %ü/ %7B%2Fhostile%7D %7b/hostile%7d %7B%2fhostile%7D {\\/hostile} %7B%2Fhostile}"
    );
    let encoded = "q%22u%5Co%26t%3De%2B%20%25%C3%BC%2F";
    let want = format!("{encoded} {encoded} {encoded} {encoded} {{\\/hostile}} %7B%2Fhostile}}");
    assert_eq!(out(Syntax::Uri, &all), want);
    assert_eq!(out(Syntax::Form, &all), want);
    let json = "q\\\"u\\\\o&t=e+ %ü/";
    assert_eq!(
        out(Syntax::Json, &all),
        format!("{json} %7B%2Fhostile%7D %7b/hostile%7d %7B%2fhostile%7D {json} %7B%2Fhostile}}")
    );
}

#[test]
fn a_refused_spelling_split_anywhere_is_refused() {
    for (syntax, spelling) in [
        (Syntax::Plain, "{/secret}"),
        (Syntax::Uri, "%7b%2Fsecret%7D"),
        (Syntax::Form, "%7B/secret%7d"),
        (Syntax::Form, "{/secret}"),
        (Syntax::Json, "{\\/secret}"),
    ] {
        let body = format!("lead {spelling} trail");
        for n in 1..body.len() {
            let parts: Vec<&[u8]> = body.as_bytes().chunks(n).collect();
            let err = stream(&parts, syntax, resolver()).unwrap_err();
            assert_eq!(err.name, "secret", "{syntax:?} {spelling} in chunks of {n}");
        }
    }
}

#[test]
fn untouched_chunks_are_forwarded_without_a_copy() {
    for syntax in SYNTAXES {
        let mut s = BodySubstituter::with_syntax(resolver(), syntax);
        let mut out = Vec::new();
        let chunk = Bytes::from(
            "{\"a\": {\"p\": \"/x/y\"}, \"f\": \"a%20b%7Cc%7D%2F\", \"e\": \"{\\\\ /\"} ".repeat(20).into_bytes(),
        );
        s.push(chunk.clone(), &mut out).unwrap();
        assert_eq!(out.len(), 1, "{syntax:?}");
        assert_eq!(out[0].as_ptr(), chunk.as_ptr(), "{syntax:?}");
        assert_eq!(out[0].len(), chunk.len());
    }
}

#[derive(Debug, Clone)]
enum Seg {
    Text(Vec<u8>),
    Placeholder(usize, String),
}

fn seg() -> impl Strategy<Value = Seg> {
    prop_oneof![
        4 => proptest::collection::vec(
            prop_oneof![
                Just(b'{'), Just(b'/'), Just(b'}'), Just(b'%'), Just(b'7'), Just(b'B'), Just(b'b'),
                Just(b'2'), Just(b'F'), Just(b'D'), Just(b'\\'), Just(b'a'), Just(b'L'), Just(b' '),
            ],
            0..12,
        )
        .prop_map(Seg::Text),
        4 => (0usize..6, prop_oneof![
            Just("tok".to_owned()),
            Just("a".to_owned()),
            Just("empty".to_owned()),
            Just("hostile".to_owned()),
            Just("bin".to_owned()),
            Just("meta".to_owned()),
            Just("secret".to_owned()),
            Just("L".repeat(64)),
            "[A-Za-z0-9_.-]{1,70}",
        ])
            .prop_map(|(spelling, name)| Seg::Placeholder(spelling, name)),
        1 => Just(Seg::Text(b"%7B%2Fa".to_vec())),
        1 => Just(Seg::Text(b"{\\/a".to_vec())),
    ]
}

fn splits() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![Just(vec![1]), proptest::collection::vec(1usize..100, 1..12)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn streaming_equals_whole_in_every_syntax(
        segs in proptest::collection::vec(seg(), 0..30),
        sizes in splits(),
        syntax in prop_oneof![Just(Syntax::Plain), Just(Syntax::Uri), Just(Syntax::Form), Just(Syntax::Json)],
    ) {
        let mut body = Vec::new();
        for s in &segs {
            match s {
                Seg::Text(t) => body.extend_from_slice(t),
                Seg::Placeholder(i, n) => body.extend_from_slice(spellings(n)[*i].as_bytes()),
            }
        }
        let mut chunks = Vec::new();
        let (mut pos, mut k) = (0, 0);
        while pos < body.len() {
            let n = sizes[k % sizes.len()].min(body.len() - pos);
            chunks.push(&body[pos..pos + n]);
            pos += n;
            k += 1;
        }
        let r = resolver();
        prop_assert_eq!(stream(&chunks, syntax, Arc::clone(&r)), whole(&body, syntax, &*r));
    }
}
