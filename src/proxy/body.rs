//! Request bodies on the way out: small ones rewritten whole (exact Content-Length), large
//! or endless ones rewritten as a stream (chunked), compressed ones left alone.
//!
//! Memory per request is bounded by `max_buffered_body` plus the substituter's carry,
//! whatever the body size (invariant 4).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{BoxError, ProxyBody};
use crate::error::ProxyError;
use crate::substitute::{BodySubstituter, Resolve, SubstitutingBody};

/// Passes a body through untouched.
pub fn untouched(body: Incoming) -> ProxyBody {
    body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()
}

/// Whether a body is compressed or otherwise encoded, so its bytes cannot be scanned.
fn is_encoded(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_ENCODING).is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
}

/// Prepares a routed request's body, substituting placeholders with `tokens`. Adjusts
/// Content-Length / Transfer-Encoding in `headers` to match what will be sent.
pub async fn substituted(
    body: Incoming,
    headers: &mut HeaderMap,
    tokens: Arc<dyn Resolve>,
    limit: u64,
) -> Result<ProxyBody, ProxyError> {
    if body.is_end_stream() || is_encoded(headers) {
        return Ok(untouched(body));
    }
    let declared = body.size_hint().exact();
    if declared.is_some_and(|n| n > limit) {
        return Ok(streamed(Prefixed::new(VecDeque::new(), body), headers, tokens));
    }

    // Read up to the limit: if the body ends within it, rewrite it whole.
    let mut body = body;
    let mut read: VecDeque<Frame<Bytes>> = VecDeque::new();
    let mut total: u64 = 0;
    loop {
        match body.frame().await {
            None => break,
            Some(Err(e)) => return Err(ProxyError::BadRequest(format!("reading the request body failed: {e}"))),
            Some(Ok(frame)) => {
                total += frame.data_ref().map_or(0, |d| d.len() as u64);
                read.push_back(frame);
                if total > limit {
                    return Ok(streamed(Prefixed::new(read, body), headers, tokens));
                }
            }
        }
    }
    // The body ended within the limit: substitute it whole. A single data frame (the usual
    // case for small bodies) is scanned in place; several are joined first.
    let mut trailers = None;
    let mut data: Vec<Bytes> = Vec::with_capacity(read.len());
    for frame in read {
        match frame.into_data() {
            Ok(chunk) => data.push(chunk),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    let whole = match data.len() {
        1 => data.pop().unwrap_or_default(),
        _ => {
            let mut joined = BytesMut::with_capacity(usize::try_from(total).unwrap_or(0));
            data.iter().for_each(|d| joined.extend_from_slice(d));
            joined.freeze()
        }
    };
    let mut substituter = BodySubstituter::new(tokens);
    let mut pieces = Vec::new();
    substituter.push(whole, &mut pieces)?;
    substituter.finish(&mut pieces);
    headers.remove(header::TRANSFER_ENCODING);
    // The pieces (text slices and token values) are sent as they are, without joining them:
    // the exact Content-Length is their sum.
    let mut frames: VecDeque<Frame<Bytes>> = pieces.into_iter().filter(|p| !p.is_empty()).map(Frame::data).collect();
    match trailers {
        None => {
            let length: usize = frames.iter().filter_map(|f| f.data_ref().map(Bytes::len)).sum();
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        Some(trailers) => {
            headers.remove(header::CONTENT_LENGTH);
            frames.push_back(Frame::trailers(trailers));
        }
    }
    Ok(Frames(frames).boxed_unsync())
}

fn streamed(body: Prefixed, headers: &mut HeaderMap, tokens: Arc<dyn Resolve>) -> ProxyBody {
    headers.remove(header::CONTENT_LENGTH);
    SubstitutingBody::new(body, tokens).boxed_unsync()
}

/// A fixed list of frames.
struct Frames(VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        let length: usize = self.0.iter().filter_map(|f| f.data_ref().map(Bytes::len)).sum();
        SizeHint::with_exact(length as u64)
    }
}

/// Frames already read from the client, followed by the rest of its body.
struct Prefixed {
    prefix: VecDeque<Frame<Bytes>>,
    rest: Incoming,
}

impl Prefixed {
    fn new(prefix: VecDeque<Frame<Bytes>>, rest: Incoming) -> Prefixed {
        Prefixed { prefix, rest }
    }
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.prefix.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut self.rest).poll_frame(cx).map_err(|e| Box::new(e) as BoxError)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
