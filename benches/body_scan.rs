//! Body substitution throughput (`BodySubstituter`), in bytes per second.
//!
//! Bodies of 1 KiB, 64 KiB and 16 MiB of JSON-like text (braces, quotes and slashes, so the
//! `{/` searcher meets near-misses) with no placeholder, one placeholder in the middle, or
//! one every 4 KiB. Two ways in, matching `src/proxy/body.rs`:
//!
//! - `stream/*`: the body arrives in 16 KiB chunks (as hyper hands them over) and each chunk
//!   is pushed through one substituter, the path of bodies over `max_buffered_body`;
//! - `buffered/*` (bodies up to 1 MiB): the chunks are gathered into one buffer, pushed whole,
//!   and the output pieces joined into one `Bytes`, which is what the proxy does for bodies
//!   under `max_buffered_body` so that Content-Length stays exact.
//!
//! The value inserted is 800 bytes, about the size of an RS256 JWT with a few claims.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use token_sidecar::substitute::{BodySubstituter, Resolution, Resolve};

const KIB: usize = 1024;
const CHUNK: usize = 16 * KIB;
const SIZES: [(usize, &str); 3] = [(KIB, "1KiB"), (64 * KIB, "64KiB"), (16 * KIB * KIB, "16MiB")];
const PLACEHOLDER: &[u8] = b"{/auth_token}";

/// Resolves `auth_token` to a JWT-sized value; every other name is plain text.
struct OneToken(Bytes);

impl Resolve for OneToken {
    fn resolve(&self, name: &str) -> Resolution {
        if name == "auth_token" {
            Resolution::Value(self.0.clone())
        } else {
            Resolution::Unknown
        }
    }
}

#[derive(Clone, Copy)]
enum Pattern {
    None,
    One,
    Every4KiB,
}

impl Pattern {
    const ALL: [Pattern; 3] = [Pattern::None, Pattern::One, Pattern::Every4KiB];

    fn name(self) -> &'static str {
        match self {
            Pattern::None => "no_placeholder",
            Pattern::One => "one_placeholder",
            Pattern::Every4KiB => "every_4KiB",
        }
    }
}

/// `len` bytes of JSON-ish records, with placeholders written over the text where `pattern`
/// says. Near-misses (`{"`, `/`, `{ /`) are everywhere, as in real payloads.
fn body(len: usize, pattern: Pattern) -> Bytes {
    const RECORD: &[u8] =
        br#"{"id":1234567,"path":"/v1/items/42","tags":["a/b","c"],"note":"{ /not a placeholder }"},"#;
    let mut buf: Vec<u8> = RECORD.iter().copied().cycle().take(len).collect();
    let mut put = |at: usize| {
        let at = at.min(len - PLACEHOLDER.len());
        buf[at..at + PLACEHOLDER.len()].copy_from_slice(PLACEHOLDER);
    };
    match pattern {
        Pattern::None => {}
        Pattern::One => put(len / 2),
        Pattern::Every4KiB => {
            // Offset so that some placeholders straddle 16 KiB chunk boundaries.
            let mut at = 4 * KIB - 5;
            while at < len {
                put(at);
                at += 4 * KIB;
            }
            if len < 4 * KIB {
                put(len / 2);
            }
        }
    }
    Bytes::from(buf)
}

/// The body as hyper would deliver it: zero-copy slices of at most 16 KiB.
fn chunks(body: &Bytes) -> Vec<Bytes> {
    (0..body.len()).step_by(CHUNK).map(|at| body.slice(at..(at + CHUNK).min(body.len()))).collect()
}

fn resolver() -> Arc<dyn Resolve> {
    let jwt: Vec<u8> = b"eyJhbGciOiJSUzI1NiJ9.".iter().copied().cycle().take(800).collect();
    Arc::new(OneToken(Bytes::from(jwt)))
}

/// Streams `chunks` through one substituter; returns the output size.
fn stream(resolver: &Arc<dyn Resolve>, chunks: &[Bytes], out: &mut Vec<Bytes>) -> usize {
    let mut s = BodySubstituter::new(Arc::clone(resolver));
    let mut total = 0;
    for chunk in chunks {
        s.push(chunk.clone(), out).expect("no forbidden placeholder");
        total += out.iter().map(Bytes::len).sum::<usize>();
        out.clear();
    }
    s.finish(out);
    total += out.iter().map(Bytes::len).sum::<usize>();
    out.clear();
    total
}

/// What `proxy::body::substituted` does for a body under the buffering limit.
fn buffered(resolver: &Arc<dyn Resolve>, chunks: &[Bytes]) -> Bytes {
    let mut whole = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
    for chunk in chunks {
        whole.extend_from_slice(chunk);
    }
    let mut s = BodySubstituter::new(Arc::clone(resolver));
    let mut pieces = Vec::new();
    s.push(whole.freeze(), &mut pieces).expect("no forbidden placeholder");
    s.finish(&mut pieces);
    match pieces.len() {
        1 => pieces.pop().unwrap_or_default(),
        _ => pieces.concat().into(),
    }
}

fn bench_body(c: &mut Criterion) {
    let resolver = resolver();

    let mut group = c.benchmark_group("body_scan/stream_16KiB_chunks");
    for (size, size_name) in SIZES {
        for pattern in Pattern::ALL {
            let body = body(size, pattern);
            let chunks = chunks(&body);
            let mut out = Vec::with_capacity(16);
            let expected_growth = {
                let n = stream(&resolver, &chunks, &mut out);
                assert!(n >= size, "output shorter than input");
                n - size
            };
            assert_eq!(expected_growth > 0, !matches!(pattern, Pattern::None), "placeholders must be replaced");
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(BenchmarkId::new(pattern.name(), size_name), &chunks, |b, chunks| {
                b.iter(|| black_box(stream(&resolver, black_box(chunks), &mut out)))
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("body_scan/buffered_whole");
    for (size, size_name) in SIZES.iter().copied().filter(|(size, _)| *size <= 1024 * KIB) {
        for pattern in Pattern::ALL {
            let body = body(size, pattern);
            let chunks = chunks(&body);
            assert!(buffered(&resolver, &chunks).len() >= size);
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(BenchmarkId::new(pattern.name(), size_name), &chunks, |b, chunks| {
                b.iter(|| black_box(buffered(&resolver, black_box(chunks))))
            });
        }
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_body
}
criterion_main!(benches);
