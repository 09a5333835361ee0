//! A body rewritten chunk by chunk as it streams: the one frame loop that request
//! substitution ([`SubstitutingBody`](super::SubstitutingBody)) and response redaction
//! ([`RedactingBody`](super::RedactingBody)) share.
//!
//! The loop owns the order of what leaves: rewritten data first, then the trailers (or any
//! other non-data frame), then the end. A rewrite that fails ends the body with its error,
//! and nothing follows it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// The error a rewritten body ends with: boxed so hyper accepts it, and so a
/// [`Refused`](super::Refused) can be told apart from a transport error by downcasting.
pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a streaming rewrite does with each part of a body.
pub trait Rewrite {
    /// Rewrites one data chunk into `out`, holding back what the next chunk may decide.
    ///
    /// # Errors
    ///
    /// Whatever ends the body (the data before it has already been handed on).
    fn data(&mut self, data: Bytes, out: &mut VecDeque<Bytes>) -> Result<(), BoxError>;

    /// The data has ended: hands on whatever was held back.
    fn end(&mut self, out: &mut VecDeque<Bytes>);

    /// Rewrites the trailer section.
    ///
    /// # Errors
    ///
    /// Whatever ends the body instead of the trailers.
    fn trailers(&mut self, trailers: HeaderMap) -> Result<HeaderMap, BoxError>;

    /// Whether nothing is held back, so the body ends when the one it wraps does.
    fn holds_nothing(&self) -> bool;
}

pin_project_lite::pin_project! {
    /// The body `inner` with its data and trailers rewritten by `R`, as they arrive. The
    /// size hint is unknown: a rewrite changes the length.
    pub struct RewritingBody<B, R> {
        #[pin]
        inner: B,
        pub(super) rewrite: R,
        // Rewritten data not yet returned as frames.
        pending: VecDeque<Bytes>,
        // A non-data frame (trailers) to return once `pending` is drained.
        held: Option<Frame<Bytes>>,
        // The inner body ended or failed; nothing more will be polled from it.
        done: bool,
    }
}

impl<B, R> RewritingBody<B, R> {
    pub(super) fn wrapping(inner: B, rewrite: R) -> Self {
        RewritingBody { inner, rewrite, pending: VecDeque::new(), held: None, done: false }
    }
}

impl<B, R> Body for RewritingBody<B, R>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    R: Rewrite,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if let Some(data) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if let Some(frame) = this.held.take() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if *this.done {
                return Poll::Ready(None);
            }
            let failed = match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.rewrite.data(data, this.pending).err(),
                    Err(frame) => {
                        this.rewrite.end(this.pending);
                        match frame.into_trailers() {
                            Ok(trailers) => match this.rewrite.trailers(trailers) {
                                Ok(trailers) => {
                                    *this.held = Some(Frame::trailers(trailers));
                                    None
                                }
                                Err(e) => Some(e),
                            },
                            Err(frame) => {
                                *this.held = Some(frame);
                                None
                            }
                        }
                    }
                },
                Some(Err(e)) => Some(e.into()),
                None => {
                    this.rewrite.end(this.pending);
                    *this.done = true;
                    None
                }
            };
            if let Some(error) = failed {
                *this.done = true;
                this.pending.clear();
                return Poll::Ready(Some(Err(error)));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty()
            && self.held.is_none()
            && (self.done || (self.rewrite.holds_nothing() && self.inner.is_end_stream()))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    /// Upper-cases data, holds back a trailing `-`, refuses `!`, and tags the trailers.
    #[derive(Default)]
    struct Shout {
        held: bool,
    }

    impl Rewrite for Shout {
        fn data(&mut self, data: Bytes, out: &mut VecDeque<Bytes>) -> Result<(), BoxError> {
            let mut text = if std::mem::take(&mut self.held) { b"-".to_vec() } else { Vec::new() };
            text.extend(data.to_ascii_uppercase());
            // Handed on before the refusal is found: it must not leave.
            out.push_back(Bytes::from(text.clone()));
            if text.contains(&b'!') {
                return Err("refused".into());
            }
            out.pop_back();
            if text.last() == Some(&b'-') {
                text.pop();
                self.held = true;
            }
            out.push_back(Bytes::from(text));
            Ok(())
        }

        fn end(&mut self, out: &mut VecDeque<Bytes>) {
            if std::mem::take(&mut self.held) {
                out.push_back(Bytes::from_static(b"-"));
            }
        }

        fn trailers(&mut self, mut trailers: HeaderMap) -> Result<HeaderMap, BoxError> {
            trailers.insert("x-shouted", http::HeaderValue::from_static("yes"));
            Ok(trailers)
        }

        fn holds_nothing(&self) -> bool {
            !self.held
        }
    }

    /// A body made of the given frames, handed out one per poll.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn frames(parts: Vec<Frame<Bytes>>) -> Frames {
        Frames(parts.into())
    }

    #[tokio::test]
    async fn data_then_what_was_held_then_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", http::HeaderValue::from_static("1"));
        let body = RewritingBody::wrapping(
            frames(vec![Frame::data(Bytes::from_static(b"ab-")), Frame::trailers(trailers)]),
            Shout::default(),
        );
        let collected = body.collect().await.expect("no error");
        let trailers = collected.trailers().cloned().expect("trailers");
        assert_eq!(trailers["x-shouted"], "yes");
        assert_eq!(trailers["x-sum"], "1");
        assert_eq!(&collected.to_bytes()[..], b"AB-");
    }

    #[tokio::test]
    async fn a_refusal_ends_the_body_and_nothing_follows_it() {
        let body = RewritingBody::wrapping(
            frames(vec![
                Frame::data(Bytes::from_static(b"fine")),
                Frame::data(Bytes::from_static(b"no!")),
                Frame::data(Bytes::from_static(b"after")),
            ]),
            Shout::default(),
        );
        let mut body = std::pin::pin!(body);
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().ok().as_deref(), Some(&b"FINE"[..]));
        assert!(body.frame().await.expect("the error").is_err());
        assert!(body.frame().await.is_none(), "nothing after the error");
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn the_end_is_known_as_soon_as_nothing_is_held() {
        let body = RewritingBody::wrapping(http_body_util::Full::new(Bytes::from_static(b"x")), Shout::default());
        let mut body = std::pin::pin!(body);
        assert!(!body.is_end_stream());
        let data = body.frame().await.expect("a frame").expect("data");
        assert_eq!(data.into_data().ok().as_deref(), Some(&b"X"[..]));
        assert!(body.is_end_stream(), "the inner body has ended and nothing is held back");

        let body = RewritingBody::wrapping(http_body_util::Full::new(Bytes::from_static(b"x-")), Shout::default());
        let mut body = std::pin::pin!(body);
        body.frame().await.expect("a frame").expect("data");
        assert!(!body.is_end_stream(), "the held-back `-` is still to come");
        let held = body.frame().await.expect("a frame").expect("data");
        assert_eq!(held.into_data().ok().as_deref(), Some(&b"-"[..]));
        assert!(body.frame().await.is_none());
    }
}
