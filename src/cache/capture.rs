//! Tee a response body into the cache while it streams to the client.
//!
//! Chunks go to the client as they arrive; a shared reference to each (`Bytes`, no copy)
//! is kept until the body ends, then they are joined once and handed to a [`Completion`].
//! Past `limit` bytes (or when the shared capture budget is spent, or on trailers or an
//! error) capturing stops and the chunks are released: the rest streams through uncached,
//! and the response is never held whole.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use crate::proxy::budget::Reservation;
use crate::proxy::{BoxError, ProxyBody};

/// What to do with a body captured whole.
pub trait Completion: Send + 'static {
    fn complete(self: Box<Self>, body: Bytes);
}

/// An ongoing capture.
pub struct Capture {
    chunks: Vec<Bytes>,
    len: u64,
    limit: u64,
    reservation: Reservation,
    budget_limit: u64,
    completion: Box<dyn Completion>,
}

impl Capture {
    /// Captures up to `limit` bytes, each taken from `reservation`'s budget (`budget_limit`).
    pub fn new(limit: u64, reservation: Reservation, budget_limit: u64, completion: Box<dyn Completion>) -> Capture {
        Capture { chunks: Vec::new(), len: 0, limit, reservation, budget_limit, completion }
    }

    /// Keeps `chunk`; false when the capture must stop.
    fn keep(&mut self, chunk: &Bytes) -> bool {
        let len = chunk.len() as u64;
        self.len += len;
        if self.len > self.limit || !self.reservation.grow(len, self.budget_limit) {
            return false;
        }
        if !chunk.is_empty() {
            self.chunks.push(chunk.clone());
        }
        true
    }

    /// The whole body, joined, to the completion.
    fn finish(self) {
        let body = match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.into_iter().next().unwrap_or_default(),
            _ => {
                let mut joined = BytesMut::with_capacity(self.len as usize);
                for chunk in &self.chunks {
                    joined.extend_from_slice(chunk);
                }
                joined.freeze()
            }
        };
        self.completion.complete(body);
    }
}

pin_project_lite::pin_project! {
    /// A response body passed through unchanged while a copy is captured.
    pub struct CapturingBody {
        #[pin]
        inner: ProxyBody,
        capture: Option<Capture>,
    }
}

/// Wraps `body` so that, if it ends within the limits, `capture` completes with it. A body
/// that has already ended (HEAD, 204, empty) completes at once.
pub fn capture(body: ProxyBody, capture: Capture) -> ProxyBody {
    use http_body_util::BodyExt;
    if body.is_end_stream() {
        capture.finish();
        return body;
    }
    CapturingBody { inner: body, capture: Some(capture) }.boxed_unsync()
}

impl Body for CapturingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => match frame.data_ref() {
                Some(chunk) => {
                    if this.capture.as_mut().is_some_and(|c| !c.keep(chunk)) {
                        *this.capture = None;
                    }
                    // hyper may not poll again once the body says it has ended.
                    if this.inner.is_end_stream() {
                        if let Some(capture) = this.capture.take() {
                            capture.finish();
                        }
                    }
                }
                // Trailers are not stored.
                None => *this.capture = None,
            },
            Some(Err(_)) => *this.capture = None,
            None => {
                if let Some(capture) = this.capture.take() {
                    capture.finish();
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use http_body_util::BodyExt;

    use super::*;
    use crate::proxy::budget::BufferBudget;

    struct Record(Arc<Mutex<Option<Bytes>>>);

    impl Completion for Record {
        fn complete(self: Box<Self>, body: Bytes) {
            *self.0.lock().unwrap() = Some(body);
        }
    }

    /// Frames one by one; `Err` for an error frame.
    struct Frames(VecDeque<Result<Frame<Bytes>, ()>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(|f| f.map_err(|()| "broken".into())))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    fn data(chunks: &[&'static [u8]]) -> Frames {
        Frames(chunks.iter().map(|c| Ok(Frame::data(Bytes::from_static(c)))).collect())
    }

    async fn run(body: Frames, limit: u64, budget: &Arc<BufferBudget>, budget_limit: u64) -> (Bytes, Option<Bytes>) {
        let seen = Arc::new(Mutex::new(None));
        let c = Capture::new(limit, budget.reservation(), budget_limit, Box::new(Record(Arc::clone(&seen))));
        let out = capture(body.boxed_unsync(), c).collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let captured = seen.lock().unwrap().take();
        (out, captured)
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_passed_on_and_captured_whole() {
        let budget = BufferBudget::new();
        let (out, captured) = run(data(&[b"ab", b"", b"cd", b"e"]), 5, &budget, 100).await;
        assert_eq!(out, "abcde");
        assert_eq!(captured.as_deref(), Some(&b"abcde"[..]));
        assert_eq!(budget.used(), 0, "the capture's share of the budget is returned");
    }

    #[tokio::test]
    async fn past_the_limit_the_body_streams_on_uncaptured() {
        let budget = BufferBudget::new();
        let (out, captured) = run(data(&[b"ab", b"cd", b"ef"]), 5, &budget, 100).await;
        assert_eq!(out, "abcdef", "the client still gets everything");
        assert_eq!(captured, None);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn a_spent_budget_stops_capturing() {
        let budget = BufferBudget::new();
        let mut held = budget.reservation();
        assert!(held.grow(98, 100));
        let (out, captured) = run(data(&[b"ab", b"cd"]), 50, &budget, 100).await;
        assert_eq!((out, captured), (Bytes::from_static(b"abcd"), None));
    }

    #[tokio::test]
    async fn errors_and_trailers_stop_capturing() {
        let budget = BufferBudget::new();
        let broken = Frames([Ok(Frame::data(Bytes::from_static(b"ab"))), Err(())].into());
        assert_eq!(run(broken, 50, &budget, 100).await.1, None);
        let trailers =
            Frames([Ok(Frame::data(Bytes::from_static(b"ab"))), Ok(Frame::trailers(http::HeaderMap::new()))].into());
        assert_eq!(run(trailers, 50, &budget, 100).await.1, None);
    }

    #[tokio::test]
    async fn an_ended_body_completes_at_once() {
        let budget = BufferBudget::new();
        let (out, captured) = run(Frames(VecDeque::new()), 50, &budget, 100).await;
        assert_eq!((out, captured), (Bytes::new(), Some(Bytes::new())));
    }

    #[tokio::test]
    async fn a_dropped_body_completes_nothing() {
        let seen = Arc::new(Mutex::new(None));
        let budget = BufferBudget::new();
        let c = Capture::new(50, budget.reservation(), 100, Box::new(Record(Arc::clone(&seen))));
        let mut body = capture(data(&[b"ab", b"cd"]).boxed_unsync(), c);
        let _ = body.frame().await;
        drop(body);
        assert_eq!(*seen.lock().unwrap(), None);
        assert_eq!(budget.used(), 0);
    }
}
