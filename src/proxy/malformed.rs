//! The answer to a request hyper cannot parse, in the sidecar's own error format.
//!
//! hyper's HTTP/1.1 server answers a malformed request head itself (400, or 414/431 for an
//! over-long target or head) with an empty body and closes; no service is called, so there
//! is no hook for it. This wrapper sits between hyper and the connection and recognises that
//! one answer: hyper writes it only between messages, as the last bytes of the connection,
//! with no response of ours in progress. A write that is exactly that answer, made while no
//! request is in flight, every earlier response has been flushed, and the connection has not
//! been handed to a tunnel or upgrade, can be nothing else; it is replaced by the JSON error
//! and `x-token-sidecar-error` header every other sidecar error carries. Any other write
//! passes through untouched.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};

use super::listen::Activity;

/// The statuses hyper answers parse errors with, and how the sidecar names each.
const ANSWERS: [(&[u8], &str, &str, &str); 3] = [
    (
        b"HTTP/1.1 400 Bad Request\r\n",
        "400",
        "bad_request",
        "the request is not valid HTTP/1.1 (method, target, header or version)",
    ),
    (b"HTTP/1.1 414 URI Too Long\r\n", "414", "uri_too_long", "the request target is too long to read"),
    (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
        "431",
        "headers_too_large",
        "the request head is too large to read",
    ),
];

pin_project_lite::pin_project! {
    /// A connection's IO, with hyper's bare parse-error answer replaced.
    pub struct Malformed<I> {
        #[pin]
        inner: I,
        activity: Arc<Activity>,
        // The replacement answer, still to be written.
        pending: Bytes,
    }
}

impl<I> Malformed<I> {
    pub fn new(inner: I, activity: Arc<Activity>) -> Self {
        Malformed { inner, activity, pending: Bytes::new() }
    }
}

/// Whether `bytes` is hyper's whole answer to a parse error: a status line from [`ANSWERS`],
/// `content-length: 0`, at most `connection: close` and a `date`, and the end of the head.
/// Returns the replacement and its status, for the requests counter.
fn replacement_for(bytes: &[u8]) -> Option<(Bytes, &'static str)> {
    let (status_line, status, code, message) = ANSWERS.iter().find(|(line, ..)| bytes.starts_with(line))?;
    let headers = bytes.get(status_line.len()..)?.strip_suffix(b"\r\n\r\n")?;
    let mut date = None;
    let mut length_zero = false;
    for line in headers.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.eq_ignore_ascii_case(b"content-length: 0") {
            length_zero = true;
        } else if line.eq_ignore_ascii_case(b"connection: close") {
        } else if line.len() > 6 && line[..6].eq_ignore_ascii_case(b"date: ") && date.is_none() {
            date = Some(&line[6..]);
        } else {
            return None;
        }
    }
    if !length_zero {
        return None;
    }
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(status_line);
    out.extend_from_slice(b"content-type: application/json\r\nx-token-sidecar-error: ");
    out.extend_from_slice(code.as_bytes());
    out.extend_from_slice(format!("\r\ncontent-length: {}\r\nconnection: close\r\n", body.len()).as_bytes());
    if let Some(date) = date {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    Some((Bytes::from(out), status))
}

impl<I: hyper::rt::Write> Malformed<I> {
    /// Replaces `buf` if it is hyper's parse-error answer written between messages.
    fn replace(self: Pin<&mut Self>, buf: &[u8]) -> bool {
        if !self.activity.between_messages() {
            return false;
        }
        let Some((answer, status)) = replacement_for(buf) else { return false };
        metrics::counter!("proxy_requests_total", "route" => "none", "status" => status).increment(1);
        *self.project().pending = answer;
        true
    }

    fn poll_pending(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut this = self.project();
        while !this.pending.is_empty() {
            let n = ready!(this.inner.as_mut().poll_write(cx, this.pending))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            this.pending.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: hyper::rt::Read> hyper::rt::Read for Malformed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<I: hyper::rt::Write> hyper::rt::Write for Malformed<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        ready!(self.as_mut().poll_pending(cx))?;
        if self.as_mut().replace(buf) {
            return Poll::Ready(Ok(buf.len()));
        }
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        ready!(self.as_mut().poll_pending(cx))?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        // hyper's answer is under 100 bytes; never gather a large write to look at it.
        if total <= 256 && self.activity.between_messages() {
            let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            if self.as_mut().replace(&joined) {
                return Poll::Ready(Ok(total));
            }
        }
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.as_mut().poll_pending(cx))?;
        let this = self.project();
        ready!(this.inner.poll_flush(cx))?;
        this.activity.flushed();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.as_mut().poll_pending(cx))?;
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_answers_are_recognised_and_nothing_else() {
        let (answer, status) = replacement_for(
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Mon, 23 Nov 2026 12:00:00 GMT\r\n\r\n",
        )
        .expect("hyper's answer");
        assert_eq!(status, "400");
        let text = std::str::from_utf8(&answer).expect("utf-8");
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(text.contains("\r\nx-token-sidecar-error: bad_request\r\n"), "{text}");
        assert!(text.contains("\r\ndate: Mon, 23 Nov 2026 12:00:00 GMT\r\n"), "{text}");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{text}");
        let json: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(json["error"], "bad_request");

        assert!(replacement_for(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n").is_some());
        for other in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nx-upstream: 1\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\nno",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nHTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\n",
        ] {
            assert!(replacement_for(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }
}
