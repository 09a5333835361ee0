//! Bodies with an idle timeout: a peer that stops sending in the middle of a body (a client
//! mid-upload, an upstream mid-response) is cut after `[proxy] body_timeout` instead of
//! holding the request, its buffers and its connection forever.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::BoxError;

/// The error a [`TimedBody`] ends with when its peer paused too long.
#[derive(Debug, thiserror::Error)]
#[error("no body data for {0:?} ([proxy] body_timeout)")]
pub struct BodyTimedOut(pub Duration);

pin_project_lite::pin_project! {
    /// Wraps a body; fails it when no frame arrives for `timeout`. The timer is only armed
    /// while the inner body is pending, so bodies that arrive whole cost nothing extra.
    pub struct TimedBody<B> {
        #[pin]
        inner: B,
        timeout: Duration,
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<B> TimedBody<B> {
    pub fn new(inner: B, timeout: Duration) -> TimedBody<B> {
        TimedBody { inner, timeout, sleep: None }
    }

    /// The configured pause limit, for error messages.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                // Progress: the next pause is measured from now.
                *this.sleep = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = *this.timeout;
                let sleep =
                    this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut(timeout))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
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
    use super::*;
    use http_body_util::BodyExt;

    /// A body that never yields.
    struct Stalled;

    impl Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_after_the_timeout() {
        let mut body = TimedBody::new(Stalled, Duration::from_secs(3));
        let started = Instant::now();
        let err = body.frame().await.expect("a frame").expect_err("an error");
        assert!(err.is::<BodyTimedOut>());
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_arrives_is_untouched() {
        let body = TimedBody::new(http_body_util::Full::new(Bytes::from_static(b"abc")), Duration::from_secs(1));
        assert_eq!(body.collect().await.unwrap().to_bytes(), Bytes::from_static(b"abc"));
    }
}
