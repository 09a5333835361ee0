//! The TLS counters on `/metrics`: `tls_leaf_certificates_minted_total` (once per host, then
//! the leaf cache serves it) and `tls_handshake_failures_total` (a client that garbles,
//! abandons or rejects the handshake inside an intercepted tunnel).
//!
//! The real binary: the metrics recorder is process-wide, and other tests of this binary
//! intercept tunnels too.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::support::ca::TestCa;
use crate::support::config::{config, rs256_token, TLS_SECTION};
use crate::support::metrics::scrape;
use crate::support::raw::{RawConn, DEADLINE};
use crate::support::sidecar::Running;
use crate::support::tunnel::{intercepted, open_tunnel, tls_over};
use crate::support::wait::wait_until;

const MINTED: &str = "tls_leaf_certificates_minted_total";
const FAILURES: &str = "tls_handshake_failures_total";

/// A sidecar intercepting every `*.leaf.test` on port 443.
async fn intercepting() -> Running {
    let rest =
        format!("{TLS_SECTION}{}\n[[routes]]\nhost = \"*.leaf.test\"\ntokens = [\"A\"]\n", rs256_token("A", "10m"));
    Running::start(&config("", &rest)).await
}

async fn counter(run: &Running, name: &str) -> f64 {
    scrape(run.admin()).await.count(name, &[])
}

/// A completed TLS handshake with the sidecar for `host`, trusting its CA.
async fn handshake(run: &Running, host: &str) -> TlsStream<TcpStream> {
    intercepted(run.proxy(), &format!("{host}:443"), &run.ca_pem(), host, &[b"http/1.1"]).await
}

fn leaf(tls: &TlsStream<TcpStream>) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_certificate_is_minted_once_per_host() {
    let run = intercepting().await;
    assert_eq!(counter(&run, MINTED).await, 0.0, "nothing intercepted yet");

    // The leaf is minted before the handshake completes, so the counter is read right after.
    let first = handshake(&run, "one.leaf.test").await;
    assert_eq!(counter(&run, MINTED).await, 1.0, "a new host mints one leaf");
    let again = handshake(&run, "one.leaf.test").await;
    assert_eq!(counter(&run, MINTED).await, 1.0, "a second connection to the same host is served from the cache");
    assert_eq!(leaf(&first), leaf(&again), "the cached leaf is presented again");

    let other = handshake(&run, "two.leaf.test").await;
    assert_eq!(counter(&run, MINTED).await, 2.0, "another host mints its own leaf");
    assert_ne!(leaf(&first), leaf(&other));
    assert_eq!(counter(&run, FAILURES).await, 0.0, "no handshake failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbled_abandoned_and_rejected_handshakes_in_a_tunnel_are_counted() {
    let run = intercepting().await;
    let mut expected = counter(&run, FAILURES).await;
    assert_eq!(expected, 0.0, "no tunnel yet");
    let counted = async |expected: f64| {
        let mut now = 0.0;
        let reached = wait_until(Duration::from_secs(5), async || {
            now = counter(&run, FAILURES).await;
            now >= expected
        })
        .await;
        assert!(reached && now == expected, "{FAILURES} is {now}, expected {expected}");
    };

    // Garbled: plain HTTP where the ClientHello should be. The sidecar gives up on the tunnel.
    let mut tunnel = open_tunnel(run.proxy(), "garbled.leaf.test:443").await.expect("tunnel");
    tunnel.write_all(b"GET / HTTP/1.1\r\nHost: garbled.leaf.test\r\n\r\n").await.expect("write");
    assert!(RawConn::new(tunnel).closed_within(DEADLINE).await.is_some(), "the sidecar kept a garbled tunnel open");
    expected += 1.0;
    counted(expected).await;

    // Abandoned: the start of a TLS record, then the client hangs up.
    let mut tunnel = open_tunnel(run.proxy(), "abandoned.leaf.test:443").await.expect("tunnel");
    tunnel.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.expect("write");
    drop(tunnel);
    expected += 1.0;
    counted(expected).await;

    // Rejected: a client that does not trust the sidecar's CA aborts after the ServerHello.
    let tunnel = open_tunnel(run.proxy(), "rejected.leaf.test:443").await.expect("tunnel");
    let stranger = TestCa::new();
    let refused = tls_over(tunnel, &stranger.pem, "rejected.leaf.test", &[b"http/1.1"]).await;
    assert!(refused.is_err(), "a client trusting another CA accepted the sidecar's certificate");
    expected += 1.0;
    counted(expected).await;

    // A handshake that completes is not a failure.
    drop(handshake(&run, "fine.leaf.test").await);
    assert_eq!(counter(&run, FAILURES).await, expected);
    // Only the rejected and the fine hosts got as far as a certificate.
    assert_eq!(counter(&run, MINTED).await, 2.0);
}
