//! What a client speaks inside a CONNECT tunnel, told from its first byte.
//!
//! Clients tunnel plain `http://` requests too: Node's undici (`EnvHttpProxyAgent`), grpcio
//! and Python's `websockets` send `CONNECT host:80` and then HTTP/1.1 or h2 in clear text.
//! For a host and port with an `http` route the proxy must see those requests, or a
//! placeholder would reach the routed host untouched. A TLS record starts with the handshake
//! content type 0x16; an HTTP/1.1 request line or the h2 preface never does.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The first byte of a TLS record carrying a handshake message (the ClientHello).
const TLS_HANDSHAKE: u8 = 0x16;

/// What the client opened the tunnel with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// A TLS ClientHello.
    Tls,
    /// Anything else: served as plain HTTP (HTTP/1.1 or h2 with prior knowledge).
    Plain,
}

/// Why a tunnel's first byte was not read.
#[derive(Debug, thiserror::Error)]
pub enum SniffError {
    #[error("the client sent nothing within [proxy] handshake_timeout")]
    Silent,
    #[error("the client closed the tunnel before sending anything")]
    Closed,
    #[error("reading the tunnel failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the client's first bytes (waiting at most `timeout`) and says what they are. The
/// bytes read are given back in front of the stream.
pub async fn sniff<I>(mut io: I, timeout: Duration) -> Result<(Opening, Rewind<I>), SniffError>
where
    I: AsyncRead + Unpin,
{
    let mut first = vec![0u8; 512];
    let read = tokio::time::timeout(timeout, io.read(&mut first)).await.map_err(|_| SniffError::Silent)??;
    if read == 0 {
        return Err(SniffError::Closed);
    }
    first.truncate(read);
    let opening = if first[0] == TLS_HANDSHAKE { Opening::Tls } else { Opening::Plain };
    Ok((opening, Rewind { prefix: Bytes::from(first), inner: io }))
}

/// A stream with bytes already read from it put back in front.
pub struct Rewind<I> {
    prefix: Bytes,
    inner: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn tls_and_plain_openings_are_told_apart_and_nothing_is_lost() {
        for (first, opening) in [
            (&b"\x16\x03\x01\x02\x00\x01"[..], Opening::Tls),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Opening::Plain),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Opening::Plain),
        ] {
            let (mut client, server) = tokio::io::duplex(64);
            client.write_all(first).await.unwrap();
            client.shutdown().await.unwrap();
            let (seen, mut rewound) = sniff(server, Duration::from_secs(5)).await.unwrap();
            assert_eq!(seen, opening);
            let mut all = Vec::new();
            rewound.read_to_end(&mut all).await.unwrap();
            assert_eq!(all, first);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_times_out() {
        let (_client, server) = tokio::io::duplex(64);
        assert!(matches!(sniff(server, Duration::from_secs(3)).await, Err(SniffError::Silent)));
    }
}
