//! The placeholder grammar: every spelling of `{/NAME}`, and which spellings count where.
//!
//! Agent functions write `{/NAME}`, but HTTP libraries rewrite it before it leaves the process:
//! URL builders percent-encode the braces (`%7B%2FNAME%7D`, or `%7B/NAME%7D` when they leave
//! `/` alone), form encoders do the same in `application/x-www-form-urlencoded` bodies, and
//! some JSON serializers escape the slash (`{\/NAME}`). Each spelling is recognised only in the
//! [`Syntax`] where a client produces it, so text that merely looks like an encoded placeholder
//! elsewhere (a header value, a binary body) is left alone.
//!
//! | spelling | header | URI path/query | form body | JSON body | other body |
//! |---|---|---|---|---|---|
//! | `{/NAME}` | yes | yes | yes | yes | yes |
//! | `%7B%2FNAME%7D`, `%7B/NAME%7D` (hex in any case) | | yes | yes | | |
//! | `{\/NAME}` | | | | yes | |
//!
//! Both braces are spelled the same way: `{%2FNAME}` and `%7B/NAME}` are text.
//!
//! The grammar keeps a property the streaming scanner relies on: no spelling can begin inside
//! a complete placeholder (a name holds no `{`, `%` or `\`, and the `%2F` and `%7D` inside an
//! encoded placeholder begin no spelling), so placeholders never overlap and the leftmost
//! match is the only one.

use std::sync::OnceLock;

use memchr::memmem::Finder;

/// Longest allowed placeholder name.
pub(crate) const MAX_NAME: usize = 64;
/// Longest complete placeholder: `%7B%2F` + 64 name bytes + `%7D`.
pub(crate) const MAX_SPELLING: usize = 6 + MAX_NAME + 3;
/// Longest unfinished placeholder (all but the last byte of the longest spelling): the most a
/// stream ever holds back between chunks.
pub(crate) const MAX_CARRY: usize = MAX_SPELLING - 1;

/// Where a placeholder is written: decides which spellings are recognised and how the value
/// put in its place is escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Syntax {
    /// Header values, trailers and bodies of any other type: raw `{/NAME}` only, the value
    /// inserted as it is.
    Plain,
    /// The request target (path and query): raw and percent-encoded spellings; the value is
    /// percent-encoded.
    Uri,
    /// An `application/x-www-form-urlencoded` body: raw and percent-encoded spellings; the value
    /// is form-encoded.
    Form,
    /// A JSON body (`application/json`, `*/*+json`): raw `{/NAME}` and `{\/NAME}`; the value is
    /// escaped for a JSON string.
    Json,
}

impl Syntax {
    /// The body syntax a `Content-Type` value selects. Parameters (`; charset=utf-8`) and case
    /// do not matter; anything unrecognised (or absent) is [`Syntax::Plain`].
    #[must_use]
    pub fn for_content_type(content_type: Option<&[u8]>) -> Syntax {
        let Some(value) = content_type else { return Syntax::Plain };
        let essence = value.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
        let Some(slash) = essence.iter().position(|&b| b == b'/') else { return Syntax::Plain };
        let (kind, subtype) = (&essence[..slash], &essence[slash + 1..]);
        if essence.eq_ignore_ascii_case(b"application/x-www-form-urlencoded") {
            Syntax::Form
        } else if (kind.eq_ignore_ascii_case(b"application") && subtype.eq_ignore_ascii_case(b"json"))
            || (!kind.is_empty() && subtype.len() > 5 && subtype[subtype.len() - 5..].eq_ignore_ascii_case(b"+json"))
        {
            Syntax::Json
        } else {
            Syntax::Plain
        }
    }

    /// The syntax of a request body with these headers: its `Content-Type`, or
    /// [`Syntax::Plain`] when there is none or more than one (which type would the upstream
    /// believe?).
    #[must_use]
    pub fn for_body(headers: &http::HeaderMap) -> Syntax {
        let mut types = headers.get_all(http::header::CONTENT_TYPE).iter();
        match (types.next(), types.next()) {
            (Some(one), None) => Syntax::for_content_type(Some(one.as_bytes())),
            _ => Syntax::Plain,
        }
    }

    /// The scanner for this syntax, built once.
    pub(crate) fn grammar(self) -> &'static Grammar {
        /// One grammar per set of spellings: plain, percent-encoded (URI and form), JSON.
        static GRAMMARS: OnceLock<[Grammar; 3]> = OnceLock::new();
        let [plain, percent, json] = GRAMMARS.get_or_init(|| {
            [
                Grammar::new(&[RAW], &[b"{/"]),
                Grammar::new(&[RAW, PERCENT_SLASH, PERCENT], &[b"{/", b"%7"]),
                Grammar::new(&[RAW, JSON], &[b"{/", b"{\\/"]),
            ]
        });
        match self {
            Syntax::Plain => plain,
            Syntax::Uri | Syntax::Form => percent,
            Syntax::Json => json,
        }
    }
}

/// One spelling: an opener before the name and a closer after it, compared ignoring ASCII
/// case (which only matters for the hex digits of the percent-encoded forms).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spelling {
    open: &'static [u8],
    close: &'static [u8],
}

const RAW: Spelling = Spelling { open: b"{/", close: b"}" };
const JSON: Spelling = Spelling { open: b"{\\/", close: b"}" };
const PERCENT_SLASH: Spelling = Spelling { open: b"%7B%2F", close: b"%7D" };
const PERCENT: Spelling = Spelling { open: b"%7B/", close: b"%7D" };

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

/// How the text at a candidate position continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A full placeholder: the name is `hay[name.0..name.1]`, the placeholder ends just
    /// before `end`.
    Complete { name: (usize, usize), end: usize },
    /// Valid so far, but the buffer ends before it is decided.
    Unfinished,
    /// Cannot become a placeholder.
    Invalid,
}

/// One complete placeholder found in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placeholder<'a> {
    /// Index of its first byte.
    pub(crate) start: usize,
    /// Index just past its last byte.
    pub(crate) end: usize,
    /// The validated name.
    pub(crate) name: &'a str,
}

/// The spellings of one syntax and the searchers that find where they may begin.
pub(crate) struct Grammar {
    spellings: &'static [Spelling],
    /// Substring searchers for candidate starts, built once (a SIMD searcher per header value
    /// or per body would cost more than scanning a typical header).
    finders: Vec<Finder<'static>>,
    /// Bytes a spelling can begin with (`{`, and `%` for the percent-encoded forms).
    first_bytes: (u8, Option<u8>),
}

impl Grammar {
    fn new(spellings: &'static [Spelling], needles: &[&'static [u8]]) -> Grammar {
        let percent = spellings.iter().any(|s| s.open[0] == b'%');
        Grammar {
            spellings,
            finders: needles.iter().map(|&n| Finder::new(n)).collect(),
            first_bytes: (b'{', percent.then_some(b'%')),
        }
    }

    /// Classifies the candidate starting at `hay[at]`. Looks at no more than
    /// [`MAX_SPELLING`] bytes.
    pub(crate) fn shape_at(&self, hay: &[u8], at: usize) -> Shape {
        let rest = hay.get(at..).unwrap_or_default();
        let mut unfinished = false;
        for spelling in self.spellings {
            match spelling.shape(rest) {
                Shape::Complete { name, end } => {
                    return Shape::Complete { name: (at + name.0, at + name.1), end: at + end };
                }
                Shape::Unfinished => unfinished = true,
                Shape::Invalid => {}
            }
        }
        if unfinished {
            Shape::Unfinished
        } else {
            Shape::Invalid
        }
    }

    /// Where the next candidate at or after `from` begins, from searcher positions cached in
    /// `next` (one per searcher; `None` until searched, `Some(None)` once exhausted).
    fn next_candidate(&self, hay: &[u8], from: usize, next: &mut [Option<Option<usize>>; 2]) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (finder, cached) in self.finders.iter().zip(next.iter_mut()) {
            let found = match *cached {
                Some(Some(p)) if p >= from => Some(p),
                Some(None) => None,
                _ => {
                    let p = hay.get(from..).and_then(|h| finder.find(h)).map(|p| p + from);
                    *cached = Some(p);
                    p
                }
            };
            best = match (best, found) {
                (Some(b), Some(f)) => Some(b.min(f)),
                (b, f) => b.or(f),
            };
        }
        best
    }

    /// Every complete placeholder in `hay`, in order. Runs at `memmem` speed between
    /// candidates; unfinished ones at the end of `hay` are not reported.
    pub(crate) fn placeholders<'h>(&'static self, hay: &'h [u8]) -> impl Iterator<Item = Placeholder<'h>> + 'h {
        let mut next = [None, None];
        let mut from = 0;
        std::iter::from_fn(move || loop {
            let at = self.next_candidate(hay, from, &mut next)?;
            match self.shape_at(hay, at) {
                Shape::Complete { name, end } => {
                    from = end;
                    // Name bytes are ASCII, so this never fails.
                    if let Ok(name) = std::str::from_utf8(&hay[name.0..name.1]) {
                        return Some(Placeholder { start: at, end, name });
                    }
                }
                Shape::Unfinished | Shape::Invalid => from = at + 1,
            }
        })
    }

    /// Index where the earliest unfinished placeholder at the very end of `hay` begins, or
    /// `hay.len()` if there is none. Only the last [`MAX_CARRY`] bytes are inspected.
    pub(crate) fn unfinished_tail(&self, hay: &[u8]) -> usize {
        let from = hay.len().saturating_sub(MAX_CARRY);
        let window = &hay[from..];
        let open = |&i: &usize| self.shape_at(hay, from + i) == Shape::Unfinished;
        let found = match self.first_bytes {
            (a, None) => memchr::memchr_iter(a, window).find(open),
            (a, Some(b)) => memchr::memchr2_iter(a, b, window).find(open),
        };
        found.map_or(hay.len(), |i| from + i)
    }

    /// Whether `b` can begin a spelling of this grammar.
    #[inline]
    pub(crate) fn can_start(&self, b: u8) -> bool {
        b == self.first_bytes.0 || Some(b) == self.first_bytes.1
    }

    /// Whether `hay` holds any byte a spelling can begin with: one memchr settles almost every
    /// header value, cheaper than setting up a substring search.
    #[inline]
    pub(crate) fn may_contain(&self, hay: &[u8]) -> bool {
        match self.first_bytes {
            (a, None) => memchr::memchr(a, hay).is_some(),
            (a, Some(b)) => memchr::memchr2(a, b, hay).is_some(),
        }
    }
}

impl Spelling {
    /// The shape of this spelling at the start of `rest`.
    fn shape(self, rest: &[u8]) -> Shape {
        let open = self.open.len();
        if rest.len() < open {
            return if self.open[..rest.len()].eq_ignore_ascii_case(rest) { Shape::Unfinished } else { Shape::Invalid };
        }
        if !rest[..open].eq_ignore_ascii_case(self.open) {
            return Shape::Invalid;
        }
        let after_open = &rest[open..];
        let window = &after_open[..after_open.len().min(MAX_NAME + 1)];
        let n = match window.iter().position(|&b| !is_name_byte(b)) {
            Some(0) => return Shape::Invalid,
            Some(n) => n,
            None if window.len() > MAX_NAME => return Shape::Invalid,
            None => return Shape::Unfinished,
        };
        let after_name = &after_open[n..];
        let close = self.close.len();
        if after_name.len() < close {
            return if self.close[..after_name.len()].eq_ignore_ascii_case(after_name) {
                Shape::Unfinished
            } else {
                Shape::Invalid
            };
        }
        if after_name[..close].eq_ignore_ascii_case(self.close) {
            Shape::Complete { name: (open, open + n), end: open + n + close }
        } else {
            Shape::Invalid
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(ctx: Syntax, s: &str) -> Shape {
        ctx.grammar().shape_at(s.as_bytes(), 0)
    }

    fn names(ctx: Syntax, s: &str) -> Vec<(usize, usize, String)> {
        ctx.grammar().placeholders(s.as_bytes()).map(|p| (p.start, p.end, p.name.to_string())).collect()
    }

    #[test]
    fn name_bytes() {
        for b in 0..=255u8 {
            let expected = b.is_ascii_alphanumeric() || b"_.-".contains(&b);
            assert_eq!(is_name_byte(b), expected, "byte {b}");
        }
    }

    #[test]
    fn spellings_per_context() {
        let every = ["{/a}", "%7B%2Fa%7D", "%7B/a%7D", "%7b%2fa%7d", "%7b/a%7D", "{\\/a}"];
        let recognised = |ctx: Syntax| -> Vec<&str> {
            every.iter().copied().filter(|s| matches!(shape(ctx, s), Shape::Complete { .. })).collect()
        };
        assert_eq!(recognised(Syntax::Plain), ["{/a}"]);
        assert_eq!(recognised(Syntax::Uri), ["{/a}", "%7B%2Fa%7D", "%7B/a%7D", "%7b%2fa%7d", "%7b/a%7D"]);
        assert_eq!(recognised(Syntax::Form), recognised(Syntax::Uri));
        assert_eq!(recognised(Syntax::Json), ["{/a}", "{\\/a}"]);
    }

    #[test]
    fn mixed_double_and_partial_encodings_are_text() {
        for ctx in [Syntax::Plain, Syntax::Uri, Syntax::Form, Syntax::Json] {
            for s in [
                "{%2Fa}",
                "%7B/a}",
                "{/a%7D",
                "%7B%2Fa}",
                "%257B%252Fa%257D",
                "%7B%252Fa%7D",
                "%7B%2F%61%7D",
                "{\\\\/a}",
                "{\\/a%7D",
                "%7B\\/a%7D",
                "%7B%2F%7D",
                "%7B%2Fa b%7D",
                "{/}",
            ] {
                assert_eq!(names(ctx, s), vec![], "{ctx:?} {s}");
            }
        }
    }

    #[test]
    fn name_lengths_in_every_spelling() {
        for (open, close) in [("{/", "}"), ("%7B%2F", "%7D"), ("%7B/", "%7D"), ("{\\/", "}")] {
            let ctx = if open.starts_with('%') { Syntax::Uri } else { Syntax::Json };
            let n64 = format!("{open}{}{close}", "n".repeat(64));
            let n65 = format!("{open}{}{close}", "n".repeat(65));
            assert_eq!(names(ctx, &n64).len(), 1, "{n64}");
            assert_eq!(names(ctx, &n65), vec![], "{n65}");
            assert_eq!(shape(ctx, &n65[..n65.len() - close.len()]), Shape::Invalid);
            assert_eq!(shape(ctx, &n64[..n64.len() - 1]), Shape::Unfinished);
        }
        assert_eq!(MAX_SPELLING, "%7B%2F".len() + 64 + "%7D".len());
    }

    #[test]
    fn unfinished_prefixes_of_every_spelling() {
        let full = "%7B%2Fname%7D";
        for cut in 1..full.len() {
            assert_eq!(shape(Syntax::Uri, &full[..cut]), Shape::Unfinished, "{}", &full[..cut]);
            assert_eq!(shape(Syntax::Plain, &full[..cut]), Shape::Invalid);
        }
        for s in ["{", "{/", "{/na", "{\\", "{\\/", "{\\/na"] {
            assert_eq!(shape(Syntax::Json, s), Shape::Unfinished, "{s}");
        }
        assert_eq!(shape(Syntax::Plain, "{\\"), Shape::Invalid);
        assert_eq!(shape(Syntax::Uri, "%7C"), Shape::Invalid);
        assert_eq!(shape(Syntax::Uri, "%7B%2Fa%7C"), Shape::Invalid);
    }

    #[test]
    fn unfinished_tail_is_the_earliest_open_candidate() {
        let g = Syntax::Uri.grammar();
        assert_eq!(g.unfinished_tail(b"abc"), 3);
        assert_eq!(g.unfinished_tail(b"abc%"), 3);
        assert_eq!(g.unfinished_tail(b"abc%7B%"), 3);
        assert_eq!(g.unfinished_tail(b"abc%7B%7"), 6);
        assert_eq!(g.unfinished_tail(b"x%7B%2Fab%7"), 1);
        assert_eq!(g.unfinished_tail(b"x%7B%2Fab%7D"), 12);
        assert_eq!(g.unfinished_tail(b"x%7B%2Fab%7Dy"), 13);
        let j = Syntax::Json.grammar();
        assert_eq!(j.unfinished_tail(b"{\"a\": \"{\\"), 7);
        assert_eq!(j.unfinished_tail(b"{\"a\": 1}"), 8);
        let p = Syntax::Plain.grammar();
        assert_eq!(p.unfinished_tail(b"abc{/na.me"), 3);
        assert_eq!(p.unfinished_tail(b"abc%7B"), 6);
        let n72 = format!("..%7B%2F{}%7", "n".repeat(64));
        assert_eq!(g.unfinished_tail(n72.as_bytes()), 2);
        assert_eq!(n72.len() - 2, MAX_CARRY);
    }

    #[test]
    fn placeholders_do_not_overlap() {
        assert_eq!(
            names(Syntax::Uri, "%7B%7B%2Fa%7D{/b}%7b/c%7d"),
            vec![(3, 13, "a".into()), (13, 17, "b".into()), (17, 25, "c".into())]
        );
        assert_eq!(names(Syntax::Json, "{{\\/a}}{\\/{/b}"), vec![(1, 6, "a".into()), (10, 14, "b".into())]);
    }

    #[test]
    fn content_types() {
        let ctx = |s: &str| Syntax::for_content_type(Some(s.as_bytes()));
        assert_eq!(ctx("application/x-www-form-urlencoded"), Syntax::Form);
        assert_eq!(ctx("Application/X-WWW-Form-Urlencoded; charset=UTF-8"), Syntax::Form);
        assert_eq!(ctx("application/json"), Syntax::Json);
        assert_eq!(ctx(" application/json ; charset=utf-8"), Syntax::Json);
        assert_eq!(ctx("application/vnd.api+json"), Syntax::Json);
        assert_eq!(ctx("application/merge-patch+JSON"), Syntax::Json);
        assert_eq!(ctx("application/+json"), Syntax::Plain);
        assert_eq!(ctx("text/plain"), Syntax::Plain);
        assert_eq!(ctx("multipart/form-data; boundary=x"), Syntax::Plain);
        assert_eq!(ctx("application/jsonx"), Syntax::Plain);
        assert_eq!(ctx("json"), Syntax::Plain);
        assert_eq!(Syntax::for_content_type(None), Syntax::Plain);
        let mut headers = http::HeaderMap::new();
        assert_eq!(Syntax::for_body(&headers), Syntax::Plain);
        headers.insert("content-type", "application/json".parse().unwrap());
        assert_eq!(Syntax::for_body(&headers), Syntax::Json);
        headers.append("content-type", "application/x-www-form-urlencoded".parse().unwrap());
        assert_eq!(Syntax::for_body(&headers), Syntax::Plain, "two types: neither is trusted");
    }
}
