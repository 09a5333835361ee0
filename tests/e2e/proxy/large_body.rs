//! Invariant 4: a 64 MiB body streams through the real binary with bounded memory, every
//! placeholder substituted, including those split across the client's chunks.

use std::time::SystemTime;

use bytes::Bytes;
use http::Request;

use crate::support::client::{channel_body, send};
use crate::support::config::{config, route, rs256_token, ConfigDir};
use crate::support::jwt::verify_demo;
use crate::support::sidecar::SidecarProcess;
use crate::support::upstream::Upstream;

const TOTAL: usize = 64 << 20;
const CHUNK: usize = 64 << 10;
const PLACEHOLDER: &[u8] = b"{/auth_token}";
const PEAK_RSS_LIMIT: u64 = 48 << 20;

/// The body and the offsets of its placeholders (sorted). Text without braces, with a
/// placeholder across every chunk boundary (split at every offset from 0 to 13), one inside
/// every chunk, and look-alikes that must pass through unchanged.
fn make_body() -> (Vec<u8>, Vec<usize>) {
    let line = b"the quick brown fox jumps over the lazy dog, 0123456789 / () [] <>\n";
    let mut body = Vec::with_capacity(TOTAL);
    while body.len() < TOTAL {
        body.extend_from_slice(line);
    }
    body.truncate(TOTAL);

    let mut at = Vec::new();
    for chunk in 0..TOTAL / CHUNK {
        let start = chunk * CHUNK;
        if chunk > 0 {
            at.push(start - chunk % (PLACEHOLDER.len() + 1));
        }
        at.push(start + 1000 + (chunk * 37) % 30_000);
        let decoys: [&[u8]; 3] = [b"{/nope}", b"{/auth_token ", b"{{/}"];
        let decoy = decoys[chunk % decoys.len()];
        body[start + 40_000..start + 40_000 + decoy.len()].copy_from_slice(decoy);
    }
    for &p in &at {
        body[p..p + PLACEHOLDER.len()].copy_from_slice(PLACEHOLDER);
    }
    (body, at)
}

fn substituted(input: &[u8], at: &[usize], token: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + at.len() * token.len());
    let mut from = 0;
    for &p in at {
        out.extend_from_slice(&input[from..p]);
        out.extend_from_slice(token);
        from = p + PLACEHOLDER.len();
    }
    out.extend_from_slice(&input[from..]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_chunked_body_streams_through_the_binary_with_bounded_memory() {
    let upstream = Upstream::start().await;
    let dir = ConfigDir::empty();
    let toml = config(
        "",
        &format!(
            "{}{}",
            rs256_token("tok", "15m"),
            route(upstream.port(), &["tok"], "[routes.placeholders]\nauth_token = \"tok\"")
        ),
    );
    let mut child = SidecarProcess::start(&dir.write_config(&toml), "info").await;
    let rss_ready = child.peak_rss();

    let (input, at) = make_body();
    let input = Bytes::from(input);
    let (tx, body) = channel_body(4);
    let req = Request::post(upstream.url("/upload"))
        .header("host", upstream.addr.to_string())
        .header("x-token", "{/auth_token}")
        .header("content-type", "application/octet-stream")
        .body(body)
        .expect("request");
    let chunks = input.clone();
    let feeder = tokio::spawn(async move {
        for start in (0..TOTAL).step_by(CHUNK) {
            if tx.send(chunks.slice(start..start + CHUNK)).await.is_err() {
                break;
            }
        }
        SystemTime::now()
    });
    let reply = send(child.proxy, req).await;
    let last_chunk_queued = feeder.await.expect("feeder");
    reply.assert_upstream_ok();
    let peak = child.peak_rss();
    assert!(child.running(), "the sidecar died; log:\n{}", child.log_text());

    let r = upstream.single();
    assert!(r.complete, "the upstream saw the body end with an error");
    assert!(r.header("content-length").is_none(), "a streamed body cannot know its length in advance");
    let token = r.header("x-token").expect("x-token").to_string();
    verify_demo(&token);
    let expected = substituted(&input, &at, token.as_bytes());
    let received = r.body();
    assert_eq!(received.len(), expected.len(), "wrong total length after {} substitutions", at.len());
    if received.as_ref() != expected.as_slice() {
        let diff = received.iter().zip(&expected).position(|(a, b)| a != b).unwrap_or(expected.len());
        let show =
            |b: &[u8]| String::from_utf8_lossy(&b[diff.saturating_sub(40)..(diff + 40).min(b.len())]).into_owned();
        panic!("body differs at byte {diff}:\n got: {:?}\nwant: {:?}", show(&received), show(&expected));
    }

    let first_byte = r.first_body_byte_at().expect("first body byte");
    assert!(first_byte < last_chunk_queued, "the upstream got nothing before the client had sent everything");
    eprintln!("peak RSS of the sidecar: {} KiB when ready, {} KiB after 64 MiB", rss_ready >> 10, peak >> 10);
    assert!(peak < PEAK_RSS_LIMIT, "peak RSS {} KiB is over {} KiB", peak >> 10, PEAK_RSS_LIMIT >> 10);
}
