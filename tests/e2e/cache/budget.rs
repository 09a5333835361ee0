//! Memory: the cache stays within `[cache] max_bytes` under a flood of distinct keys
//! (evicting the least recently used, counted), and a response larger than `max_body`
//! streams through to the client without being held whole, and is not stored.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use super::{assert_reply, cache_report, cache_state, cached_route};
use crate::support::client::{get, Client};
use crate::support::config::{config, rs256_token};
use crate::support::metrics::scrape;
use crate::support::origin::{Answer, Origin};
use crate::support::sidecar::{start, Running};

const MAX_BYTES: u64 = 256 << 10;
const BODY: usize = 16 << 10;
const FLOOD: usize = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_keys_stays_within_max_bytes() {
    let origin = Origin::start(|seen, _| Answer::ok(Bytes::from(vec![b'a' + (seen.uri.len() % 26) as u8; BODY]))).await;
    let text = config(
        "",
        &format!(
            "[cache]\nmax_bytes = \"256KiB\"\n{}{}",
            rs256_token("tok", "10m"),
            cached_route("flooded", origin.port(), &["tok"], "", "ttl = \"10m\"\nmax_body = \"64KiB\"")
        ),
    );
    let run = Running::start(&text).await;
    let warm = get(run.proxy(), &origin.url("/warm-up"), &[]).await;
    assert_eq!(cache_state(&warm), "miss");
    let rss_before = run.sidecar.rss();

    // 3000 distinct keys of 16 KiB: 48 MiB through a 256 KiB cache.
    let mut client = Client::new(run.proxy());
    for i in 0..FLOOD {
        let reply = client.get(&origin.url(&format!("/item/{i}")), &[]).await.expect("flood request");
        assert_eq!((reply.status.as_u16(), reply.body.len()), (200, BODY));
        if i % 500 == 0 {
            let held = scrape(run.admin()).await.value("cache_bytes", &[]).expect("cache_bytes");
            assert!(held as u64 <= MAX_BYTES, "cache_bytes {held} over max_bytes after {i} keys");
        }
    }
    let metrics = scrape(run.admin()).await;
    let held = metrics.value("cache_bytes", &[]).expect("cache_bytes") as u64;
    let evicted = metrics.count("cache_evictions_total", &[]);
    let report = cache_report(run.admin()).await;
    let entries = report["entries"].as_u64().unwrap();
    assert!(held <= MAX_BYTES && report["bytes"].as_u64().unwrap() <= MAX_BYTES, "{held} bytes; {report}");
    assert_eq!(held, report["bytes"].as_u64().unwrap(), "the gauge and the report agree");
    assert!((8..16).contains(&entries), "about max_bytes / 16 KiB entries kept: {report}");
    assert!(evicted >= (FLOOD - 16) as f64, "evictions counted: {evicted}");
    // The most recent keys are kept, the oldest went first.
    assert_eq!(cache_state(&client.get(&origin.url(&format!("/item/{}", FLOOD - 1)), &[]).await.unwrap()), "hit");
    assert_eq!(cache_state(&client.get(&origin.url("/item/0"), &[]).await.unwrap()), "miss");

    // Had the budget not held, the sidecar would have grown by the 48 MiB that went through.
    let grown = run.sidecar.peak_rss().saturating_sub(rss_before);
    assert!(grown < 16 << 20, "resident size grew by {} KiB", grown >> 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_over_max_body_streams_through_and_is_not_stored() {
    // 8 KiB first; the rest (256 KiB) only when the test says so.
    let origin = Origin::start(|seen, n| {
        let first = Bytes::from(format!("{n}:").into_bytes().into_iter().chain([b'x'; 8 << 10]).collect::<Vec<u8>>());
        match seen.uri.as_str() {
            "/big" => Answer::ok(first).then(vec![b'y'; 256 << 10]),
            _ => Answer::ok(first).then(vec![b'z'; 1024]),
        }
    })
    .await;
    let text = config(
        "",
        &format!(
            "{}{}",
            rs256_token("tok", "10m"),
            cached_route("streamed", origin.port(), &["tok"], "", "ttl = \"60s\"\nmax_body = \"64KiB\"")
        ),
    );
    let sidecar = start(&text).await;

    let stream = tokio::net::TcpStream::connect(sidecar.proxy_addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let url = origin.url("/big");
    let req = http::Request::get(&url).header("host", origin.addr.to_string()).body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(req).await.expect("response head");
    assert_eq!(cache_state_of(response.headers()), "miss");
    let mut body = response.into_body();
    // The first part reaches the client while the origin still holds the rest back.
    let mut received = 0usize;
    let first_part = tokio::time::timeout(Duration::from_secs(10), async {
        while received < 8 << 10 {
            let frame = body.frame().await.expect("a frame").expect("no error");
            received += frame.data_ref().map_or(0, Bytes::len);
        }
    })
    .await;
    assert!(first_part.is_ok(), "the start of the body was held back (got {received} bytes)");
    origin.release_stream(1);
    while let Some(frame) = body.frame().await {
        received += frame.expect("no error").data_ref().map_or(0, Bytes::len);
    }
    assert_eq!(received, 2 + (8 << 10) + (256 << 10), "the client got every byte");

    // Too large to store: the next call goes upstream again. A small streamed answer is stored.
    origin.release_stream(1);
    let again = get(sidecar.proxy_addr, &url, &[]).await;
    assert_eq!((cache_state(&again), &again.body[..2]), ("miss", &b"2:"[..]));
    origin.release_stream(2);
    let small = origin.url("/small");
    assert_eq!(cache_state(&get(sidecar.proxy_addr, &small, &[]).await), "miss");
    let hit = get(sidecar.proxy_addr, &small, &[]).await;
    assert_eq!((cache_state(&hit), hit.body.len(), &hit.body[..2]), ("hit", 2 + (8 << 10) + 1024, &b"3:"[..]));
    assert_reply(
        &get(sidecar.proxy_addr, &origin.url("/small"), &[]).await,
        &String::from_utf8_lossy(&hit.body),
        "hit",
    );
    sidecar.shutdown().await;
}

fn cache_state_of(headers: &http::HeaderMap) -> &str {
    headers.get("x-token-sidecar-cache").and_then(|v| v.to_str().ok()).unwrap_or("")
}
