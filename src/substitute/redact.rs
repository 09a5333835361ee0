//! Response redaction: the inverse of substitution.
//!
//! An upstream that echoes a request (debug endpoints, error pages that quote the
//! Authorization header, "whoami" APIs) would hand the agent the very token the sidecar
//! exists to keep from it. On routes with `redact_responses = true`, every value injected
//! into the request is replaced in the response, headers and body, by the placeholder text
//! that asked for it. The body is rewritten as a stream: at most one value's length minus
//! one byte is held back between chunks, so memory stays bounded whatever the size.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use memchr::memmem::Finder;

use crate::substitute::rewrite::{BoxError, Rewrite, RewritingBody};

/// The values one request carried, each with the text that replaces it.
pub struct Redactions {
    entries: Vec<Entry>,
    /// Longest value: a match can start at most this many bytes minus one before a chunk ends.
    longest: usize,
}

struct Entry {
    finder: Finder<'static>,
    placeholder: Bytes,
    counter: metrics::Counter,
}

impl std::fmt::Debug for Redactions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactions").field("values", &self.entries.len()).finish()
    }
}

impl Redactions {
    /// `values`: (token value, placeholder text such as `{/auth_token}`, counter to bump per
    /// redaction). Each value is looked for in every form the sidecar writes it in (as it
    /// is, percent-encoded, JSON-escaped: an upstream reflecting a request target or a JSON
    /// body reflects the escaped form), each form once. Empty values are skipped (they would
    /// match everywhere); `None` when nothing is left to redact.
    pub fn new(values: impl IntoIterator<Item = (Bytes, String, metrics::Counter)>) -> Option<Redactions> {
        let mut entries: Vec<Entry> = Vec::new();
        for (value, placeholder, counter) in values.into_iter().filter(|(value, _, _)| !value.is_empty()) {
            let placeholder = Bytes::from(placeholder);
            for form in super::escape::written_forms(&value) {
                if entries.iter().all(|e| e.finder.needle() != &form[..]) {
                    let finder = Finder::new(&form).into_owned();
                    entries.push(Entry { finder, placeholder: placeholder.clone(), counter: counter.clone() });
                }
            }
        }
        // Longest first, so a value that contains another is replaced whole.
        entries.sort_by_key(|e| std::cmp::Reverse(e.finder.needle().len()));
        let longest = entries.first()?.finder.needle().len();
        Some(Redactions { entries, longest })
    }

    /// Redacts every header value in place.
    pub fn headers(&self, headers: &mut HeaderMap) {
        for value in headers.values_mut() {
            let mut pieces = Vec::new();
            let bytes = Bytes::copy_from_slice(value.as_bytes());
            if self.replace_all(&bytes, 0, &mut pieces) == 0 {
                continue;
            }
            let joined: Vec<u8> = pieces.concat();
            if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(joined)) {
                *value = v;
            }
        }
    }

    /// Whether any of the values occurs in `hay` (counted nowhere: a check, not a redaction).
    pub fn found_in(&self, hay: &[u8]) -> bool {
        self.entries.iter().any(|e| e.finder.find(hay).is_some())
    }

    /// Whether any of the values occurs in a header value.
    pub fn found_in_headers(&self, headers: &HeaderMap) -> bool {
        headers.values().any(|v| self.found_in(v.as_bytes()))
    }

    /// The earliest match in `hay[from..]`: (start, entry index); longest value on a tie.
    fn next_match(&self, hay: &[u8], from: usize) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize)> = None;
        for (i, e) in self.entries.iter().enumerate() {
            if let Some(at) = e.finder.find(&hay[from..]) {
                let at = from + at;
                if best.is_none_or(|(b, _)| at < b) {
                    best = Some((at, i));
                }
            }
        }
        best
    }

    /// Replaces every complete match in `hay`, pushing pieces for `hay[..end]` where `end`
    /// is returned: everything before it is final. Bytes after `end` could still begin a
    /// match; `keep_tail` is how many trailing bytes must be held back (0 at end of stream).
    fn replace_until(&self, hay: &Bytes, keep_tail: usize, out: &mut Vec<Bytes>) -> usize {
        let mut emitted = 0;
        let mut pos = 0;
        while let Some((at, i)) = self.next_match(hay, pos) {
            let entry = &self.entries[i];
            if at > emitted {
                out.push(hay.slice(emitted..at));
            }
            out.push(entry.placeholder.clone());
            entry.counter.increment(1);
            emitted = at + entry.finder.needle().len();
            pos = emitted;
        }
        let end = hay.len().saturating_sub(keep_tail).max(emitted);
        if end > emitted {
            out.push(hay.slice(emitted..end));
        }
        end
    }

    /// Replaces every match in a complete buffer; returns how many were replaced.
    fn replace_all(&self, hay: &Bytes, keep_tail: usize, out: &mut Vec<Bytes>) -> usize {
        let before = out.len();
        let end = self.replace_until(hay, keep_tail, out);
        if end < hay.len() {
            out.push(hay.slice(end..));
        }
        // A single piece equal to the input means nothing was replaced.
        if out.len() - before == 1 && out[before].len() == hay.len() && out[before].as_ptr() == hay.as_ptr() {
            0
        } else {
            out.len() - before
        }
    }
}

/// The rewrite a [`RedactingBody`] applies: values replaced in the data, holding back at
/// most the longest value's length minus one byte, and in the trailers.
pub struct Redaction {
    redactions: Arc<Redactions>,
    // Bytes that may begin a value continued in the next chunk.
    carry: BytesMut,
}

impl Rewrite for Redaction {
    fn data(&mut self, data: Bytes, out: &mut VecDeque<Bytes>) -> Result<(), BoxError> {
        let hay = if self.carry.is_empty() {
            data
        } else {
            self.carry.extend_from_slice(&data);
            self.carry.split().freeze()
        };
        let mut pieces = Vec::new();
        let end = self.redactions.replace_until(&hay, self.redactions.longest - 1, &mut pieces);
        self.carry.extend_from_slice(&hay[end..]);
        out.extend(pieces);
        Ok(())
    }

    fn end(&mut self, out: &mut VecDeque<Bytes>) {
        if self.carry.is_empty() {
            return;
        }
        let hay = self.carry.split().freeze();
        let mut pieces = Vec::new();
        self.redactions.replace_until(&hay, 0, &mut pieces);
        out.extend(pieces);
    }

    fn trailers(&mut self, mut trailers: HeaderMap) -> Result<HeaderMap, BoxError> {
        self.redactions.headers(&mut trailers);
        Ok(trailers)
    }

    fn holds_nothing(&self) -> bool {
        self.carry.is_empty()
    }
}

/// A response body with the request's token values replaced by their placeholders.
pub type RedactingBody<B> = RewritingBody<B, Redaction>;

impl<B> RedactingBody<B> {
    pub fn new(inner: B, redactions: Arc<Redactions>) -> Self {
        RewritingBody::wrapping(inner, Redaction { redactions, carry: BytesMut::new() })
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http_body::{Body, Frame};
    use http_body_util::BodyExt;

    use super::*;

    fn redactions() -> Arc<Redactions> {
        let counter = metrics::Counter::noop();
        Arc::new(
            Redactions::new([
                (Bytes::from_static(b"eyJTOKEN.value.sig"), "{/tok}".to_string(), counter.clone()),
                (Bytes::from_static(b"short"), "{/s}".to_string(), counter.clone()),
                (Bytes::new(), "{/empty}".to_string(), counter),
            ])
            .unwrap(),
        )
    }

    /// A body that yields the given chunks, one frame each.
    struct Chunks(std::collections::VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
        }
    }

    async fn run(chunks: Vec<&'static [u8]>) -> Vec<u8> {
        let body = RedactingBody::new(Chunks(chunks.into_iter().map(Bytes::from_static).collect()), redactions());
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn values_are_replaced_across_chunk_boundaries() {
        assert_eq!(run(vec![b"a eyJTOKEN.value.sig b"]).await, b"a {/tok} b");
        assert_eq!(run(vec![b"a eyJTOK", b"EN.val", b"ue.sig b short"]).await, b"a {/tok} b {/s}");
        assert_eq!(run(vec![b"eyJTOKEN.value.si", b"X"]).await, b"eyJTOKEN.value.siX");
        assert_eq!(run(vec![b"sho", b"rtshort"]).await, b"{/s}{/s}");
        assert_eq!(run(vec![b"nothing here"]).await, b"nothing here");
    }

    #[test]
    fn values_are_found_without_being_counted() {
        let r = redactions();
        assert!(r.found_in(b"x eyJTOKEN.value.sig y") && r.found_in(b"short"));
        assert!(!r.found_in(b"eyJTOKEN.value.si") && !r.found_in(b""));
        let mut h = HeaderMap::new();
        h.insert("x-plain", HeaderValue::from_static("plain"));
        assert!(!r.found_in_headers(&h));
        h.insert("x-echo", HeaderValue::from_static("Bearer eyJTOKEN.value.sig"));
        assert!(r.found_in_headers(&h));
    }

    /// A hostile upstream echoing the token in a trailer (gRPC's `grpc-message`, say), with
    /// the body's last bytes held back as the start of a value: the held bytes come first,
    /// and the trailer leaves redacted.
    #[tokio::test]
    async fn trailers_are_redacted_after_the_held_back_tail() {
        struct WithTrailers(std::collections::VecDeque<Frame<Bytes>>);
        impl Body for WithTrailers {
            type Data = Bytes;
            type Error = std::convert::Infallible;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
                Poll::Ready(self.0.pop_front().map(Ok))
            }
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-message", HeaderValue::from_static("bad token eyJTOKEN.value.sig"));
        let frames = [Frame::data(Bytes::from_static(b"data eyJTOK")), Frame::trailers(trailers)];
        let collected =
            RedactingBody::new(WithTrailers(frames.into_iter().collect()), redactions()).collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("trailers kept");
        assert_eq!(trailers["grpc-message"], "bad token {/tok}");
        assert_eq!(&collected.to_bytes()[..], b"data eyJTOK", "the held-back tail is sent as it was");
    }

    #[test]
    fn header_values_are_redacted() {
        let mut h = HeaderMap::new();
        h.insert("x-echo", HeaderValue::from_static("Bearer eyJTOKEN.value.sig"));
        h.insert("x-plain", HeaderValue::from_static("plain"));
        redactions().headers(&mut h);
        assert_eq!(h["x-echo"], "Bearer {/tok}");
        assert_eq!(h["x-plain"], "plain");
    }
}
