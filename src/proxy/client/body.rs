//! An upstream response body that gives its HTTP/1.1 connection back to the pool once it has
//! been read to its end (a connection is reusable only then); one dropped early takes its
//! connection with it, which hyper then closes.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;

use super::super::{BoxError, ProxyBody};
use super::pool::Slot;

/// A response body from the upstream client.
pub struct UpstreamBody {
    inner: Incoming,
    /// The connection to give back at the end, for HTTP/1.1.
    back: Option<GiveBack>,
}

struct GiveBack {
    slot: Arc<Slot>,
    sender: http1::SendRequest<ProxyBody>,
}

impl UpstreamBody {
    /// A body whose connection is not pooled by it (h2, or a switched protocol).
    pub(super) fn unpooled(inner: Incoming) -> UpstreamBody {
        UpstreamBody { inner, back: None }
    }

    /// A body that returns `sender` to its endpoint's `slot` once read to its end.
    pub(super) fn pooled(inner: Incoming, slot: Arc<Slot>, sender: http1::SendRequest<ProxyBody>) -> Self {
        UpstreamBody { inner, back: Some(GiveBack { slot, sender }) }
    }

    fn give_back(&mut self) {
        if let Some(GiveBack { slot, sender }) = self.back.take() {
            slot.put(sender);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.give_back(),
            // A failed body leaves the connection in an unknown state: not reused.
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled.map_err(|e| Box::new(e) as BoxError)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body that was empty from the start (HEAD, 204, 304, `Content-Length: 0`) may
        // never be polled.
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}
