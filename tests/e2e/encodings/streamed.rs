//! Streamed bodies (larger than `max_buffered_body`, sent chunked): a spelling split across
//! chunks is still found. Each spelling is sent in two writes, and the second is sent only once
//! the upstream has received everything before the placeholder, so the split really falls
//! between two reads of the sidecar, and the sidecar holds back no more than the unfinished
//! spelling.

use std::time::Duration;

use bytes::Bytes;
use http::Request;

use crate::encodings::{bearer_jwt, World, HOSTILE, MAX_BUFFERED};
use crate::support::client::{channel_body, send};
use crate::support::wait::wait_until;

/// Streams `pieces` (each `(marker, spelling, cut)`: the field `marker=` then the spelling in
/// two writes split at `cut`) as a chunked body of `content_type` after a filler larger than
/// the buffering limit; returns the body the upstream received and the route's token.
async fn stream_split(world: &World, content_type: &str, pieces: &[(&str, &str, usize)]) -> (String, String) {
    let (tx, body) = channel_body(4);
    let req = Request::post(world.url("/stream"))
        .header("authorization", "Bearer {/auth_token}")
        .header("content-type", content_type)
        .body(body)
        .expect("request");
    let proxy = world.run.proxy();
    let reply = tokio::spawn(async move { send(proxy, req).await });
    let filler = format!("filler={}", "x".repeat(MAX_BUFFERED + 100));
    tx.send(Bytes::from(filler)).await.expect("send filler");
    for (marker, spelling, cut) in pieces {
        let (first, second) = spelling.split_at(*cut);
        tx.send(Bytes::from(format!("&{marker}={first}"))).await.expect("send");
        let prefix = format!("&{marker}=");
        let arrived = wait_until(Duration::from_secs(10), async || {
            world.upstream.last().is_some_and(|r| String::from_utf8_lossy(&r.body()).contains(&prefix))
        })
        .await;
        assert!(arrived, "{marker}: the text before the placeholder did not reach the upstream");
        let so_far = String::from_utf8_lossy(&world.upstream.last().expect("request").body()).into_owned();
        assert!(
            so_far.ends_with(&prefix),
            "{marker}: the sidecar should hold back exactly the unfinished {first:?}; the upstream has {:?}",
            &so_far[so_far.len().saturating_sub(40)..]
        );
        tx.send(Bytes::from(second.to_string())).await.expect("send");
    }
    drop(tx);
    let reply = reply.await.expect("client task");
    reply.assert_upstream_ok();
    let seen = world.received();
    assert!(seen.header("content-length").is_none(), "a streamed body is sent chunked");
    let token = bearer_jwt(&seen);
    (seen.body_text(), token)
}

/// Cuts inside the opener, the name and the closer of `spelling`.
fn cuts(spelling: &'static str) -> [usize; 3] {
    [2, spelling.len() / 2, spelling.len() - 1]
}

#[tokio::test]
async fn a_form_body_finds_percent_encoded_spellings_split_across_chunks() {
    let world = World::start().await;
    let mut pieces = Vec::new();
    let spellings = ["%7B%2Fauth_token%7D", "%7b/auth_token%7d", "{/auth_token}", "%7B%2Fhostile%7D"];
    let markers: Vec<String> = (0..spellings.len() * 3).map(|i| format!("f{i}")).collect();
    for (i, spelling) in spellings.iter().enumerate() {
        for (j, cut) in cuts(spelling).into_iter().enumerate() {
            pieces.push((markers[i * 3 + j].as_str(), *spelling, cut));
        }
    }
    let (body, token) = stream_split(&world, "application/x-www-form-urlencoded", &pieces).await;
    let hostile: String = HOSTILE
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let mut want = format!("filler={}", "x".repeat(MAX_BUFFERED + 100));
    for (marker, spelling, _) in &pieces {
        let value = if spelling.contains("hostile") { hostile.as_str() } else { token.as_str() };
        want.push_str(&format!("&{marker}={value}"));
    }
    assert_eq!(body, want);
}

#[tokio::test]
async fn a_json_body_finds_the_escaped_slash_spelling_split_across_chunks() {
    let world = World::start().await;
    let mut pieces = Vec::new();
    let spellings = ["{\\/auth_token}", "{/auth_token}", "{\\/hostile}"];
    let markers: Vec<String> = (0..spellings.len() * 3).map(|i| format!("j{i}")).collect();
    for (i, spelling) in spellings.iter().enumerate() {
        for (j, cut) in cuts(spelling).into_iter().enumerate() {
            pieces.push((markers[i * 3 + j].as_str(), *spelling, cut));
        }
    }
    let (body, token) = stream_split(&world, "application/json", &pieces).await;
    let hostile = serde_json::to_string(HOSTILE).expect("JSON string");
    let hostile = &hostile[1..hostile.len() - 1];
    let mut want = format!("filler={}", "x".repeat(MAX_BUFFERED + 100));
    for (marker, spelling, _) in &pieces {
        let value = if spelling.contains("hostile") { hostile } else { token.as_str() };
        want.push_str(&format!("&{marker}={value}"));
    }
    assert_eq!(body, want);
}
