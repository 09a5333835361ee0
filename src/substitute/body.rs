//! Streaming substitution for request bodies.
//!
//! Bodies can be large and arrive in arbitrary chunks, so they are rewritten on the
//! fly: each chunk is scanned once with `memmem`, untouched stretches are forwarded
//! as zero-copy slices of the incoming `Bytes`, and only a possibly unfinished
//! placeholder at the very end of a chunk (at most 72 bytes, the longest spelling
//! but one byte) is held back until the next chunk decides it.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;

use crate::substitute::escape::escape;
use crate::substitute::grammar::{Shape, MAX_CARRY, MAX_SPELLING};
use crate::substitute::scan::lookup;
use crate::substitute::{Refused, Resolve, Syntax};

use crate::substitute::rewrite::{BoxError, Rewrite, RewritingBody};

/// The most a trailer section may grow to once placeholders are filled in.
pub const MAX_TRAILERS: usize = 64 << 10;

/// Incremental placeholder substitution over a sequence of chunks.
///
/// Produces exactly what [`substitute_as`](crate::substitute::substitute_as) would produce
/// on the concatenated input in the same [`Syntax`], whatever the chunk boundaries, while
/// holding at most 72 bytes between calls. Chunks without placeholders are forwarded as the
/// same `Bytes` (no copy), and chunks with placeholders as slices of the input interleaved
/// with the resolved values (escaped for the syntax only when they need it).
pub struct BodySubstituter {
    resolver: Arc<dyn Resolve>,
    syntax: Syntax,
    /// Unfinished placeholder from the end of the previous chunk (a valid prefix of some
    /// spelling, at most [`MAX_CARRY`] bytes). Inline so holding it never allocates.
    carry: [u8; MAX_CARRY],
    carry_len: usize,
}

impl BodySubstituter {
    /// Creates a substituter for one body of any type other than form or JSON (raw `{/NAME}`
    /// only, values inserted as they are); the resolver should be the request's snapshot so
    /// the body sees the same tokens as the headers.
    #[must_use]
    pub fn new(resolver: Arc<dyn Resolve>) -> Self {
        Self::with_syntax(resolver, Syntax::Plain)
    }

    /// Creates a substituter for a body of the given syntax (see
    /// [`Syntax::for_content_type`]).
    #[must_use]
    pub fn with_syntax(resolver: Arc<dyn Resolve>, syntax: Syntax) -> Self {
        Self { resolver, syntax, carry: [0; MAX_CARRY], carry_len: 0 }
    }

    /// Feeds the next chunk, appending output pieces to `out`.
    ///
    /// # Errors
    ///
    /// [`Refused`] when a placeholder (possibly begun in an earlier chunk) names a
    /// token the route does not bind. On `Err` nothing is appended and the held-back bytes are dropped: the request
    /// must be refused, so there is nothing sensible to continue with.
    pub fn push(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) -> Result<(), Refused> {
        let mark = out.len();
        let result = self.push_inner(chunk, out);
        if result.is_err() {
            out.truncate(mark);
            self.carry_len = 0;
        }
        result
    }

    /// Ends the stream: whatever is still held back can no longer become a
    /// placeholder and is emitted as text.
    pub fn finish(&mut self, out: &mut Vec<Bytes>) {
        if self.carry_len > 0 {
            out.push(Bytes::copy_from_slice(self.carry()));
            self.carry_len = 0;
        }
    }

    /// The resolver this body's placeholders are filled from.
    pub fn resolver(&self) -> &Arc<dyn Resolve> {
        &self.resolver
    }

    /// Number of bytes currently held back (never more than 72). For tests and
    /// diagnostics only.
    #[doc(hidden)]
    #[must_use]
    pub fn carry_len(&self) -> usize {
        self.carry_len
    }

    fn carry(&self) -> &[u8] {
        &self.carry[..self.carry_len]
    }

    fn push_inner(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) -> Result<(), Refused> {
        if chunk.is_empty() {
            return Ok(());
        }
        let start = if self.carry_len == 0 {
            0
        } else {
            match self.complete_carry(&chunk, out)? {
                Some(resume) => resume,
                None => return Ok(()),
            }
        };
        self.scan(chunk, start, out)
    }

    /// The value to write for `name` in this body's syntax: `None` keeps the placeholder as
    /// written (unknown name, or a value the syntax cannot hold).
    fn value_for(&self, name: &str) -> Result<Option<Bytes>, Refused> {
        Ok(lookup(&*self.resolver, name)?.and_then(|v| escape(v, self.syntax)))
    }

    /// Decides the held-back carry with the first bytes of `chunk` (non-empty), emitting what
    /// it turned into. Returns where scanning resumes in `chunk`, or `None` when the whole
    /// chunk joined the carry. Looks at no more than [`MAX_SPELLING`] bytes of the chunk.
    fn complete_carry(&mut self, chunk: &[u8], out: &mut Vec<Bytes>) -> Result<Option<usize>, Refused> {
        let grammar = self.syntax.grammar();
        let carried = self.carry_len;
        let taken = chunk.len().min(MAX_SPELLING);
        // A placeholder that starts in the carry ends within MAX_SPELLING bytes of its start,
        // so the carry plus this much of the chunk decides every one of them.
        let mut joined = [0u8; MAX_CARRY + MAX_SPELLING];
        joined[..carried].copy_from_slice(self.carry());
        joined[carried..carried + taken].copy_from_slice(&chunk[..taken]);
        let joined = &joined[..carried + taken];
        let mut emitted = 0;
        let mut at = 0;
        while at < carried {
            if !grammar.can_start(joined[at]) {
                at += 1;
                continue;
            }
            match grammar.shape_at(joined, at) {
                Shape::Complete { name, end } => {
                    // Name bytes are ASCII.
                    let name = std::str::from_utf8(&joined[name.0..name.1]).unwrap_or_default();
                    if let Some(value) = self.value_for(name)? {
                        if at > emitted {
                            out.push(Bytes::copy_from_slice(&joined[emitted..at]));
                        }
                        if !value.is_empty() {
                            out.push(value);
                        }
                        emitted = end;
                    }
                    at = end;
                }
                // Only when the chunk was too short to decide: it all joins the carry, which
                // stays a prefix of one spelling and so within MAX_CARRY bytes.
                Shape::Unfinished if taken == chunk.len() && joined.len() - at <= MAX_CARRY => {
                    if at > emitted {
                        out.push(Bytes::copy_from_slice(&joined[emitted..at]));
                    }
                    let held = joined.len() - at;
                    let mut kept = [0u8; MAX_CARRY];
                    kept[..held].copy_from_slice(&joined[at..]);
                    self.carry = kept;
                    self.carry_len = held;
                    return Ok(None);
                }
                Shape::Unfinished | Shape::Invalid => at += 1,
            }
        }
        if emitted < carried {
            out.push(Bytes::copy_from_slice(&joined[emitted..carried]));
        }
        self.carry_len = 0;
        Ok(Some(emitted.saturating_sub(carried)))
    }

    /// Scans `chunk[start..]` with an empty carry: emits text slices and values,
    /// and holds back an unfinished placeholder at the end.
    fn scan(&mut self, chunk: Bytes, start: usize, out: &mut Vec<Bytes>) -> Result<(), Refused> {
        let grammar = self.syntax.grammar();
        let tail = start + grammar.unfinished_tail(&chunk[start..]);
        let mut emitted = start;
        for ph in grammar.placeholders(&chunk[start..tail]) {
            if let Some(value) = self.value_for(ph.name)? {
                let ph_start = start + ph.start;
                if ph_start > emitted {
                    out.push(chunk.slice(emitted..ph_start));
                }
                if !value.is_empty() {
                    out.push(value);
                }
                emitted = start + ph.end;
            }
        }
        let held = &chunk[tail..];
        self.carry[..held.len()].copy_from_slice(held);
        self.carry_len = held.len();
        if emitted == 0 && tail == chunk.len() {
            // Common case: forward the very same buffer.
            out.push(chunk);
        } else if tail > emitted {
            out.push(chunk.slice(emitted..tail));
        }
        Ok(())
    }
}

impl fmt::Debug for BodySubstituter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodySubstituter").field("carry_len", &self.carry_len).finish_non_exhaustive()
    }
}

/// The rewrite a [`SubstitutingBody`] applies: placeholders in the data filled in by a
/// [`BodySubstituter`], and trailers filled in like headers.
pub struct Substitution {
    subst: BodySubstituter,
    // Reused output buffer for `BodySubstituter::push`.
    scratch: Vec<Bytes>,
}

impl Rewrite for Substitution {
    fn data(&mut self, data: Bytes, out: &mut VecDeque<Bytes>) -> Result<(), BoxError> {
        if let Err(forbidden) = self.subst.push(data, &mut self.scratch) {
            self.scratch.clear();
            return Err(Box::new(forbidden));
        }
        out.extend(self.scratch.drain(..));
        Ok(())
    }

    fn end(&mut self, out: &mut VecDeque<Bytes>) {
        self.subst.finish(&mut self.scratch);
        out.extend(self.scratch.drain(..));
    }

    /// Trailers are a header section: filled like headers, and a placeholder the route may
    /// not use ends the body with an error.
    fn trailers(&mut self, mut trailers: HeaderMap) -> Result<HeaderMap, BoxError> {
        match crate::substitute::substitute_header_map(&mut trailers, &**self.subst.resolver(), MAX_TRAILERS) {
            Ok(()) => Ok(trailers),
            Err(crate::substitute::Bounded::Refused(r)) => Err(Box::new(r)),
            Err(crate::substitute::Bounded::TooLong) => {
                Err("trailers are over 64 KiB once placeholders are filled in".into())
            }
        }
    }

    fn holds_nothing(&self) -> bool {
        self.subst.carry_len() == 0
    }
}

/// An [`http_body::Body`] that substitutes placeholders in the data frames of the body it
/// wraps.
///
/// Data is forwarded as it arrives (no buffering beyond the 72-byte carry), so large
/// uploads stream through. Trailers are filled in after the held-back bytes are flushed. A
/// forbidden placeholder ends the body with a boxed [`Refused`] error; data before it may
/// already have been sent, so a caller that must refuse cleanly (status 403 instead of a
/// reset) has to buffer the body first. The size hint is unknown because substitution
/// changes the length.
pub type SubstitutingBody<B> = RewritingBody<B, Substitution>;

impl<B> SubstitutingBody<B> {
    /// Wraps `inner`, resolving raw `{/NAME}` placeholders with `resolver`.
    pub fn new(inner: B, resolver: Arc<dyn Resolve>) -> Self {
        Self::with_syntax(inner, resolver, Syntax::Plain)
    }

    /// Wraps `inner`, a body of the given syntax (see [`Syntax::for_content_type`]).
    pub fn with_syntax(inner: B, resolver: Arc<dyn Resolve>, syntax: Syntax) -> Self {
        RewritingBody::wrapping(
            inner,
            Substitution { subst: BodySubstituter::with_syntax(resolver, syntax), scratch: Vec::new() },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context as TaskContext, Poll};

    use http_body::{Body, Frame};

    use super::*;
    use crate::substitute::substitute;
    use crate::substitute::tests::MapResolver;
    use http_body_util::{BodyExt, Empty, Full};
    use proptest::prelude::*;

    fn resolver() -> Arc<dyn Resolve> {
        Arc::new(
            MapResolver::default()
                .value("tok", b"TOKEN-VALUE")
                .value("a", b"A")
                .value("empty", b"")
                .value("meta", b"{/a}")
                .value(&"L".repeat(64), b"LONG")
                .forbidden("secret"),
        )
    }

    /// Streams `chunks` through a fresh substituter, checking the carry bound after
    /// every push.
    fn stream(chunks: &[&[u8]], r: Arc<dyn Resolve>) -> Result<Vec<u8>, Refused> {
        let mut s = BodySubstituter::new(r);
        let mut out = Vec::new();
        for c in chunks {
            s.push(Bytes::copy_from_slice(c), &mut out)?;
            assert!(s.carry_len() <= MAX_CARRY);
        }
        s.finish(&mut out);
        assert_eq!(s.carry_len(), 0);
        assert!(out.iter().all(|b| !b.is_empty()), "empty piece emitted");
        Ok(out.concat())
    }

    fn whole(body: &[u8], r: &dyn Resolve) -> Result<Vec<u8>, Refused> {
        substitute(body, r).map(|c| c.into_owned())
    }

    #[test]
    fn replaces_across_every_split() {
        let body = b"x{/tok}y{{/a}}{/nope}{/}{/a b}{/empty}{/meta}{/a";
        let expected = whole(body, &*resolver()).unwrap();
        assert_eq!(expected, b"xTOKEN-VALUEy{A}{/nope}{/}{/a b}{/a}{/a".to_vec());
        for cut1 in 0..=body.len() {
            for cut2 in cut1..=body.len() {
                let chunks = [&body[..cut1], &body[cut1..cut2], &body[cut2..]];
                assert_eq!(stream(&chunks, resolver()).unwrap(), expected, "{cut1} {cut2}");
            }
        }
        let ones: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(stream(&ones, resolver()).unwrap(), expected);
    }

    #[test]
    fn long_names_across_chunks() {
        let name64 = "L".repeat(64);
        let body = format!("<{{/{name64}}}><{{/{name64}L}}>");
        let expected = format!("<LONG><{{/{name64}L}}>");
        let ones: Vec<&[u8]> = body.as_bytes().chunks(1).collect();
        assert_eq!(stream(&ones, resolver()).unwrap(), expected.as_bytes());
        for n in 1..body.len() {
            let parts: Vec<&[u8]> = body.as_bytes().chunks(n).collect();
            assert_eq!(stream(&parts, resolver()).unwrap(), expected.as_bytes(), "{n}");
        }
    }

    #[test]
    fn zero_copy_pass_through() {
        let mut s = BodySubstituter::new(resolver());
        let mut out = Vec::new();
        // `{` early (outside the last 72 bytes) and `/` anywhere are fine.
        let mut text = b"{\"json\": {\"path\": \"/a/b\"}} ".to_vec();
        text.extend(std::iter::repeat_n(b'x', 100));
        let chunk = Bytes::from(text);
        let ptr = chunk.as_ptr();
        s.push(chunk.clone(), &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_ptr(), ptr);
        assert_eq!(out[0].len(), chunk.len());
        assert_eq!(s.carry_len(), 0);

        // With a placeholder, text around it is sliced from the same buffer.
        out.clear();
        let chunk = Bytes::from_static(b"head {/tok} tail");
        s.push(chunk.clone(), &mut out).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].as_ptr(), chunk.as_ptr());
        assert_eq!(&out[0][..], b"head ");
        assert_eq!(&out[1][..], b"TOKEN-VALUE");
        assert_eq!(out[2].as_ptr(), chunk[11..].as_ptr());
        assert_eq!(&out[2][..], b" tail");
    }

    #[test]
    fn forbidden_split_across_chunks_is_detected() {
        let body = b"lead {/secret} trail";
        for n in 1..body.len() {
            let parts: Vec<&[u8]> = body.chunks(n).collect();
            let err = stream(&parts, resolver()).unwrap_err();
            assert_eq!(err.name, "secret", "chunk size {n}");
        }
        // On error nothing from the failing chunk is emitted.
        let mut s = BodySubstituter::new(resolver());
        let mut out = vec![Bytes::from_static(b"earlier")];
        s.push(Bytes::from_static(b"x {/sec"), &mut out).unwrap();
        let before = out.len();
        assert!(s.push(Bytes::from_static(b"ret} y"), &mut out).is_err());
        assert_eq!(out.len(), before);
        assert_eq!(s.carry_len(), 0);
    }

    #[test]
    fn large_body_streams_with_bounded_carry() {
        const CHUNK: usize = 16 * 1024;
        const CHUNKS: usize = 64 * 1024 * 1024 / CHUNK;
        // Each chunk starts with the end of a placeholder and ends with the start
        // of one, so every boundary carries `{/tok`. JSON-ish filler exercises `{`.
        let mut template = b"k}".to_vec();
        while template.len() < CHUNK - 4 {
            template.extend_from_slice(b"{\"k\": [1, {\"v\": \"/p/q\"}], \"u\": \"{/nope}\"} ");
        }
        template.truncate(CHUNK - 4);
        template.extend_from_slice(b"{/to");
        assert_eq!(template.len(), CHUNK);
        let template = Bytes::from(template);
        let rewritten = whole(&template, &*resolver()).unwrap().len();
        assert_eq!(rewritten, CHUNK, "filler must not be rewritten");

        let r = resolver();
        let value = match r.resolve("tok") {
            crate::substitute::Resolution::Value(v) => v,
            _ => unreachable!(),
        };
        let mut s = BodySubstituter::new(r);
        let mut out = Vec::new();
        let (mut total, mut values) = (0usize, 0usize);
        for _ in 0..CHUNKS {
            s.push(template.clone(), &mut out).unwrap();
            assert!(s.carry_len() <= MAX_CARRY);
            for piece in out.drain(..) {
                total += piece.len();
                values += usize::from(piece.as_ptr() == value.as_ptr());
            }
        }
        s.finish(&mut out);
        total += out.iter().map(Bytes::len).sum::<usize>();
        let placeholder = b"{/tok}".len();
        assert_eq!(values, CHUNKS - 1);
        assert_eq!(total, CHUNKS * CHUNK + (CHUNKS - 1) * value.len() - (CHUNKS - 1) * placeholder);
    }

    /// Rough scan throughput; meaningful only with optimisations, e.g.
    /// `cargo test --release -- --ignored --nocapture push_throughput`.
    #[test]
    #[ignore = "benchmark"]
    fn push_throughput() {
        let mut json = Vec::new();
        while json.len() < 16 * 1024 {
            json.extend_from_slice(b"{\"k\": [1, {\"v\": \"/p/q\"}], \"text\": \"lorem ipsum\"} ");
        }
        json.truncate(16 * 1024);
        for (label, chunk) in [("plain", Bytes::from(vec![b'x'; 16 * 1024])), ("json", Bytes::from(json))] {
            let mut s = BodySubstituter::new(resolver());
            let mut out = Vec::new();
            let rounds = 64 * 1024;
            let start = std::time::Instant::now();
            for _ in 0..rounds {
                s.push(chunk.clone(), &mut out).unwrap();
                out.clear();
            }
            let secs = start.elapsed().as_secs_f64();
            let gbps = (rounds * chunk.len()) as f64 / secs / 1e9;
            println!("{label}: {gbps:.2} GB/s");
        }
    }

    #[derive(Debug, Clone)]
    enum Seg {
        Text(Vec<u8>),
        Placeholder(String),
    }

    fn seg() -> impl Strategy<Value = Seg> {
        prop_oneof![
            4 => proptest::collection::vec(
                prop_oneof![Just(b'{'), Just(b'/'), Just(b'}'), Just(b'a'), Just(b' '), Just(b'-'), Just(b'L')],
                0..12,
            )
            .prop_map(Seg::Text),
            3 => prop_oneof![
                Just("tok".to_owned()),
                Just("a".to_owned()),
                Just("empty".to_owned()),
                Just("meta".to_owned()),
                Just("L".repeat(64)),
                Just("unknown.name".to_owned()),
                "[A-Za-z0-9_.-]{1,70}",
                "[a /{}]{0,4}",
            ]
            .prop_map(Seg::Placeholder),
            1 => Just(Seg::Text(b"{/a".to_vec())),
            1 => Just(Seg::Placeholder("secret".to_owned())),
        ]
    }

    fn splits() -> impl Strategy<Value = Vec<usize>> {
        prop_oneof![Just(vec![1]), proptest::collection::vec(1usize..90, 1..12),]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn streaming_equals_whole(segs in proptest::collection::vec(seg(), 0..30), sizes in splits()) {
            let mut body = Vec::new();
            for s in &segs {
                match s {
                    Seg::Text(t) => body.extend_from_slice(t),
                    Seg::Placeholder(n) => body.extend_from_slice(format!("{{/{n}}}").as_bytes()),
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
            prop_assert_eq!(stream(&chunks, r.clone()), whole(&body, &*r));
        }
    }

    /// A multi-frame body for driving `SubstitutingBody` frame by frame.
    struct Frames(VecDeque<Result<Frame<Bytes>, std::io::Error>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut TaskContext<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    fn frames(data: &[&'static [u8]]) -> Frames {
        Frames(data.iter().map(|d| Ok(Frame::data(Bytes::from_static(d)))).collect())
    }

    #[tokio::test]
    async fn body_full() {
        let body = SubstitutingBody::new(Full::new(Bytes::from_static(b"a={/tok}&b={/x}")), resolver());
        assert_eq!(body.size_hint().exact(), None);
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], b"a=TOKEN-VALUE&b={/x}");
    }

    #[tokio::test]
    async fn body_empty_is_end_stream() {
        let body = SubstitutingBody::new(Empty::<Bytes>::new(), resolver());
        assert!(body.is_end_stream());
        assert!(body.collect().await.unwrap().to_bytes().is_empty());
    }

    #[tokio::test]
    async fn body_split_frames_and_trailers() {
        let mut inner = frames(&[b"x{", b"/t", b"ok}y{/", b"a"]);
        // `http` is not a dependency here; reach its HeaderMap through `Frame`.
        let mut trailers = Frame::<Bytes>::trailers(Default::default()).into_trailers().unwrap();
        trailers.insert("x-t", "1".parse().unwrap());
        inner.0.push_back(Ok(Frame::trailers(trailers.clone())));
        let collected = SubstitutingBody::new(inner, resolver()).collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(&collected.to_bytes()[..], b"xTOKEN-VALUEy{/a");
    }

    #[tokio::test]
    async fn body_forbidden_is_downcastable_error() {
        let inner = frames(&[b"ok ", b"{/sec", b"ret}", b" more"]);
        let err = SubstitutingBody::new(inner, resolver()).collect().await.unwrap_err();
        let forbidden = err.downcast_ref::<Refused>().expect("Refused");
        assert_eq!(forbidden.name, "secret");
    }

    #[tokio::test]
    async fn body_inner_error_passes_through() {
        let mut inner = frames(&[b"a"]);
        inner.0.push_back(Err(std::io::Error::other("boom")));
        let err = SubstitutingBody::new(inner, resolver()).collect().await.unwrap_err();
        assert!(err.downcast_ref::<std::io::Error>().is_some());
    }

    #[test]
    fn bounds_suit_hyper() {
        fn assert_body<T: Body<Data = Bytes, Error = BoxError> + Send + Sync + Unpin + 'static>(_: &T) {}
        fn assert_shareable<T: Send + Sync>() {}
        // `Full` has an `Infallible` error, which must convert into the boxed error.
        let body = SubstitutingBody::new(Full::new(Bytes::new()), resolver());
        assert_body(&body);
        assert_shareable::<BodySubstituter>();
    }
}
