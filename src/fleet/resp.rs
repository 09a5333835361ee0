//! RESP2, the Redis wire protocol: commands out as arrays of bulk strings, replies read with a
//! bound on every size.
//!
//! The bounds matter because Redis is shared: whoever can write to it must not be able to make
//! a sidecar read a 512 MiB value, or a line without end, into memory. Each call says how large
//! a value it can use; anything larger is a protocol error and the connection is dropped.

use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// Longest status, error or length line accepted.
const MAX_LINE: usize = 4096;
/// Elements of an array reply, and how deep arrays may nest.
const MAX_ELEMENTS: usize = 1024;
const MAX_DEPTH: usize = 4;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Status(String),
    /// `-ERR ...`: Redis answered, with an error.
    Error(String),
    Integer(i64),
    /// `$-1` is `Bulk(None)`: no such key.
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// Encodes one command: `*N\r\n` then `$LEN\r\nARG\r\n` for each argument.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let size: usize = args.iter().map(|a| a.len() + 16).sum::<usize>() + 16;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Reads one reply; a bulk string longer than `max_bulk` is refused unread.
pub async fn read<R: AsyncBufRead + Unpin>(reader: &mut R, max_bulk: usize) -> io::Result<Reply> {
    read_nested(reader, max_bulk, 0).await
}

async fn read_nested<R: AsyncBufRead + Unpin>(reader: &mut R, max_bulk: usize, depth: usize) -> io::Result<Reply> {
    let line = read_line(reader).await?;
    let (kind, rest) = line.split_first().ok_or_else(|| invalid("empty reply line"))?;
    let text = || String::from_utf8_lossy(rest).into_owned();
    match kind {
        b'+' => Ok(Reply::Status(text())),
        b'-' => Ok(Reply::Error(text())),
        b':' => Ok(Reply::Integer(number(rest)?)),
        b'$' => {
            let len = number(rest)?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let len = usize::try_from(len).map_err(|_| invalid("bad bulk length"))?;
            if len > max_bulk {
                return Err(invalid(format!("a value of {len} bytes is larger than the {max_bulk} accepted")));
            }
            let mut value = vec![0u8; len + 2];
            reader.read_exact(&mut value).await?;
            if !value.ends_with(b"\r\n") {
                return Err(invalid("bulk string not ended by CRLF"));
            }
            value.truncate(len);
            Ok(Reply::Bulk(Some(value)))
        }
        b'*' => {
            let count = number(rest)?;
            if count < 0 {
                return Ok(Reply::Array(None));
            }
            let count = usize::try_from(count).map_err(|_| invalid("bad array length"))?;
            if count > MAX_ELEMENTS || depth >= MAX_DEPTH {
                return Err(invalid("array reply too large or too deep"));
            }
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                items.push(Box::pin(read_nested(reader, max_bulk, depth + 1)).await?);
            }
            Ok(Reply::Array(Some(items)))
        }
        _ => Err(invalid("unknown reply type")),
    }
}

fn number(digits: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(digits).ok().and_then(|s| s.parse().ok()).ok_or_else(|| invalid("bad number in reply"))
}

/// One `\r\n`-terminated line without its terminator, at most [`MAX_LINE`] bytes.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "Redis closed the connection"));
        }
        match memchr::memchr(b'\n', buf) {
            Some(i) => {
                line.extend_from_slice(&buf[..i]);
                reader.consume(i + 1);
                break;
            }
            None => {
                line.extend_from_slice(buf);
                let n = buf.len();
                reader.consume(n);
            }
        }
        if line.len() > MAX_LINE {
            return Err(invalid("reply line too long"));
        }
    }
    if line.len() > MAX_LINE || line.pop() != Some(b'\r') {
        return Err(invalid("reply line not ended by CRLF or too long"));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8], max: usize) -> io::Result<Reply> {
        let mut reader = tokio::io::BufReader::with_capacity(3, bytes);
        read(&mut reader, max).await
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(encode(&[b"SET", b"k", b"a\r\nb"]), b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n");
    }

    #[tokio::test]
    async fn every_reply_type_reads_across_small_reads() {
        assert_eq!(parse(b"+OK\r\n", 10).await.unwrap(), Reply::Status("OK".into()));
        assert_eq!(parse(b"-WRONGPASS no\r\n", 10).await.unwrap(), Reply::Error("WRONGPASS no".into()));
        assert_eq!(parse(b":-42\r\n", 10).await.unwrap(), Reply::Integer(-42));
        assert_eq!(parse(b"$-1\r\n", 10).await.unwrap(), Reply::Bulk(None));
        assert_eq!(parse(b"$5\r\na\r\nbc\r\n", 10).await.unwrap(), Reply::Bulk(Some(b"a\r\nbc".to_vec())));
        assert_eq!(
            parse(b"*2\r\n$1\r\nx\r\n:1\r\n", 10).await.unwrap(),
            Reply::Array(Some(vec![Reply::Bulk(Some(b"x".to_vec())), Reply::Integer(1)]))
        );
    }

    #[tokio::test]
    async fn oversized_or_malformed_replies_are_refused_without_reading_them() {
        // The length alone refuses it: nothing of the value needs to arrive.
        assert!(parse(b"$536870912\r\n", 1024).await.is_err());
        assert!(parse(&[b'+'; 10_000], 1024).await.is_err(), "a line without end");
        assert!(parse(b"$3\r\nabcde", 10).await.is_err(), "no CRLF after the value");
        assert!(parse(b"$3\r\nab", 10).await.is_err(), "cut off");
        assert!(parse(b"*99999\r\n", 10).await.is_err());
        assert!(parse(b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", 10).await.is_err(), "too deep");
        assert!(parse(b"?x\r\n", 10).await.is_err());
        assert!(parse(b":12a\r\n", 10).await.is_err());
        assert!(parse(b"+OK\n", 10).await.is_err(), "bare LF");
    }

    proptest::proptest! {
        /// Whatever a server sends, reading ends (with a reply or an error) and never panics.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let _ = runtime.block_on(parse(&bytes, 64));
        }
    }
}
