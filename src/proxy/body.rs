//! Request bodies on the way out: small ones rewritten whole (exact Content-Length), large
//! or endless ones rewritten as a stream (chunked), compressed ones left alone.
//!
//! Memory per request is bounded by `max_buffered_body` plus the substituter's carry,
//! whatever the body size or its chunking (invariant 4), and all buffered bodies together by
//! `max_buffered_total` ([`BufferBudget`]).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::Method;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::budget::{BufferBudget, Reservation};
use super::timed::{BodyTimedOut, TimedBody};
use super::{BoxError, ProxyBody};
use crate::error::ProxyError;
use crate::substitute::MAX_TRAILERS;
use crate::substitute::{substitute_header_map, BodySubstituter, Resolve, SubstitutingBody, Syntax};

/// A client's request body with the idle timeout between its chunks applied.
pub type ClientBody = TimedBody<hyper::body::Incoming>;

/// Limits that shape how one request body is handled.
pub struct BodyLimits<'a> {
    /// Bodies up to this size are buffered and rewritten whole.
    pub max_buffered: u64,
    /// The budget all buffered bodies share, and its size.
    pub budget: &'a Arc<BufferBudget>,
    pub budget_limit: u64,
}

impl<'a> BodyLimits<'a> {
    /// The limits `[proxy]` sets, drawing on `budget`.
    pub fn of(settings: &crate::config::ProxySettings, budget: &'a Arc<BufferBudget>) -> Self {
        BodyLimits { max_buffered: settings.max_buffered_body, budget, budget_limit: settings.max_buffered_total }
    }
}

/// Passes a body through untouched (with its idle timeout). GET, HEAD and OPTIONS bodies
/// get an explicit length or chunked framing, which hyper's client would otherwise drop.
pub fn untouched(body: ClientBody, method: &Method, headers: &mut HeaderMap) -> ProxyBody {
    frame_unusual_body(method, headers, &body);
    body.boxed_unsync()
}

/// hyper's client sends no body for a GET or HEAD whose length it does not know; a body the
/// client sent must still reach the upstream (it might carry anything), so say chunked.
fn frame_unusual_body(method: &Method, headers: &mut HeaderMap, body: &impl Body) {
    let unusual = matches!(*method, Method::GET | Method::HEAD | Method::CONNECT);
    if unusual && !body.is_end_stream() && body.size_hint().exact().is_none() {
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    }
}

/// Whether a body is compressed or otherwise encoded, so its bytes cannot be scanned.
fn is_encoded(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_ENCODING).is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
}

/// A routed request's body on its way to substitution: as the client sends it, or already
/// read by an earlier phase (the cache reads bodies ahead to key on them).
pub enum RequestBody {
    Client(ClientBody),
    Read(ReadBody),
}

/// A request body after [`read`]: whole (up to `max_buffered_body`), or the part read before
/// it grew past that followed by the rest, or untouched (empty or encoded).
pub struct ReadBody(Read);

enum Read {
    /// Empty, or encoded (`Content-Encoding`), so never scanned: passed on as it comes.
    Untouched(ClientBody),
    /// Too large to rewrite whole: streamed, the part read so far first.
    Streaming(Prefixed),
    /// Read whole; the reservation holds its share of the buffer budget until it is sent.
    Whole { raw: Bytes, trailers: Option<HeaderMap>, reservation: Reservation },
    /// A copy of a whole body without trailers, for a request made again (it holds its own
    /// reservation).
    Copy { raw: Bytes, reservation: Reservation },
}

impl ReadBody {
    /// The body as the client sent it, when it was read whole without trailers (an empty
    /// body is whole). `None` for bodies that stream, are encoded or carry trailers.
    pub fn whole(&self) -> Option<&Bytes> {
        static EMPTY: Bytes = Bytes::new();
        match &self.0 {
            Read::Untouched(body) if body.is_end_stream() => Some(&EMPTY),
            Read::Whole { raw, trailers: None, .. } | Read::Copy { raw, .. } => Some(raw),
            _ => None,
        }
    }

    /// A second, independent copy of a whole body (see [`ReadBody::whole`]), drawing on the
    /// budget for itself; `None` when the body is not whole or the budget is spent.
    pub fn copy(&self, budget: &Arc<BufferBudget>, budget_limit: u64) -> Option<ReadBody> {
        let raw = self.whole()?.clone();
        let mut reservation = budget.reservation();
        reservation.grow(raw.len() as u64, budget_limit).then_some(ReadBody(Read::Copy { raw, reservation }))
    }
}

/// Reads a body ahead of substitution: whole when it ends within `max_buffered_body`, else
/// up to that point (the rest then streams). Bytes read are taken from the shared budget.
/// Empty, encoded and gRPC bodies are left unread.
pub async fn read(body: ClientBody, headers: &HeaderMap, limits: &BodyLimits<'_>) -> Result<ReadBody, ProxyError> {
    if body.is_end_stream() || is_encoded(headers) || super::protocol::is_grpc(headers) {
        // Compressed bytes cannot be scanned; gRPC messages are length-prefixed, so a
        // replaced placeholder would corrupt them. Both stream as they come (a bidi gRPC call
        // sends its next message only after an answer: it must not be held back).
        return Ok(ReadBody(Read::Untouched(body)));
    }
    read_limited(body, limits).await.map(ReadBody)
}

/// Reads up to the limit: if the body ends within it, it is returned whole. Chunks are joined
/// as they arrive, so a body of a million one-byte chunks costs its bytes, not a million
/// frames.
async fn read_limited(body: ClientBody, limits: &BodyLimits<'_>) -> Result<Read, ProxyError> {
    let declared = body.size_hint().exact();
    if declared.is_some_and(|n| n > limits.max_buffered) {
        return Ok(Read::Streaming(Prefixed::new(Buffered::default(), body)));
    }
    let mut body = body;
    let mut read = Buffered::default();
    let mut reservation = limits.budget.reservation();
    let mut trailers = None;
    loop {
        match body.frame().await {
            None => break,
            Some(Err(e)) if e.is::<BodyTimedOut>() => return Err(ProxyError::BodyTimeout(body.timeout())),
            Some(Err(e)) => return Err(ProxyError::BadRequest(format!("reading the request body failed: {e}"))),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(chunk) => {
                    if !reservation.grow(chunk.len() as u64, limits.budget_limit) {
                        return Err(ProxyError::Overloaded);
                    }
                    read.push(chunk);
                    if read.len > limits.max_buffered {
                        // Too big to rewrite whole: stream it, the part read so far first.
                        // The reservation goes with the prefix until it has been sent.
                        read.reservation = Some(reservation);
                        return Ok(Read::Streaming(Prefixed::new(read, body)));
                    }
                }
                Err(frame) => trailers = frame.into_trailers().ok(),
            },
        }
    }
    Ok(Read::Whole { raw: read.take_all(), trailers, reservation })
}

/// A routed request's body before its headers are filled in: not substituted yet, or (for a
/// token that signs its hash) already read and substituted.
pub enum Pending {
    Unsubstituted(RequestBody),
    Ready(ProxyBody, Option<Replayable>),
}

/// Reads the body before the headers are filled in, for a request whose headers write a
/// token that signs it ([`read_for_signing`]). The caller asks
/// `RequestTokens::needs_body` first; every other body is left for [`substituted`].
pub async fn read_first_for_signing(
    body: RequestBody,
    headers: &mut HeaderMap,
    tokens: &Arc<dyn Resolve>,
    limits: &BodyLimits<'_>,
    signing: &crate::snapshot::RequestTokens,
) -> Result<Pending, ProxyError> {
    let empty = match &body {
        RequestBody::Client(client) => client.is_end_stream(),
        RequestBody::Read(read) => read.whole().is_some_and(Bytes::is_empty),
    };
    if empty {
        // No body: its hash is that of nothing, and it is sent as before (no length added).
        signing.set_body_sha256(sha256(&[]));
        return Ok(Pending::Unsubstituted(body));
    }
    let (body, replay) = read_for_signing(body, headers, Arc::clone(tokens), limits, signing).await?;
    Ok(Pending::Ready(body, replay))
}

/// Reads a routed request's body whole and substitutes it before its headers, for a token
/// that signs the body's hash (`body_sha256`): the hash of the body as it will be sent is
/// handed to `signing` before the headers are filled in. A compressed body is hashed as it
/// is (it is not rewritten). A body larger than `max_buffered` cannot be hashed before it is
/// sent: 413 `body_too_large_to_sign`. Such a request is not replayed after a 401.
async fn read_for_signing(
    body: RequestBody,
    headers: &mut HeaderMap,
    tokens: Arc<dyn Resolve>,
    limits: &BodyLimits<'_>,
    signing: &crate::snapshot::RequestTokens,
) -> Result<(ProxyBody, Option<Replayable>), ProxyError> {
    let read = match body {
        RequestBody::Client(client) => read_limited(client, limits).await?,
        // Left unread by the cache (encoded or gRPC): read it now.
        RequestBody::Read(ReadBody(Read::Untouched(client))) => read_limited(client, limits).await?,
        RequestBody::Read(ReadBody(read)) => read,
    };
    let (raw, trailers, reservation) = match read {
        Read::Whole { raw, trailers, reservation } => (raw, trailers, reservation),
        Read::Copy { raw, reservation } => (raw, None, reservation),
        Read::Streaming(_) | Read::Untouched(_) => return Err(ProxyError::BodyTooLargeToSign(limits.max_buffered)),
    };
    let mut digest = [0u8; 32];
    let body = if is_encoded(headers) || super::protocol::is_grpc(headers) {
        // Sent as it is, so hashed as it is.
        digest = sha256(&raw);
        headers.remove(header::TRANSFER_ENCODING);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(raw.len()));
        let frames = VecDeque::from([Frame::data(raw)]);
        Frames { frames, _reservation: reservation }.boxed_unsync()
    } else {
        rewrite_whole(raw, trailers, headers, tokens, reservation, Some(&mut digest))?
    };
    signing.set_body_sha256(digest);
    Ok((body, None))
}

/// The SHA-256 of `bytes`.
fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref());
    out
}

/// Prepares a routed request's body, substituting placeholders with `tokens`. Adjusts
/// Content-Length / Transfer-Encoding in `headers` to match what will be sent.
///
/// Also returns the body as the client sent it when it was read whole (or was empty), so the
/// request can be sent again with a renewed token ([`replay`]); a streamed body cannot.
pub async fn substituted(
    body: RequestBody,
    method: &Method,
    headers: &mut HeaderMap,
    tokens: Arc<dyn Resolve>,
    limits: BodyLimits<'_>,
) -> Result<(ProxyBody, Option<Replayable>), ProxyError> {
    let ReadBody(read) = match body {
        RequestBody::Client(body) => read(body, headers, &limits).await?,
        RequestBody::Read(read) => read,
    };
    match read {
        Read::Untouched(body) => {
            let replay = body.is_end_stream().then(|| Replayable { raw: Bytes::new(), trailers: None });
            Ok((untouched(body, method, headers), replay))
        }
        Read::Streaming(prefixed) => Ok((streamed(prefixed, method, headers, tokens), None)),
        Read::Whole { raw, trailers, reservation } => {
            let replay = Replayable { raw: raw.clone(), trailers: trailers.clone() };
            Ok((rewrite_whole(raw, trailers, headers, tokens, reservation, None)?, Some(replay)))
        }
        Read::Copy { raw, .. } if raw.is_empty() => {
            let empty = http_body_util::Empty::new().map_err(|never| -> BoxError { match never {} }).boxed_unsync();
            Ok((empty, Some(Replayable { raw, trailers: None })))
        }
        Read::Copy { raw, reservation } => {
            let replay = Replayable { raw: raw.clone(), trailers: None };
            Ok((rewrite_whole(raw, None, headers, tokens, reservation, None)?, Some(replay)))
        }
    }
}

/// A request body as the client sent it, kept (shared, not copied) for one replay.
#[derive(Clone)]
pub struct Replayable {
    raw: Bytes,
    trailers: Option<HeaderMap>,
}

/// The body of a request sent again, substituted with `tokens` (the renewed values).
pub fn replay(
    body: &Replayable,
    headers: &mut HeaderMap,
    tokens: Arc<dyn Resolve>,
    budget: &Arc<BufferBudget>,
    budget_limit: u64,
) -> Result<ProxyBody, ProxyError> {
    if body.raw.is_empty() && body.trailers.is_none() {
        return Ok(http_body_util::Empty::new().map_err(|never| -> BoxError { match never {} }).boxed_unsync());
    }
    let mut reservation = budget.reservation();
    if !reservation.grow(body.raw.len() as u64, budget_limit) {
        return Err(ProxyError::Overloaded);
    }
    rewrite_whole(body.raw.clone(), body.trailers.clone(), headers, tokens, reservation, None)
}

/// Substitutes a body read whole and frames it with its exact length (or chunked, to carry
/// trailers). With `digest`, writes the SHA-256 of the body as it will be sent there.
fn rewrite_whole(
    whole: Bytes,
    trailers: Option<HeaderMap>,
    headers: &mut HeaderMap,
    tokens: Arc<dyn Resolve>,
    reservation: Reservation,
    digest: Option<&mut [u8; 32]>,
) -> Result<ProxyBody, ProxyError> {
    let mut substituter = BodySubstituter::with_syntax(Arc::clone(&tokens), Syntax::for_body(headers));
    let mut pieces = Vec::new();
    match tokens.body_regions(&whole) {
        None => substituter.push(whole, &mut pieces)?,
        // Each region is judged by its own rule (a route's `substitute_in` JSON pointers).
        Some(regions) => {
            for (range, region) in regions {
                tokens.enter_region(region);
                substituter.push(whole.slice(range), &mut pieces)?;
            }
            tokens.enter_region(crate::substitute::OUTSIDE_REGIONS);
        }
    }
    substituter.finish(&mut pieces);
    if let Some(out) = digest {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        pieces.iter().for_each(|p| ctx.update(p));
        out.copy_from_slice(ctx.finish().as_ref());
    }
    headers.remove(header::TRANSFER_ENCODING);
    // The pieces (text slices and token values) are sent as they are, without joining them:
    // the exact Content-Length is their sum.
    let mut frames: VecDeque<Frame<Bytes>> = pieces.into_iter().filter(|p| !p.is_empty()).map(Frame::data).collect();
    match trailers {
        None => {
            let length: usize = frames.iter().filter_map(|f| f.data_ref().map(Bytes::len)).sum();
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        Some(mut trailers) => {
            substitute_header_map(&mut trailers, &*tokens, MAX_TRAILERS)
                .map_err(|e| ProxyError::from_bounded(e, ProxyError::HeadersTooLarge(MAX_TRAILERS as u64)))?;
            headers.remove(header::CONTENT_LENGTH);
            headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            frames.push_back(Frame::trailers(trailers));
        }
    }
    Ok(Frames { frames, _reservation: reservation }.boxed_unsync())
}

fn streamed(body: Prefixed, method: &Method, headers: &mut HeaderMap, tokens: Arc<dyn Resolve>) -> ProxyBody {
    headers.remove(header::CONTENT_LENGTH);
    let body = SubstitutingBody::with_syntax(body, tokens, Syntax::for_body(headers));
    frame_unusual_body(method, headers, &body);
    body.boxed_unsync()
}

/// Body bytes read so far: the first chunk as it came (no copy for the usual one-chunk
/// body), later ones joined into one buffer.
#[derive(Default)]
struct Buffered {
    first: Option<Bytes>,
    rest: BytesMut,
    len: u64,
    /// Budget held for these bytes until they have been sent.
    reservation: Option<Reservation>,
}

impl Buffered {
    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len() as u64;
        match &self.first {
            None => self.first = Some(chunk),
            Some(_) => self.rest.extend_from_slice(&chunk),
        }
    }

    fn take_all(&mut self) -> Bytes {
        let first = self.first.take().unwrap_or_default();
        if self.rest.is_empty() {
            return first;
        }
        let mut joined = BytesMut::with_capacity(first.len() + self.rest.len());
        joined.extend_from_slice(&first);
        joined.extend_from_slice(&self.rest);
        self.rest = BytesMut::new();
        joined.freeze()
    }

    fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }

    fn next(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        if self.rest.is_empty() {
            self.reservation = None;
            return None;
        }
        Some(self.rest.split().freeze())
    }
}

/// A fixed list of frames, holding its share of the buffer budget until dropped.
struct Frames {
    frames: VecDeque<Frame<Bytes>>,
    _reservation: Reservation,
}

impl Body for Frames {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.frames.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        let length: usize = self.frames.iter().filter_map(|f| f.data_ref().map(Bytes::len)).sum();
        SizeHint::with_exact(length as u64)
    }
}

/// Bytes already read from the client, followed by the rest of its body.
struct Prefixed {
    prefix: Buffered,
    rest: ClientBody,
}

impl Prefixed {
    fn new(prefix: Buffered, rest: ClientBody) -> Prefixed {
        Prefixed { prefix, rest }
    }
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(chunk) = self.prefix.next() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
