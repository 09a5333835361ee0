//! What a value becomes where it is inserted: the escaping each [`Syntax`] needs.
//!
//! A JWT (base64url and dots) needs no escaping anywhere, so for the usual token every
//! function here is a scan that finds nothing to do and hands the value back without a copy.
//! Static secrets and exchanged tokens can hold any byte, and written unescaped they would
//! break out of their place: a `&` ends a form field, a `"` ends a JSON string, a `/` or `?`
//! changes what a URI names.

use bytes::Bytes;

use crate::substitute::Syntax;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// RFC 3986 unreserved bytes, which need no percent-encoding anywhere in a URI or a form.
/// (Written without short-circuits, so a loop over many bytes can be vectorised.)
#[inline]
fn is_unreserved(b: u8) -> bool {
    let lower = b | 0x20;
    (lower.wrapping_sub(b'a') < 26)
        | (b.wrapping_sub(b'0') < 10)
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
}

/// Whether `b` must be escaped inside a JSON string (RFC 8259 section 7).
#[inline]
fn json_needs_escape(b: u8) -> bool {
    (b < 0x20) | (b == b'"') | (b == b'\\')
}

/// `value` as it must be written in `syntax`, or `None` when it cannot be written there at
/// all (a JSON string holds only UTF-8). Returns the same buffer, uncopied, when nothing
/// needs escaping.
pub(crate) fn escape(value: Bytes, syntax: Syntax) -> Option<Bytes> {
    if !needs_escape_remembered(&value, syntax)? {
        return Some(value);
    }
    let mut out = Vec::with_capacity(escaped_len(&value, syntax));
    write_escaped(&value, syntax, &mut out);
    Some(Bytes::from(out))
}

/// Every distinct form `value` takes once written into a request: as it is (headers, plain
/// bodies), percent-encoded (targets and form bodies) and JSON-escaped (JSON bodies). Checks
/// for a token echoed back in a response look for each of them.
pub(crate) fn written_forms(value: &Bytes) -> Vec<Bytes> {
    let mut forms = vec![value.clone()];
    for syntax in [Syntax::Uri, Syntax::Json] {
        if let Some(form) = escape(value.clone(), syntax) {
            if !forms.contains(&form) {
                forms.push(form);
            }
        }
    }
    forms
}

/// [`needs_escape`], remembered for the last value each thread looked at: a token is one
/// shared buffer from one refresh to the next, written into request after request, and its
/// check is a pass over hundreds of bytes. The remembered value is held (a clone of the
/// shared buffer), so its address cannot be reused by another value while it is
/// remembered: the same address and length is the same value.
fn needs_escape_remembered(value: &Bytes, syntax: Syntax) -> Option<bool> {
    /// Per syntax: not checked yet, or the answer.
    type Answers = [Option<Option<bool>>; 4];
    thread_local! {
        static LAST: std::cell::RefCell<Option<(Bytes, Answers)>> = const { std::cell::RefCell::new(None) };
    }
    let index = syntax as usize;
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &mut *last {
            Some((held, answers)) if held.as_ptr() == value.as_ptr() && held.len() == value.len() => {
                *answers[index].get_or_insert_with(|| needs_escape(value, syntax))
            }
            _ => {
                let answer = needs_escape(value, syntax);
                let mut answers: Answers = [None; 4];
                answers[index] = Some(answer);
                *last = Some((value.clone(), answers));
                answer
            }
        }
    })
}

/// Whether `value` changes when escaped for `syntax`; `None` if it cannot be written there.
fn needs_escape(value: &[u8], syntax: Syntax) -> Option<bool> {
    Some(match syntax {
        Syntax::Plain => false,
        Syntax::Uri | Syntax::Form => any_in_blocks(value, |b| !is_unreserved(b)),
        Syntax::Json => {
            // ASCII (every token the sidecar signs) is UTF-8; the check is one vector pass.
            if !value.is_ascii() {
                std::str::from_utf8(value).ok()?;
            }
            any_in_blocks(value, json_needs_escape)
        }
    })
}

/// Whether any byte of `value` satisfies `test`. Runs on this request path for every token
/// written into a body or target (a JWT is 300-1,000 bytes): testing whole blocks without
/// stopping at the first hit lets the compiler vectorise the test, several times faster
/// than a byte-at-a-time `any`.
#[inline]
fn any_in_blocks(value: &[u8], test: impl Fn(u8) -> bool + Copy) -> bool {
    const BLOCK: usize = 32;
    let mut blocks = value.chunks_exact(BLOCK);
    let hit = blocks.by_ref().any(|block| block.iter().fold(false, |hit, &b| hit | test(b)));
    hit || blocks.remainder().iter().any(|&b| test(b))
}

/// The length of `value` once escaped for `syntax` (an upper bound for JSON control bytes,
/// which are counted as six-byte `\u00XX` escapes).
pub(crate) fn escaped_len(value: &[u8], syntax: Syntax) -> usize {
    match syntax {
        Syntax::Plain => value.len(),
        Syntax::Uri | Syntax::Form => value.iter().map(|&b| if is_unreserved(b) { 1 } else { 3 }).sum(),
        Syntax::Json => value
            .iter()
            .map(|&b| match b {
                b'"' | b'\\' => 2,
                0..0x20 => 6,
                _ => 1,
            })
            .sum(),
    }
}

/// Appends `value` escaped for `syntax` to `out`; false (and nothing appended) when it cannot
/// be written there.
pub(crate) fn write_escaped(value: &[u8], syntax: Syntax, out: &mut Vec<u8>) -> bool {
    match syntax {
        Syntax::Plain => out.extend_from_slice(value),
        Syntax::Uri | Syntax::Form => percent_encode_into(value, out),
        Syntax::Json => {
            if std::str::from_utf8(value).is_err() {
                return false;
            }
            json_escape_into(value, out);
        }
    }
    true
}

/// Keeps RFC 3986 unreserved bytes and `%XX`-encodes everything else (upper-case hex, as the
/// RFC recommends). In a form body a space becomes `%20`, which every form decoder reads as
/// a space, and a `+` becomes `%2B`, so it is not read as one.
fn percent_encode_into(value: &[u8], out: &mut Vec<u8>) {
    // Runs of unreserved bytes (all of a JWT) are copied at once.
    let mut rest = value;
    while !rest.is_empty() {
        let run = rest.iter().position(|&b| !is_unreserved(b)).unwrap_or(rest.len());
        let (plain, tail) = rest.split_at(run);
        out.extend_from_slice(plain);
        let Some((&b, after)) = tail.split_first() else { break };
        out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0x0f)]]);
        rest = after;
    }
}

/// Escapes `"`, `\` and control bytes for a JSON string; UTF-8 above them passes as it is.
fn json_escape_into(value: &[u8], out: &mut Vec<u8>) {
    let mut rest = value;
    while !rest.is_empty() {
        let run = rest.iter().position(|&b| json_needs_escape(b)).unwrap_or(rest.len());
        let (plain, tail) = rest.split_at(run);
        out.extend_from_slice(plain);
        let Some((&b, after)) = tail.split_first() else { break };
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0x0f)]])
            }
        }
        rest = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &[u8] = "a\"b\\c&d=e+f%g h/ü?#{/x}".as_bytes();

    fn escaped(value: &[u8], syntax: Syntax) -> Option<String> {
        escape(Bytes::copy_from_slice(value), syntax).map(|b| String::from_utf8(b.to_vec()).unwrap())
    }

    #[test]
    fn jwts_are_never_copied() {
        let jwt = Bytes::from_static(b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnLV9-");
        for syntax in [Syntax::Plain, Syntax::Uri, Syntax::Form, Syntax::Json] {
            let out = escape(jwt.clone(), syntax).unwrap();
            assert_eq!(out.as_ptr(), jwt.as_ptr(), "{syntax:?}");
            assert_eq!(escaped_len(&jwt, syntax), jwt.len());
        }
    }

    #[test]
    fn uri_and_form_percent_encode() {
        let want = "a%22b%5Cc%26d%3De%2Bf%25g%20h%2F%C3%BC%3F%23%7B%2Fx%7D";
        assert_eq!(escaped(HOSTILE, Syntax::Uri).unwrap(), want);
        assert_eq!(escaped(HOSTILE, Syntax::Form).unwrap(), want);
        assert_eq!(escaped_len(HOSTILE, Syntax::Uri), want.len());
        assert_eq!(escaped(b"aZ09-._~ \x00\xff", Syntax::Uri).unwrap(), "aZ09-._~%20%00%FF");
    }

    #[test]
    fn json_escapes_for_a_string() {
        let out = escaped(HOSTILE, Syntax::Json).unwrap();
        assert_eq!(out, "a\\\"b\\\\c&d=e+f%g h/ü?#{/x}");
        let parsed: String = serde_json::from_str(&format!("\"{out}\"")).unwrap();
        assert_eq!(parsed.as_bytes(), HOSTILE);
        let controls = escaped(b"\n\r\t\x00\x1f\x7f", Syntax::Json).unwrap();
        assert_eq!(controls, "\\n\\r\\t\\u0000\\u001F\x7f");
        assert!(escaped_len(b"\n\r\t\x00\x1f\x7f", Syntax::Json) >= controls.len());
        assert_eq!(escaped(b"\xff\xfe", Syntax::Json), None, "not UTF-8: no JSON string holds it");
    }

    #[test]
    fn remembered_answers_belong_to_their_value() {
        let jwt = Bytes::from_static(b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnLV9-");
        let quoted = Bytes::copy_from_slice(b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnLV9\"");
        for _ in 0..2 {
            assert_eq!(needs_escape_remembered(&jwt, Syntax::Json), Some(false));
            assert_eq!(needs_escape_remembered(&quoted, Syntax::Json), Some(true));
            assert_eq!(needs_escape_remembered(&quoted, Syntax::Uri), Some(true));
            assert_eq!(needs_escape_remembered(&jwt, Syntax::Uri), Some(false));
        }
        // A slice of the same buffer starts at the same address: its length tells it apart.
        let head = quoted.slice(..quoted.len() - 1);
        assert_eq!(needs_escape_remembered(&quoted, Syntax::Json), Some(true));
        assert_eq!(needs_escape_remembered(&head, Syntax::Json), Some(false));
        assert_eq!(
            escape(quoted.clone(), Syntax::Json).unwrap().as_ref(),
            &b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnLV9\\\""[..]
        );
    }

    #[test]
    fn unreserved_is_exactly_rfc_3986s_set() {
        for b in 0..=255u8 {
            let want = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
            assert_eq!(is_unreserved(b), want, "{b:#04x}");
        }
    }

    #[test]
    fn a_byte_to_escape_is_found_wherever_it_is() {
        let jwt = b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnLV9-".repeat(20);
        for at in [0, 1, 31, 32, 33, 500, jwt.len() - 1] {
            for (bad, syntax) in
                [(b'"', Syntax::Json), (b'\n', Syntax::Json), (b'/', Syntax::Uri), (b' ', Syntax::Form)]
            {
                let mut value = jwt.clone();
                value[at] = bad;
                assert_eq!(needs_escape(&value, syntax), Some(true), "{at} {bad} {syntax:?}");
            }
        }
        assert_eq!(needs_escape(&jwt, Syntax::Json), Some(false));
        assert_eq!(needs_escape(&jwt, Syntax::Uri), Some(false));
        let mut not_utf8 = jwt.clone();
        not_utf8[40] = 0xff;
        assert_eq!(needs_escape(&not_utf8, Syntax::Json), None);
        assert_eq!(needs_escape("é".repeat(40).as_bytes(), Syntax::Json), Some(false));
    }

    #[test]
    fn plain_is_as_is() {
        assert_eq!(escaped(HOSTILE, Syntax::Plain).unwrap().as_bytes(), HOSTILE);
        assert_eq!(&escape(Bytes::from_static(b"\xff"), Syntax::Plain).unwrap()[..], b"\xff");
    }
}
